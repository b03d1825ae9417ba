"""The README's configuration table cannot drift from the settings dataclasses."""

import re
from pathlib import Path

from genqueue.producer.envconfig import setting_fields
from genqueue.worker.config import WorkerConfig

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    """Each GENQUEUE_* variable a setting reads appears in the README."""
    documented = set(re.findall(r"GENQUEUE_[A-Z0-9_]+", README))
    expanded = set(documented)
    for name in documented:  # "GENQUEUE_POLL_FLOOR_S / _POLL_CAP_S" rows
        m = re.search(re.escape(name) + r"` / `(_[A-Z0-9_]+)`", README)
        if m:
            expanded.add("GENQUEUE" + m.group(1))
    wanted = {s.env for s in setting_fields(WorkerConfig) if s.env.startswith("GENQUEUE_")}
    assert wanted - expanded == set()
