"""Submit a batch with the async client, wait for all of it at once, print what it cost.

    python examples/async_batch.py -n 5 --prompt "a paper boat on a canal"

Settings come from ``GENQUEUE_*`` (``GENQUEUE_REDIS_URL``, ``GENQUEUE_KEY_PREFIX``); a
``genqueue worker`` must be running against the same Redis. All waits share one pub/sub
subscription, so a thousand concurrent ``wait()`` calls cost one connection, not a thousand
polling loops. Each request gets an idempotency key derived from ``--batch-id``: run the
script twice with the same batch id and the second run buys nothing, it waits for (or reports)
the same generations. Exits 0 when every generation completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from decimal import Decimal

from genqueue.producer import AsyncClient, RequestView, WaitTimeout

MODEL = "minimax/video-01-director"


async def run_batch(
    gq: AsyncClient,
    prompts: Sequence[str],
    *,
    model: str = MODEL,
    batch_id: str,
    timeout_s: float = 900.0,
) -> list[RequestView | WaitTimeout]:
    """Submit one generation per prompt, then wait for all of them concurrently."""
    ids = [
        await gq.submit(
            {"model": model, "prompt": prompt, "metadata": {"batch": batch_id}},
            idempotency_key=f"{batch_id}-{i}",
        )
        for i, prompt in enumerate(prompts)
    ]
    results = await asyncio.gather(
        *(gq.wait(rid, timeout_s=timeout_s) for rid in ids), return_exceptions=True
    )
    out: list[RequestView | WaitTimeout] = []
    for r in results:
        if isinstance(r, WaitTimeout | RequestView):
            out.append(r)
        else:
            raise r  # anything else (Redis down, ...) is not a result
    return out


def report(results: Sequence[RequestView | WaitTimeout]) -> tuple[str, bool]:
    """A printable table and whether every generation completed."""
    lines = [f"{'id':36}  {'status':10}  {'cost':>10}  {'seconds':>7}  video"]
    total = Decimal(0)
    ok = True
    for r in results:
        if isinstance(r, WaitTimeout):
            lines.append(
                f"{r.request_id:36}  {'timeout':10}  {'-':>10}  {'-':>7}  (still {r.status})"
            )
            ok = False
            continue
        cost = r.cost_usd or Decimal(0)
        total += cost
        ok = ok and r.status == "completed"
        secs = "-" if r.total_duration_s is None else f"{r.total_duration_s:.1f}"
        lines.append(
            f"{r.id:36}  {r.status:10}  {'$' + str(cost):>10}  {secs:>7}  {r.video_url or r.error}"
        )
    lines.append(f"total cost: ${total}")
    return "\n".join(lines), ok


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=3, help="how many generations (default 3)")
    parser.add_argument("--prompt", default="a paper boat on a canal")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--batch-id", default=None, help="idempotency scope (default: random)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each")
    args = parser.parse_args(argv)
    batch_id = args.batch_id or f"batch-{uuid.uuid4().hex[:12]}"
    prompts = [f"{args.prompt} (take {i + 1})" for i in range(args.n)]
    async with AsyncClient() as gq:
        results = await run_batch(
            gq, prompts, model=args.model, batch_id=batch_id, timeout_s=args.timeout
        )
    table, ok = report(results)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
