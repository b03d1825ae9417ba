"""The bench's ``budget`` part at smoke size: budgets hold spend within the budget (a
conservative estimate) or the documented bound (an estimate below the price), hold the rest
with reason ``budget``, and leave a tenant without a budget alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(180)
def test_budget_part_smoke(tmp_path: Path) -> None:
    """acme ends within its budget, hooli within budget + its excess over estimates, the rest
    of both held for budget; globex buys everything it submitted."""
    out, md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--smoke", "--only", "budget"),
            *("--out", str(out), "--md", str(md), "--log-dir", str(tmp_path / "logs")),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    b = json.loads(out.read_text())["budget"]["tenants"]
    acme, hooli, globex = b["acme"], b["hooli"], b["globex"]
    assert acme["within_budget"] and acme["spent_usd"] == "1.960000"  # 4 x $0.49 <= $2
    assert hooli["within_bound"] and not hooli["within_budget"]
    # 8 reserved at $0.25 fill $2.00; each then cost $0.40: exactly the bound.
    assert hooli["spent_usd"] == hooli["bound_usd"] == "3.200000"
    for row in (acme, hooli):
        assert row["spent_usd"] == row["spent_by_records_usd"] and row["reserved_usd"] == "0.000000"
        assert row["held"] == row["statuses"]["pending"] > 0
        assert row["held_reason_derived"] == "budget"
    assert globex["statuses"] == {"completed": 33} and globex["held"] == 0
    assert "## Spend budgets" in md.read_text()
