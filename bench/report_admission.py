# ruff: noqa: RUF001
"""RESULTS.md section and target rows of issue 25: admission, first come, first served (the
code before admission) against fair admission, without and with the reserve for tenants
below their share (``bench/admission.py``)."""

from __future__ import annotations

from typing import Any

from bench.admission import (
    BEHIND_S,
    COST_SAME_FACTOR,
    COST_SLACK,
    SATURATED_CPU_S_PER_S,
    SHARE_TOLERANCE_PCT,
    UTILISATION_TARGET,
)


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def _wait(p: dict[str, Any]) -> str:
    return ("≥ " if p["lower_bound"] else "") + _f(p["s"])


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "NOT met")


def _util(u: dict[str, Any]) -> str:
    """Mean share of the cap held (the target) | share of samples with every slot held."""
    return f"{_f(u.get('slots'), 3)} | {_f(u['fraction'], 3)}"


#: The side whose figures stand for this tree in the targets: the default (the reserve).
def _headline(summary: dict[str, Any]) -> str | None:
    return next((k for k in ("reserve", "fair") if k in summary), None)


def admission_section(results: dict[str, Any]) -> list[str]:
    adm = results.get("admission")
    if not adm:
        return []
    cfg, sides = adm["config"], adm["sides"]
    a, b, c = adm["tenants"]
    labels = {k: f"{v['label']} (`{v['git']}`)" for k, v in sides.items()}
    out = ["## Admission: first come, first served against fair shares", ""]
    if adm.get("smoke"):
        out += ["> **Smoke run** (toy size): structure only, the figures mean nothing.", ""]
    meta = adm.get("meta") or {}
    out += [
        f"Run: `{meta.get('command', '?')}` at git `{meta.get('git', '?')}`, "
        f"{meta.get('when', '?')}, {meta.get('wall_s', '?')} s (load average at start "
        f"{meta.get('load_avg_at_start', '?')}).",
        "",
        f"One invocation, {len(sides)} sides on the same simulator, "
        f"{cfg['workers']} worker processes and a global cap of {cfg['cap']} "
        f"(`GENQUEUE_MAX_INFLIGHT`): *first come, first served* is the code before admission "
        f"(`{sides.get('fcfs', {}).get('git', cfg['fcfs_commit'])}`, installed from `git "
        "archive`; a request meeting the full cap re-arms its own timer every `cap_wait_s`, "
        "2 s); *fair* is this tree (`bench/admission.py`), with no reserve "
        "(`GENQUEUE_ADMISSION_RESERVE_SLOTS=0`: strictly work-conserving) and with the "
        f"default reserve of {cfg.get('reserve_slots', 1)} slot kept for tenants below their "
        "weighted share (docs/architecture.md rule 20). Each side's workers, tenant set-up "
        "and submitter run its own code. Videos: generation lognormal (median "
        f"{cfg['median_s']:g} s, σ 0.2) after the upstream's queue wait (median 5 s), no upstream "
        "failures (`bench/simserver.py`, as every part); time "
        f"scale {cfg['time_scale']:g}; every run is measured for {cfg['window_s']:g} simulated "
        "s; times are simulated seconds.",
        "",
        "The time scale and the baseline: a waiting request of the baseline asks again every "
        f"`cap_wait_s` (2 simulated s = {2 * cfg['time_scale']:g} wall s here), so per wall "
        f"second its spin costs {1 / cfg['time_scale']:g}× what it costs unscaled, and its "
        "contention runs share the machine with that spin (see its worker CPU-s/s); the "
        "backlog cost below is measured unscaled (time scale 1).",
        "",
        "**Slot turnover** = the mean hold time of the run's finished videos (upstream create "
        "to the end seen) ÷ the cap: the mean time between slot frees with the cap full.",
        "",
    ]
    # Shares
    out += [
        "### Shares under contention",
        "",
        f"Three tenants each submit {cfg['backlog_per_tenant']:,} requests at once, one batch "
        f"after the other ({a}, {b}, {c}). Share: a tenant's upstream creates while all three "
        "have requests waiting, over all creates then (target: each within "
        f"±{SHARE_TOLERANCE_PCT:g} % of its weight's share, relative). The baseline has no "
        "weights: its one run is read against both.",
        "",
        "| weights | side | creates (window s) | "
        + " | ".join(f"{t} share (target)" for t in adm["tenants"])
        + " | worst deviation | slots held | all held | |",
        "| --- | --- | ---: | " + "---: | " * len(adm["tenants"]) + "---: | ---: | ---: | --- |",
    ]
    for wname in ("1:1:1", "3:1:1"):
        for side in sides:
            fig = adm["shares"].get(wname, {}).get(side)
            if fig is None and side == "fcfs":
                fig = adm["shares"].get("1:1:1", {}).get(side)
            if not fig or wname not in fig["by_weights"]:
                continue
            sh = fig["by_weights"][wname]
            cells = [
                f"{_f((r['share'] or 0) * 100)} % ({_f(r['target'] * 100)} %)"
                for r in sh["tenants"].values()
            ]
            dev = sh["max_abs_deviation_pct"]
            out.append(
                f"| {wname} | {labels[side]} | {sh['creates']} ({_f(sh['window_s'], 0)}) | "
                + " | ".join(cells)
                + f" | {_f(dev)} % | {_util(fig['utilisation'])} | "
                f"**{_verdict(dev is not None and dev <= SHARE_TOLERANCE_PCT)}** |"
            )
    out.append("")
    # Latency
    out += [
        "### A light tenant's admission wait",
        "",
        f"{a} submits {cfg['heavy']:,} at once; {b} and {c} each submit one request every "
        f"{cfg['light_every_s']:g} s (staggered, from {cfg['light_start_s']:g} s to "
        f"{cfg['window_s'] - cfg['light_tail_s']:g} s: below their fair share); *alone*: the "
        f"same {b} and {c} without {a}. Admission wait = created upstream − submitted (the "
        "record's `submitted_at_ms − enqueued_at_ms`); a request not created by the run's end "
        "counts with its wait so far, and a percentile that reaches one is a lower bound (≥). "
        "Target: p95 with the heavy tenant ≤ p95 alone + one slot turnover.",
        "",
        f"| side | {b}+{c} p50 (s) | p95 (s) | not created | alone p50 / p95 (s) | "
        "excess p95 (s) | slot turnover (s) | slots held | all held | worker CPU-s/s | |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for side, runs in adm["latency"].items():
        s = adm["summary"].get(side, {})
        with_a, alone = runs["latency"], runs["alone"]
        lt, al = with_a["light"], alone["light"]
        out.append(
            f"| {labels[side]} | {_wait(lt['p50'])} | {_wait(lt['p95'])} | "
            f"{lt['not_created']} of {lt['requests']} | {_wait(al['p50'])} / {_wait(al['p95'])} | "
            f"{('≥ ' if s.get('light_p95_lower_bound') else '') + _f(s.get('light_p95_excess_s'))}"
            f" | {_f(with_a['hold']['slot_turnover_s'], 2)} | "
            f"{_util(with_a['utilisation'])} | {_f(with_a['worker_cpu_s_per_s'], 2)} "
            f"| **{_verdict(s.get('light_p95_met'))}** |"
        )
    nxt_rows = [
        (side, runs["latency"]["light_next_slot"])
        for side, runs in adm["latency"].items()
        if runs["latency"].get("light_next_slot")
    ]
    if nxt_rows:
        out += [
            "",
            f"Did {b} and {c} get the first slots that freed after they arrived? Per created "
            "request: the creates of other tenants between its arrival and its own create "
            "(0 = nobody went before it), and the wait until the first create of anyone after "
            "its arrival: the wait for a slot to free, which no admission that keeps every slot "
            "busy can shorten while the cap is full (its mean is about one slot turnover). A "
            "create counted ahead may have been admitted just before the request arrived (the "
            "records keep when a create ended, not when its slot was given).",
            "",
            "| side | took the first free slot | others ahead p95 (max) | first create after "
            "arrival p50 / p95 (s) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for side, nxt in nxt_rows:
            share = nxt["first_free_share"]
            if not nxt["requests"]:
                out.append(f"| {labels[side]} | none created | – | – |")
                continue
            out.append(
                f"| {labels[side]} | {_f(share * 100 if share is not None else None)} % of "
                f"{nxt['requests']} | {_f(nxt['ahead_p95'])} ({_f(nxt['ahead_max'])}) | "
                f"{_f(nxt['first_create_wait_p50_s'], 2)} / "
                f"{_f(nxt['first_create_wait_p95_s'], 2)} |"
            )
    out += [
        "",
        "Utilisation, over the samples (every simulated second) with someone waiting, from "
        "the first at the cap on: *slots held* = the mean share of the cap held (`HOLDING_SLOT` "
        f"in the counts hash; target ≥ {UTILISATION_TARGET:.0%}: one slot in 50 may stay "
        "free), *all held* = the share of samples with every slot held (the reserve keeps one "
        "free by design while a tenant above its share waits and those below have nothing "
        "waiting). Worker CPU-s/s: both workers' CPU over the run's wall time.",
        "",
    ]
    # Cost
    sizes = cfg["cost_sizes"]
    out += [
        "### Backlog cost",
        "",
        f"At time scale 1: the cap filled with {cfg['cap']} videos that do not end during the "
        f"run, then {sizes[0]:,} and later {sizes[-1]:,} requests waiting; after "
        f"{cfg['cost_settle_s']:g} s, {cfg['cost_window_s']:g} s measured: Redis script calls "
        "(`INFO commandstats` eval/evalsha/fcall), every command (those a script runs counted "
        "as Redis counts them), worker CPU and Redis' main-thread CPU, per second; at the "
        "window's end, the timers past due and the oldest one's age (the status checks of "
        f"paid videos wait behind them). Target: the same at {sizes[-1]:,} as at "
        f"{sizes[0]:,}: script calls and worker CPU within ×{COST_SAME_FACTOR:g} (or "
        f"{COST_SLACK['script_calls_per_s']:g} calls/s, {COST_SLACK['worker_cpu_s_per_s']:g} "
        "CPU-s/s, near zero), and nothing "
        f"saturated (Redis or a worker at ≥ {SATURATED_CPU_S_PER_S:g} CPU-s/s, or timers more "
        f"than {BEHIND_S:g} s late at the window's end: a flat rate there only means the work "
        "queues up).",
        "",
        "| side | waiting | script calls/s | commands/s | worker CPU-s/s | Redis CPU-s/s | "
        "timers due (oldest, s) | largest commands |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for side, cost in adm["cost"].items():
        for st in cost["steps"]:
            top = ", ".join(f"{k} {v:,}" for k, v in list(st["by_command"].items())[:5])
            out.append(
                f"| {labels[side]} | {st['waiting']:,} | {_f(st['script_calls_per_s'])} | "
                f"{_f(st['commands_per_s'])} | {_f(st['worker_cpu_s_per_s'], 3)} | "
                f"{_f(st.get('redis_cpu_s_per_s'), 3)} | {_f(st.get('timers_due'))} "
                f"({_f(st.get('oldest_due_age_s'), 2)}) | {top} |"
            )
    out.append("")
    return out


def issue25_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    adm = results.get("admission")
    if not adm or adm.get("smoke"):
        return []
    rows: list[tuple[str, str, str]] = []
    head = _headline(adm["summary"])
    if head is None:
        return rows
    fair = adm["summary"][head]
    plain = adm["summary"].get("fair") if head != "fair" else None
    base = adm["summary"].get("fcfs") or {}
    side = adm["sides"][head]["label"]
    for wname in ("1:1:1", "3:1:1"):
        key = f"shares_{wname}_max_deviation_pct"
        if key in fair:
            rows.append(
                (
                    f"admission: shares at weights {wname} within ±{SHARE_TOLERANCE_PCT:g} % "
                    "of the weights",
                    f"{side}: worst {_f(fair[key])} % (first come, first served: "
                    f"{_f(base.get(key))} %)",
                    _verdict(fair.get(f"shares_{wname}_met")),
                )
            )
    if "light_p95_s" in fair:
        rows.append(
            (
                "admission: light tenants' wait p95 within one slot turnover of alone",
                f"{side}: {_f(fair['light_p95_s'])} s vs {_f(fair['light_p95_alone_s'])} s "
                f"alone, turnover {_f(fair['slot_turnover_s'], 2)} s ("
                + (f"no reserve: {_f(plain.get('light_p95_s'))} s; " if plain else "")
                + "first come, first served: "
                f"{'≥ ' if base.get('light_p95_lower_bound') else ''}"
                f"{_f(base.get('light_p95_s'))} s)",
                _verdict(fair.get("light_p95_met")),
            )
        )
    if "utilisation_min" in fair:
        rows.append(
            (
                f"admission: slots held while anyone waits ≥ {UTILISATION_TARGET:.0%}",
                f"{side}: {_f(fair['utilisation_min'] * 100, 2)} % (every slot held in "
                f"{_f((fair.get('utilisation_all_held_min') or 0) * 100, 2)} % of the samples"
                + (
                    f"; no reserve: {_f((plain.get('utilisation_min') or 0) * 100, 2)} %"
                    if plain
                    else ""
                )
                + "; first come, first served: "
                + f"{_f((base.get('utilisation_min') or 0) * 100, 2)} %)",
                _verdict(fair.get("utilisation_met")),
            )
        )
    if "cost_met" in fair:
        rows.append(
            (
                "admission: backlog cost the same at the larger backlog",
                f"{side}: script calls ×{_f(fair['cost_script_calls_per_s_ratio'], 2)}, worker CPU "
                f"×{_f(fair['cost_worker_cpu_s_per_s_ratio'], 2)} (first come, first served: "
                f"×{_f(base.get('cost_script_calls_per_s_ratio'), 2)}, "
                f"×{_f(base.get('cost_worker_cpu_s_per_s_ratio'), 2)}"
                + (", saturated or falling behind" if base.get("cost_saturated") else "")
                + f"; timers due {base.get('cost_timers_due')})",
                _verdict(fair.get("cost_met")),
            )
        )
    return rows
