"""The simulator as the benchmark runs it: ``python -m bench.simserver --port P ...``.

A separate process (its CPU is not the workers'), configured with the workload's duration
distribution, which the ``genqueue simulator`` command does not expose.
"""

from __future__ import annotations

import argparse

from genqueue.simulator import SimConfig, serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.simserver")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--time-scale", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--median-s", type=float, required=True)
    p.add_argument("--sigma", type=float, required=True)
    p.add_argument("--failure-share", type=float, default=0.0)
    p.add_argument("--queue-median-s", type=float, default=5.0)
    p.add_argument("--queue-sigma", type=float, default=0.5)
    p.add_argument("--queue-shift-at-s", type=float, default=None)
    p.add_argument("--queue-shift-factor", type=float, default=1.0)
    p.add_argument("--no-report-queued", action="store_true")
    a = p.parse_args(argv)
    serve(
        SimConfig(
            seed=a.seed,
            time_scale=a.time_scale,
            failure_share=a.failure_share,
            duration_median_s=a.median_s,
            duration_sigma=a.sigma,
            queue_median_s=a.queue_median_s,
            queue_sigma=a.queue_sigma,
            queue_shift_at_s=a.queue_shift_at_s,
            queue_shift_factor=a.queue_shift_factor,
            report_queued=not a.no_report_queued,
        ),
        port=a.port,
    )


if __name__ == "__main__":
    main()
