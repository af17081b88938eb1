"""smoke: the machinery without balloonctl: QMP inflate, the guest kernel's
own count of the balloon, deflate."""

from __future__ import annotations

from typing import Any

from ..guest import PAGE, MiB
from ..guestside import balloon_virtio_name, driver_bound
from .base import Context, Scenario, verdict


def run(ctx: Context) -> dict:
    """Boot; inflate to a 324 MiB balloon over QMP; the guest kernel counts it; deflate."""
    res: dict[str, Any] = {}
    size = 324 * MiB
    with ctx.guest("smoke", deflate_on_oom=True) as g:
        res["boot_s"] = round(g.boot(), 2)
        res["virtio"] = balloon_virtio_name(g)
        if not driver_bound(g):
            return {**res, "passed": False, "reason": "virtio_balloon is not bound in the guest"}
        mt0 = g.meminfo().get("MemTotal")
        start = g.query_balloon()
        if start != g.ram_bytes:
            return {**res, "passed": False, "reason": f"balloon not empty at start: actual={start}"}
        g.set_balloon_size(size)
        res["inflate_s"], _ = g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
        expected = size // PAGE
        pages, src, lag = g.wait_guest_balloon_pages(expected, timeout=10)
        mi = g.meminfo()
        res.update(expected_pages=expected, guest_balloon_pages=pages, guest_source=src,
                   guest_lag_s=round(lag, 2), meminfo_balloon_kb=mi.get("Balloon"),
                   memtotal_kb_before=mt0, memtotal_kb_inflated=mi.get("MemTotal"))
        g.balloon(g.ram_bytes)
        res["deflate_s"], _ = g.wait_actual(lambda a: a == g.ram_bytes, timeout=60)
        pages_after, _, _ = g.wait_guest_balloon_pages(0, timeout=10)
        res["guest_balloon_pages_after"] = pages_after
    res["inflate_s"] = round(res["inflate_s"], 2)
    res["deflate_s"] = round(res["deflate_s"], 2)
    problems = []
    if pages != expected:
        problems.append(f"guest counts {pages} balloon pages ({src}), expected {expected}")
    if mi.get("Balloon") is not None and mi["Balloon"] != size // 1024:
        problems.append(f"meminfo Balloon: {mi['Balloon']} kB, expected {size // 1024}")
    if pages_after != 0:
        problems.append(f"guest still counts {pages_after} pages after deflating")
    if mt0 != mi.get("MemTotal"):
        problems.append(f"MemTotal moved with deflate-on-oom on: {mt0} -> {mi.get('MemTotal')} kB")
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if "inflate_s" not in r:
        return []
    return [f"boot {r.get('boot_s')}s, inflate 324 MiB {r.get('inflate_s')}s, deflate {r.get('deflate_s')}s, "
            f"guest pages {r.get('guest_balloon_pages')}/{r.get('expected_pages')} ({r.get('guest_source')})"]


SCENARIO = Scenario("smoke", run, describe, needs_balloonctl=False)
