"""What the daemon scenarios share: the pinned process, and `balloonctl run`
started in the background with its log in /tmp/balloonctl.log."""

from __future__ import annotations

from typing import Any

from ..errors import GuestError, GuestTimeout
from ..guest import Guest
from ..guestside import state_hold, wait_state
from .base import BALLOONCTL


def start_daemon(g: Guest, interval: float = 0.2, mode: str = "enforce", probe_target: bool = True,
                 events: bool = False) -> int:
    """Starts `balloonctl run` in the background; returns its pid (stderr -> /tmp/balloonctl.log).
    Ticks only unless `events` (the scenarios from before the kprobe wake-up
    test the tick as proven; scenarios/events.py tests the events)."""
    args = f"--interval {interval:g} --mode {mode}" + (" --probe-target" if probe_target else " --no-probe-target")
    args += " --events" if events else " --no-events"
    out = g.check(f"{BALLOONCTL} run {args} >>/tmp/balloonctl.out 2>>/tmp/balloonctl.log & echo $!")
    return int(out.strip().splitlines()[-1])


def daemon_log(g: Guest) -> str:
    _, out = g.run("cat /tmp/balloonctl.log 2>/dev/null")
    return out


def log_lines(g: Guest) -> list[str]:
    return [ln for ln in daemon_log(g).splitlines() if ln.strip()]


def start_and_wait_daemon(g: Guest, interval: float = 0.2, mode: str = "enforce",
                          timeout: float = 60.0, **kw: Any) -> tuple[int, dict]:
    """start_daemon, then wait until its state.json (its pid, a limit) exists."""
    pid = start_daemon(g, interval=interval, mode=mode, **kw)
    try:
        st = wait_state(g, lambda st: st.get("pid") == pid and st.get("limit_bytes") is not None
                        and state_hold(st) is not None, timeout)
    except GuestTimeout as e:
        raise GuestError(f"balloonctl run did not come up: {e}\nlog:\n{daemon_log(g)[-1500:]}") from e
    return pid, st
