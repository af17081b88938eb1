"""report_mode: `balloonctl run --mode report` acts on nothing and logs what
it would do."""

from __future__ import annotations

import re
import time
from typing import Any

from ..guest import MiB, page_align
from ..guestside import driver_bound, pin_memory, process_alive
from .base import Context, Scenario, fmt_mib, verdict
from .daemon import log_lines, start_and_wait_daemon


def run(ctx: Context) -> dict:
    """`balloonctl run --mode report` acts on nothing and logs what it would do:
    with an over-limit target the driver stays bound, the balloon reaches the
    host's target, and the log says `would release`."""
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    with ctx.guest("report_mode", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(pin_memory(g, 512))
        pid, st = start_and_wait_daemon(g, interval=interval, mode="report", probe_target=True)
        res["mode"] = st.get("mode")
        limit = st["limit_bytes"]
        over = page_align(limit + 64 * MiB)
        n0 = len(log_lines(g))
        g.set_balloon_size(over)
        g.wait_actual(lambda a: a == g.ram_bytes - over, timeout=60)
        time.sleep(5 * interval + 0.5)
        res["balloon_bytes"] = g.balloon_bytes()
        res["bound"] = driver_bound(g)
        lines = log_lines(g)[n0:]
        res["would_lines"] = [ln for ln in lines if "would " in ln][:3]
        res["acted_lines"] = [ln for ln in lines if re.search(r"notice balloonctl: .*\] (release|readmit) ", ln)][:3]
        res["daemon_alive"] = process_alive(g, pid)
        g.balloon(g.ram_bytes)
    problems = []
    if res["mode"] != "report":
        problems.append(f"state says mode={res['mode']}")
    if not res["bound"] or res["balloon_bytes"] != over:
        problems.append(f"report mode changed something: bound={res['bound']}, balloon={res['balloon_bytes']} (target {over})")
    if not any("would release" in ln for ln in res["would_lines"]):
        problems.append("no 'would release' in the log")
    if res["acted_lines"]:
        problems.append(f"report mode logged an action: {res['acted_lines'][0]}")
    if not res["daemon_alive"]:
        problems.append("the daemon died")
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if "bound" not in r:
        return []
    return [f"bound={r.get('bound')}, balloon {fmt_mib(r.get('balloon_bytes'))}, "
            f"logged: {(r.get('would_lines') or ['-'])[0].split('] ')[-1]}"]


SCENARIO = Scenario("report_mode", run, describe)
