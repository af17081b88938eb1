"""deflate_on_oom: what the kernel does to MemTotal with the feature on and
off, and balloonctl's guest size staying put either way."""

from __future__ import annotations

from typing import Any, Optional

from ..guest import PAGE, MiB
from .base import Context, Scenario, fmt_mib, verdict
from .status import run_status


def guest_bytes(doc: Any) -> Optional[int]:
    return ((doc or {}).get("memory") or {}).get("guest_bytes")


def removes(doc: Any) -> Optional[bool]:
    bs = (doc or {}).get("balloons") or []
    return bs[0].get("removes_from_memtotal") if bs else None


def run(ctx: Context) -> dict:
    """deflate-on-oom on and off: MemTotal moves only without it (kernel half:
    inflate 324 MiB, MemTotal before/after), and balloonctl's guest-size
    accounting stays right (status --json: memory.guest_bytes the same
    inflated and deflated, within 1 MiB; removes_from_memtotal == not on)."""
    size = 324 * MiB
    res: dict[str, Any] = {}
    problems: list[str] = []
    kernel_problems: list[str] = []

    def kernel_problem(what: str) -> None:
        problems.append(what)
        kernel_problems.append(what)

    for dom in (True, False):
        key = "on" if dom else "off"
        r: dict[str, Any] = {}
        with ctx.guest(f"deflate_on_oom-{key}", deflate_on_oom=dom) as g:
            r["boot_s"] = round(g.boot(), 2)
            rc, feats = g.run("cat /sys/bus/virtio/drivers/virtio_balloon/virtio*/features")
            r["feature_bit2"] = feats.strip()[2:3] == "1" if rc == 0 else None
            mt0 = g.meminfo()["MemTotal"]
            st0 = run_status(g)[1]
            g.set_balloon_size(size)
            g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            g.wait_guest_balloon_pages(size // PAGE, timeout=10)
            mt1 = g.meminfo()["MemTotal"]
            st1 = run_status(g)[1]
            g.balloon(g.ram_bytes)
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=60)
            mt2 = g.meminfo()["MemTotal"]
        r.update(memtotal_kb_before=mt0, memtotal_kb_inflated=mt1, memtotal_kb_after=mt2,
                 memtotal_drop_kb=mt0 - mt1)
        if r["feature_bit2"] is not dom:
            kernel_problem(f"{key}: DEFLATE_ON_OOM feature bit is {r['feature_bit2']}")
        if dom and mt1 != mt0:
            kernel_problem(f"on: MemTotal moved {mt0} -> {mt1} kB")
        if not dom and abs((mt0 - mt1) - size // 1024) > 1024:
            kernel_problem(f"off: MemTotal dropped {mt0 - mt1} kB, expected {size // 1024}")
        if mt2 != mt0:
            kernel_problem(f"{key}: MemTotal not restored after deflate ({mt0} -> {mt2})")
        r.update(status_guest_bytes_deflated=guest_bytes(st0), status_guest_bytes_inflated=guest_bytes(st1),
                 status_removes_from_memtotal=removes(st1))
        g0, g1 = guest_bytes(st0), guest_bytes(st1)
        if g0 is None or g1 is None:
            problems.append(f"{key}: status --json has no memory.guest_bytes")
        elif abs(g0 - g1) > MiB:
            problems.append(f"{key}: balloonctl guest size moved {g0} -> {g1} B when inflating")
        if removes(st1) is not (not dom):
            problems.append(f"{key}: removes_from_memtotal={removes(st1)}")
        res[key] = r
    # The kernel half's verdict on its own: the summary line says whether
    # MemTotal behaved ("ok") apart from balloonctl's numbers.
    res["precheck"] = {"passed": not kernel_problems}
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if not r.get("on"):
        return []
    on, off = r["on"], r.get("off", {})
    bits = [f"MemTotal drop on={on.get('memtotal_drop_kb')} kB, off={off.get('memtotal_drop_kb')} kB "
            f"({'ok' if r.get('precheck', {}).get('passed') else 'WRONG'})"]
    if "status_guest_bytes_inflated" in on:
        bits.append(f"balloonctl guest size on {fmt_mib(on.get('status_guest_bytes_deflated'))} -> "
                    f"{fmt_mib(on.get('status_guest_bytes_inflated'))}, off "
                    f"{fmt_mib(off.get('status_guest_bytes_deflated'))} -> {fmt_mib(off.get('status_guest_bytes_inflated'))}")
    return bits


SCENARIO = Scenario("deflate_on_oom", run, describe)
