"""hotplug: the balloon unplugged and plugged back under a running daemon."""

from __future__ import annotations

import re
import time
from typing import Any

from ..errors import GuestTimeout
from ..guest import Guest, MiB, page_align
from ..guestside import balloon_virtio_name, driver_bound, is_held, pin_memory, process_alive, read_state, state_hold, wait_state
from .base import Context, Scenario, verdict
from .daemon import log_lines, start_and_wait_daemon


def _unplug(g: Guest) -> dict[str, Any]:
    r: dict[str, Any] = {"device_del_s": round(g.device_del("balloon0", timeout=60), 2)}
    t_del = g.now()
    deadline = time.monotonic() + 30
    while balloon_virtio_name(g) is not None and time.monotonic() < deadline:
        time.sleep(0.3)
    r["guest_device_gone"] = balloon_virtio_name(g) is None
    r["guest_gone_after_s"] = round(g.now() - t_del, 2)
    return r


def _replug(g: Guest) -> dict[str, Any]:
    t_add = g.device_add()
    deadline = time.monotonic() + 60
    while not driver_bound(g) and time.monotonic() < deadline:
        time.sleep(0.3)
    return {"guest_bound_after_add": driver_bound(g), "bound_after_add_s": round(g.now() - t_add, 2),
            "new_virtio": balloon_virtio_name(g)}


def run(ctx: Context) -> dict:
    """QMP device_del of the balloon and device_add back: the daemon survives,
    logs both (udev remove / add events), and governs the new device (an
    over-limit target on it is held)."""
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    size = 128 * MiB
    with ctx.guest("hotplug", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(pin_memory(g, 512))
        pid, st = start_and_wait_daemon(g, interval=interval)
        g.set_balloon_size(size)
        g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
        n0 = len(log_lines(g))
        res.update(_unplug(g))
        time.sleep(5 * interval + 0.5)
        res["alive_after_del"] = process_alive(g, pid)
        n1 = len(log_lines(g))
        res["log_after_del"] = log_lines(g)[n0:n1][-6:]
        res.update(_replug(g))
        time.sleep(5 * interval + 0.5)
        res["alive_after_add"] = process_alive(g, pid)
        res["log_after_add"] = log_lines(g)[n1:][-6:]
        limit = (read_state(g) or {}).get("limit_bytes") or st["limit_bytes"]
        over = page_align(limit + 64 * MiB)
        g.set_balloon_size(over)
        try:
            st2 = wait_state(g, is_held, timeout=30)
            res["held_new_device"] = True
            res["held_name"] = (state_hold(st2) or {}).get("name")
        except GuestTimeout:
            res["held_new_device"] = False
        res["bound_after_over"] = driver_bound(g)
    problems = []
    if not res["guest_device_gone"] or not res["guest_bound_after_add"]:
        problems.append("hotplug itself failed (device not gone / not re-bound)")
    if not (res["alive_after_del"] and res["alive_after_add"]):
        problems.append("the daemon died across the hotplug")
    if not any("remove" in ln for ln in res["log_after_del"]):
        problems.append("no log line about the removal")
    if not any(re.search(r"action=(add|bind)", ln) for ln in res["log_after_add"]):
        problems.append("no log line about the new device")
    if not res["held_new_device"] or res["bound_after_over"]:
        problems.append("the new device is not governed (over-limit target not held)")
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if "alive_after_add" not in r:
        return []
    return [f"device_del {r.get('device_del_s')}s, re-bound after {r.get('bound_after_add_s')}s, daemon alive "
            f"{r.get('alive_after_del')}/{r.get('alive_after_add')}, new device held={r.get('held_new_device')}"]


SCENARIO = Scenario("hotplug", run, describe)
