"""hold_readmit: an over-limit target is held, a lowered one re-admitted,
each within two intervals."""

from __future__ import annotations

import os
import time
from typing import Any

from ..guest import MiB, page_align
from ..guestside import driver_bound, is_held, pin_memory, process_alive, read_state, state_hold, wait_state
from .base import TOL_MS, Context, Scenario, fmt_mib, fmt_ms, ms, verdict
from .daemon import log_lines, start_and_wait_daemon


def run(ctx: Context) -> dict:
    """Over-limit target -> released within two intervals; target lowered below
    the re-admit threshold (limit x (1 - margin 0.05)) -> re-admitted within
    two intervals and the balloon reaches the target.

    release_ms: QMP request -> the daemon's hold (state.json since_boottime).
    readmit_ms: QMP request -> the first sample with the balloon growing again
    (the driver re-inflates as soon as it is bound). Both <= 2 x interval + TOL_MS.
    """
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    with ctx.guest("hold_readmit", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(pin_memory(g, 512))
        pid, st = start_and_wait_daemon(g, interval=interval)
        res["interval_ms"] = st.get("interval_ms")
        limit = st["limit_bytes"]
        res["limit_bytes"] = limit
        off, rtt = g.clock_offset()
        res["clock_offset_rtt_ms"] = ms(rtt)
        over = page_align(limit + 64 * MiB)
        below = page_align(limit * (1 - 0.05) - 32 * MiB)
        res.update(over_target_bytes=over, below_target_bytes=below)
        with g.sampler(0.05) as s:
            t0 = g.set_balloon_size(over)
            st = wait_state(g, is_held, timeout=30)
            t_hold = float(state_hold(st)["since_boottime"]) + off
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=30)
            res["bound_while_held"] = driver_bound(g)
            time.sleep(1.0)
            t1 = g.set_balloon_size(below)
            wait_state(g, lambda st: not is_held(st), timeout=30)
            took, _ = g.wait_actual(lambda a: a == g.ram_bytes - below, timeout=60)
            res["readmit_full_ms"] = ms(g.now() - t1)
            time.sleep(0.2)
            t_start = s.first_time(lambda b: b > 0, since=t1)
            res["bound_after_readmit"] = driver_bound(g)
            time.sleep(2 * interval + 0.3)
            res["still_readmitted"] = not is_held(read_state(g) or {})
        res["daemon_alive"] = process_alive(g, pid)
        res["daemon_log_tail"] = log_lines(g)[-8:]
        s.write_csv(os.path.join(g.logdir, "balloon-samples.csv"))
    res["release_ms"] = ms(t_hold - t0)
    t_zero = s.first_time(lambda b: b == 0, since=t_hold)
    res["release_complete_ms"] = ms(t_zero - t0) if t_zero is not None else None
    res["readmit_ms"] = ms(t_start - t1) if t_start is not None else None
    limit_ms = 2 * (res["interval_ms"] or 0) + TOL_MS
    problems = []
    if res["release_ms"] > limit_ms:
        problems.append(f"release took {res['release_ms']} ms > 2 intervals + {TOL_MS} ms")
    if res["readmit_ms"] is None or res["readmit_ms"] > limit_ms:
        problems.append(f"re-admit took {res['readmit_ms']} ms > 2 intervals + {TOL_MS} ms")
    if res["bound_while_held"]:
        problems.append("driver still bound while held")
    if not res["bound_after_readmit"] or not res["still_readmitted"]:
        problems.append("not (stably) re-admitted")
    if not res["daemon_alive"]:
        problems.append("the daemon died")
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    return [f"release {fmt_ms(r.get('release_ms'))} (balloon at 0 after {fmt_ms(r.get('release_complete_ms'))}), "
            f"readmit {fmt_ms(r.get('readmit_ms'))} (target reached after {fmt_ms(r.get('readmit_full_ms'))}), "
            f"interval {fmt_ms(r.get('interval_ms'))}, limit {fmt_mib(r.get('limit_bytes'))}"]


SCENARIO = Scenario("hold_readmit", run, describe, result_keys=["release_ms", "readmit_ms"])
