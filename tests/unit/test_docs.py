"""The README's configuration table cannot drift from the settings dataclasses."""

import re
from dataclasses import fields
from pathlib import Path

from genqueue.producer.settings import Settings
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
    skip = {"settings", "api_key"}
    wanted = {
        f"GENQUEUE_{f.name.upper()}"
        for cls in (Settings, WorkerConfig)
        for f in fields(cls)
        if f.name not in skip
    }
    assert wanted - expanded == set()
