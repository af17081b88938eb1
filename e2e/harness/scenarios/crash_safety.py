"""crash_safety: a SIGKILLed daemon's successor resumes the hold without a
second unbind."""

from __future__ import annotations

import re
import time
from typing import Any

from ..guest import MiB, page_align
from ..guestside import driver_bound, is_held, pin_memory, process_alive, read_state, state_hold, wait_state
from .base import Context, Scenario, fmt_mib, verdict
from .daemon import log_lines, start_and_wait_daemon


def run(ctx: Context) -> dict:
    """SIGKILL the daemon while it holds; restart; it resumes the hold without a
    second unbind (same `releases` count and `since_boottime`, no release or
    unbind in the new instance's log, the balloon stays at 0) and re-admits
    when the target drops below the threshold."""
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    with ctx.guest("crash_safety", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(pin_memory(g, 512))
        pid1, st = start_and_wait_daemon(g, interval=interval)
        limit = st["limit_bytes"]
        over = page_align(limit + 64 * MiB)
        below = page_align(limit * (1 - 0.05) - 32 * MiB)
        with g.sampler(0.05) as s:
            g.set_balloon_size(over)
            st1 = wait_state(g, is_held, timeout=30)
            h1 = state_hold(st1) or {}
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=30)
            g.check(f"kill -9 {pid1}")
            time.sleep(0.5)
            res["first_dead"] = not process_alive(g, pid1)
            res["bound_after_kill"] = driver_bound(g)
            n_before = len(log_lines(g))
            t_restart = g.now()
            pid2, st2 = start_and_wait_daemon(g, interval=interval)
            time.sleep(5 * interval + 0.5)
            st2 = read_state(g) or {}
            h2 = state_hold(st2) or {}
            res["bound_after_restart"] = driver_bound(g)
            new_lines = log_lines(g)[n_before:]
            res["restart_log"] = new_lines[-10:]
            res["max_balloon_after_restart"] = s.max_balloon(since=t_restart)
            g.set_balloon_size(below)
            wait_state(g, lambda st: not is_held(st), timeout=30)
            g.wait_actual(lambda a: a == g.ram_bytes - below, timeout=60)
            res["bound_after_readmit"] = driver_bound(g)
        res["second_alive"] = process_alive(g, pid2)
    res.update(releases_before=h1.get("releases"), releases_after=h2.get("releases"),
               since_before=h1.get("since_boottime"), since_after=h2.get("since_boottime"),
               held_after_restart=h2.get("held"))
    acted = [ln for ln in new_lines if re.search(r"\brelease virtio|action=unbind|action=bind|\breadmit virtio", ln)]
    problems = []
    if not res["first_dead"]:
        problems.append("SIGKILL did not end the daemon")
    if res["bound_after_kill"] or res["bound_after_restart"]:
        problems.append("driver bound again after the kill/restart")
    if not h2.get("held"):
        problems.append("the new instance did not resume the hold")
    if h1.get("releases") != h2.get("releases") or h1.get("since_boottime") != h2.get("since_boottime"):
        problems.append(f"hold record changed across the restart (releases {h1.get('releases')} -> "
                        f"{h2.get('releases')}, since {h1.get('since_boottime')} -> {h2.get('since_boottime')})")
    if acted:
        problems.append(f"the new instance acted before re-admit: {acted[:2]}")
    if res["max_balloon_after_restart"]:
        problems.append(f"balloon re-inflated to {res['max_balloon_after_restart']} B across the restart")
    if not res["bound_after_readmit"]:
        problems.append("not re-admitted after the target dropped")
    if not res["second_alive"]:
        problems.append("the restarted daemon died")
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if "releases_after" not in r:
        return []
    return [f"hold resumed={r.get('held_after_restart')}, releases {r.get('releases_before')} -> "
            f"{r.get('releases_after')}, balloon after restart {fmt_mib(r.get('max_balloon_after_restart'))}, "
            f"re-admitted={r.get('bound_after_readmit')}"]


SCENARIO = Scenario("crash_safety", run, describe)
