"""Guest-side reads both tiers share: the virtio_balloon binding and the
daemon's state file (/run/balloonctl/state.json)."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, Optional

from .errors import GuestError, GuestTimeout
from .guest import Guest

STATE = "/run/balloonctl/state.json"


def driver_bound(g: Guest) -> bool:
    """Whether a virtio device is bound to virtio_balloon."""
    rc, _ = g.run("ls /sys/bus/virtio/drivers/virtio_balloon/ 2>/dev/null | grep -q '^virtio'")
    return rc == 0


def balloon_virtio_name(g: Guest) -> Optional[str]:
    """The virtioN whose device id is 0x0005 (bound or not)."""
    _, out = g.run("for d in /sys/bus/virtio/devices/*; do [ -e $d/device ] || continue; "
                   "[ \"$(cat $d/device)\" = 0x0005 ] && echo E2E-DEV=$(basename $d); done; true")
    names = re.findall(r"E2E-DEV=(\S+)", out)
    return names[0] if names else None


def process_alive(g: Guest, pid: int) -> bool:
    rc, out = g.run(f"cat /proc/{pid}/status 2>/dev/null | grep '^State:'")
    return rc == 0 and " Z " not in out and "zombie" not in out


def read_state(g: Guest, path: str = STATE) -> Optional[dict]:
    """/run/balloonctl/state.json (or `path`, a daemon run with its own
    --state-dir) as written by the daemon, or None.

    Format (BalloonKit DaemonState, version 1): pid, mode, interval_ms,
    limit_bytes, updated_boottime, balloons[] with kind, name, held,
    since_boottime (guest CLOCK_BOOTTIME seconds), releases, last_decision.
    """
    rc, out = g.run(f"cat {path} 2>/dev/null")
    if rc != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


def state_hold(state: Optional[dict], kind: str = "virtio") -> Optional[dict]:
    """The state file's record of the first balloon of `kind`, or None."""
    for b in (state or {}).get("balloons", []):
        if b.get("kind") == kind:
            return b
    return None


def is_held(st: dict) -> bool:
    return bool((state_hold(st) or {}).get("held"))


def wait_state(g: Guest, pred: Callable[[dict], bool], timeout: float, what: str = "the awaited state",
               period: float = 0.1, path: str = STATE) -> dict:
    """Polls the state file until pred(state); returns that state."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = read_state(g, path)
        if st is not None:
            last = st
            if pred(st):
                return st
        if time.monotonic() >= deadline:
            raise GuestTimeout(f"state.json: {what} not within {timeout:g}s (last: {json.dumps(last)[:600]})")
        time.sleep(period)


def pin_memory(g: Guest, lock_mib: int) -> dict[str, Any]:
    """The pinned process: memlock holding `lock_mib` MiB; returns its pid and Mlocked."""
    out = g.check(f"memlock {lock_mib} >/tmp/memlock.log 2>&1 & echo $!")
    pid = int(out.strip().splitlines()[-1])
    deadline = time.monotonic() + 120
    while True:
        _, log = g.run("cat /tmp/memlock.log")
        if "MEMLOCK-OK" in log:
            break
        if "MEMLOCK-FAIL" in log or not process_alive(g, pid):
            raise GuestError(f"memlock {lock_mib} failed: {log.strip()}")
        if time.monotonic() > deadline:
            raise GuestError(f"memlock {lock_mib}: not locked within 120s")
        time.sleep(0.3)
    return {"memlock_pid": pid, "mlocked_kb": g.meminfo().get("Mlocked")}
