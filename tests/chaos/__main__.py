"""``python -m tests.chaos``: the full chaos run (``make chaos``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from tests.chaos.harness import (
    LATE_ANSWER_LEASE_S,
    ChaosOptions,
    late_answer_faults,
    run_chaos,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", type=int, default=1000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--time-scale", type=float, default=0.05)
    p.add_argument("--faults", default="chaos")
    p.add_argument("--kill-every-s", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--failovers", type=int, default=3, help="primary SIGKILLs in the Sentinel scenario"
    )
    p.add_argument("--report", type=Path, default=Path("chaos-report.json"))
    p.add_argument("--logs", type=Path, default=None, help="keep process logs here")
    p.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    args = p.parse_args()
    reports = {}
    # (name, upstream honours idempotency keys, appendfsync, Sentinel failovers, the stalled
    # workers' lease or None); the first is the main scenario: the upstream as it really is
    # (no idempotency).
    scenarios = [
        ("idempotency_ignored", False, "always", 0, None),
        ("idempotency_honoured", True, "always", 0, None),
        ("aof_everysec", True, "everysec", 0, None),
        ("sentinel_failovers", False, "everysec", args.failovers, None),
        # Creates answered after a second attempt went out (superseded jobs), against the
        # upstream as it is (no idempotency).
        ("late_answers", False, "always", 0, LATE_ANSWER_LEASE_S),
    ]
    if args.only:
        scenarios = [s for s in scenarios if s[0] in args.only]
    for key, honour, fsync, failovers, stalled_lease_s in scenarios:
        opts = ChaosOptions(
            videos=args.videos,
            workers=args.workers,
            time_scale=args.time_scale,
            faults=args.faults if stalled_lease_s is None else late_answer_faults(args.faults),
            honour_idempotency=honour,
            appendfsync=fsync,
            kill_every_s=args.kill_every_s,
            failovers=failovers,
            seed=args.seed,
            log_dir=args.logs / key if args.logs else None,
            stalled_lease_s=stalled_lease_s,
        )
        report = run_chaos(opts)
        reports[key] = report
        print(key, json.dumps(asdict(report)), flush=True)
    failures = {k: r.violations() for k, r in reports.items() if r.violations()}
    combined = {k: asdict(r) for k, r in reports.items()}
    combined["violations"] = failures
    args.report.write_text(json.dumps(combined, indent=2) + "\n")
    print(f"wrote {args.report}")
    if failures:
        print(f"FAILED: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
