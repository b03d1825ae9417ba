"""Submits a timed plan of requests for the admission bench (``bench/admission.py``).

Run as a script (``python bench/admission_submitter.py PLAN OUT``), never as ``-m bench...``:
it must import whichever ``genqueue`` its side puts first on ``PYTHONPATH`` (the first come,
first served baseline is an older commit), so it uses only that package's public producer API
and the standard library. The plan is JSON ``{"model", "entries": [{"at", "tenant", "count",
"prefix"}]}`` with ``at`` in seconds after the start. Once imported it writes ``OUT.ready``
and waits for ``OUT.start`` (the start as a Unix time: its own start-up never delays the plan);
each line written to OUT is ``{"tenant", "id"}``, and a last line ``{"done": n, "genqueue":
<its path>}`` says it finished.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import genqueue
from genqueue.producer import AsyncClient, Settings

#: Submits in flight at once for a batch (a backlog lands as fast as one producer writes it).
CONCURRENCY = 64


async def run(plan: dict[str, Any], out: Path, t0: float) -> int:
    client = AsyncClient(Settings.from_env())
    done = 0
    try:
        with out.open("a") as f:
            for entry in sorted(plan["entries"], key=lambda e: float(e["at"])):
                delay = t0 + float(entry["at"]) - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tenant, count, prefix = entry["tenant"], int(entry["count"]), entry["prefix"]
                sem = asyncio.Semaphore(CONCURRENCY)

                async def one(
                    i: int, tenant: str = tenant, prefix: str = prefix, sem: Any = sem
                ) -> str:
                    async with sem:
                        req = {"model": plan["model"], "prompt": f"{prefix} {i}: a paper boat"}
                        rid: str = await client.submit(req, tenant=tenant)
                        return rid

                ids = await asyncio.gather(*(one(i) for i in range(count)))
                f.writelines(json.dumps({"tenant": tenant, "id": rid}) + "\n" for rid in ids)
                f.flush()
                done += count
            f.write(json.dumps({"done": done, "genqueue": str(Path(genqueue.__file__))}) + "\n")
    finally:
        await client.aclose()
    return done


def wait_for_start(out: Path) -> float:
    """Say the imports are done, then wait for the harness to give the start."""
    Path(f"{out}.ready").write_text("1")
    start = Path(f"{out}.start")
    while not start.exists():
        time.sleep(0.005)
    return float(start.read_text())


def main(argv: list[str]) -> int:
    plan, out = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    asyncio.run(run(plan, out, wait_for_start(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
