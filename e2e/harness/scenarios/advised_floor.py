"""advised_floor: the host sends exactly the QMP floor `balloonctl advise`
gives, and the guard never has to act."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..guestside import pin_memory, read_state, state_hold
from .base import BALLOONCTL, Context, Scenario, fmt_mib, verdict
from .daemon import log_lines, start_and_wait_daemon


def run(ctx: Context) -> dict:
    """The host (this harness) runs `balloonctl advise --hypervisor qemu --json`
    in the guest, sends exactly the advised QMP `balloon` value, and the
    daemon (report mode) never wants to release: no release decision in its
    log or state, and the balloon ends at or under the limit."""
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {"floor_bytes": None, "max_balloon_bytes": None, "limit_bytes": None}
    with ctx.guest("advised_floor", mem_mib=1024, deflate_on_oom=False) as g:
        t0 = time.monotonic()
        res["boot_s"] = round(g.boot(), 2)
        res.update(pin_memory(g, 512))
        pid, _ = start_and_wait_daemon(g, interval=interval, mode="report", probe_target=True)
        doc = json.loads(g.check(f"{BALLOONCTL} advise --hypervisor qemu --json"))
        qemu = next(a for a in doc["advice"] if a["hypervisor"] == "qemu")
        floor = qemu["bytes"]
        res["floor_bytes"] = floor
        res["advised_limit_bytes"] = doc["advised_limit_bytes"]
        res["configured_ram_bytes"] = doc["configured_ram_bytes"]
        n0 = len(log_lines(g))
        with g.sampler() as sampler:
            g.balloon(floor)
            # The balloon reaches the host's target (RAM − floor), then a few ticks.
            g.wait_actual(lambda a: a <= floor, timeout=120)
            g.wait_settled(timeout=30, quiet=2.0)
            time.sleep(5 * interval + 0.5)
        res["max_balloon_bytes"] = sampler.max_balloon()
        res["balloon_bytes"] = g.balloon_bytes()
        st = read_state(g) or {}
        res["limit_bytes"] = st.get("limit_bytes")
        hold = state_hold(st) or {}
        res["last_decision"] = (hold.get("last_decision") or {}).get("action")
        lines = log_lines(g)[n0:]
        res["release_lines"] = [ln for ln in lines if re.search(r"\b(would )?release\b", ln)][:3]
        g.balloon(g.ram_bytes)
        res["scenario_s"] = round(time.monotonic() - t0, 1)
    problems = []
    limit = res["limit_bytes"]
    if floor is None or floor <= 0 or floor >= g.ram_bytes:
        problems.append(f"advise gave no usable floor: {floor}")
    if limit is None:
        problems.append("no limit in the state file")
    elif res["max_balloon_bytes"] is None or res["max_balloon_bytes"] > limit:
        problems.append(f"the balloon reached {res['max_balloon_bytes']} bytes, over the limit {limit}")
    if res["max_balloon_bytes"] is not None and res["max_balloon_bytes"] < g.ram_bytes - floor - (1 << 20):
        problems.append(f"the balloon never reached the advised size (max {res['max_balloon_bytes']})")
    if res["release_lines"]:
        problems.append(f"the daemon wanted to release: {res['release_lines'][0]}")
    if res["last_decision"] != "none":
        problems.append(f"the state's last decision is {res['last_decision']}, not none")
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if r.get("floor_bytes") is None:
        return []
    return [f"floor {fmt_mib(r.get('floor_bytes'))}, balloon max {fmt_mib(r.get('max_balloon_bytes'))} "
            f"<= limit {fmt_mib(r.get('limit_bytes'))}, last decision {r.get('last_decision')}"]


SCENARIO = Scenario("advised_floor", run, describe,
                    result_keys=["floor_bytes", "max_balloon_bytes", "limit_bytes"])
