"""Guest-side helpers of the system tier: the unit and its journal, the
pinned process and the workload, the verdict."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

from .. import guestside
from ..guest import page_align
from .guest import SystemGuest

BIN = "/usr/sbin/balloonctl"
UNIT = "balloonctl.service"
# Paths outside the package that the file listings before install and after
# purge leave out: they change on every boot whatever is installed.
# Written by the system, not by balloonctl: /var/backups is the daily
# dpkg-db-backup.timer's (on a freshly built trixie image it ran during the
# sandbox boot and its dpkg.status.0 looked like files left after purge).
VOLATILE = ["/proc", "/sys", "/dev", "/run", "/tmp", "/var/log", "/var/cache", "/var/lib/apt",
            "/var/lib/systemd", "/var/tmp", "/root/debs", "/root/files-before.txt", "/root/balloonctl-files.txt",
            "/var/lib/dpkg", "/var/backups"]


class Problems(list):
    def need(self, ok: Any, what: str) -> bool:
        if not ok:
            self.append(what)
        return bool(ok)


def verdict(res: dict, problems: list[str]) -> dict:
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


def show(g: SystemGuest, unit: str, props: list[str]) -> dict[str, str]:
    out = g.check(f"systemctl show {unit} -p {','.join(props)} --no-pager")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)



SVC = ["ActiveState", "SubState", "MainPID", "NRestarts", "ActiveEnterTimestampMonotonic",
       "UnitFileState", "WantedBy", "Result"]


def service(g: SystemGuest) -> dict[str, str]:
    return show(g, UNIT, SVC)


def wait_service(g: SystemGuest, pred: Callable[[dict[str, str]], bool], timeout: float,
                 period: float = 0.2) -> Optional[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        s = service(g)
        if pred(s):
            return s
        if time.monotonic() >= deadline:
            return None
        time.sleep(period)


def is_active(s: dict[str, str]) -> bool:
    return s.get("ActiveState") == "active" and s.get("MainPID", "0") != "0"



def wait_state(g: SystemGuest, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
    return guestside.wait_state(g, pred, timeout, what, period=0.2)


def journal(g: SystemGuest, args: str = "") -> list[str]:
    _, out = g.run(f"journalctl -b -u {UNIT} --no-pager -o cat {args}", timeout=60)
    return [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("-- ")]


def release_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if re.search(r"\brelease virtio", ln)]


def oom_kills(g: SystemGuest, timeout: float = 20.0) -> int:
    return g.read_kv("/proc/vmstat", timeout=timeout).get("oom_kill", 0)


def oom_victims(g: SystemGuest) -> list[str]:
    _, out = g.run("dmesg | grep -E 'Killed process' || true")
    return re.findall(r"Killed process \d+ \(([^)]+)\)", out)


def memhog(g: SystemGuest, mib_: int) -> dict[str, Any]:
    rc, out = g.run(f"memhog {mib_} 2", timeout=240, guest_timeout=200)
    return {"workload_mib": mib_, "workload_rc": rc, "workload_completed": "MEMHOG-OK" in out and rc == 0,
            "workload_tail": out.strip().splitlines()[-2:]}


def ask_balloon(g: SystemGuest, balloon_bytes: int) -> float:
    return g.set_balloon_size(page_align(balloon_bytes))


def guest_mono_to_host(g: SystemGuest, mono_us: str) -> Optional[float]:
    try:
        us = int(mono_us)
    except ValueError:
        return None
    if us <= 0:
        return None
    off, _ = g.clock_offset(tries=3)
    return us / 1e6 + off


def keep_journal(g: Optional[SystemGuest]) -> None:
    if g is not None and g.alive():
        g.save_journal()


def started_by_rule(g: SystemGuest, s: dict[str, str], res: dict[str, Any], p: "Problems") -> None:
    """The unit is not enabled and the harness starts nothing, so only the udev
    rule's SYSTEMD_WANTS can have started it; the device unit in WantedBy is
    the corroboration, read again if systemd had not listed it yet (seen once
    on 7.3: WantedBy empty in the first read right after the start)."""
    p.need(s.get("UnitFileState") != "enabled", f"the unit is enabled ({s.get('UnitFileState')})")
    wanted = s.get("WantedBy", "")
    if ".device" not in wanted:
        time.sleep(1)
        wanted = show(g, UNIT, ["WantedBy"]).get("WantedBy", "")
    res["wanted_by"] = wanted
    p.need(".device" in wanted, f"no device unit wants the service (WantedBy={wanted!r})")
