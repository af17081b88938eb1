"""oom_postmortem: the daemon's OOM records, checked against the host's view.

It shares kb_failure's "without" guest (no new boot): there the daemon runs
in report mode (it acts on nothing, so the KB failure still happens), and
  1. the KB's OOM must be recorded as balloon_caused, with the balloon's size
     within 2 MiB of what QMP reported when the daemon read it (the record's
     read_boottime mapped onto the host clock, between two sampler samples);
  2. then, the balloon deflated to 0 in the same guest, a control OOM
     (memhog of MemTotal − 16 MiB, more than the guest can give) must be recorded as not_involved.
kb_failure runs these and leaves the result in ctx.shared; this scenario
reports it (or, run alone, runs kb_failure's "without" half for it).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Optional

from ..errors import GuestError, GuestTimeout
from ..guest import Guest, MiB
from ..guestside import read_state, wait_state
from ..sampler import Sampler
from .base import BALLOONCTL, Context, Scenario, fmt_mib, verdict
from .daemon import daemon_log, start_and_wait_daemon

TOLERANCE = 2 * MiB
SHARED_KEY = "oom_postmortem"


def start_reporting_daemon(g: Guest) -> dict[str, Any]:
    """`balloonctl run --mode report --probe-target` (the size is the
    device's `actual`, the number QMP reports); returns its pid and the
    guest-to-host clock offset."""
    pid, _ = start_and_wait_daemon(g, interval=1.0, mode="report", probe_target=True)
    off, rtt = g.clock_offset(tries=15)
    return {"daemon_pid": pid, "clock_offset_s": off, "clock_rtt_ms": round(rtt * 1000, 1)}


def start_buffer(g: Guest, count: int = 4, mib: int = 8) -> list[int]:
    """Killable memory between the workload and the daemon: `count` memhogs
    of `mib` MiB at oom_score_adj −800, which the kernel takes after every
    process at 0 and before the daemon at −900. On 7.3 the KB failure's
    cascade (memlock's mlocked pages are freed slowly) otherwise killed
    sleep, init and the daemon within 40 ms, before it could record."""
    out = g.check(f"for i in {' '.join(map(str, range(count)))}; do (echo -800 >/proc/self/oom_score_adj; "
                  f"exec memhog {mib} 3600) >/dev/null 2>&1 & echo E2E-PID=$!; done")
    return [int(p) for p in re.findall(r"E2E-PID=(\d+)", out)]


def stop_buffer(g: Guest, pids: list[int]) -> None:
    if pids:
        g.run("kill " + " ".join(map(str, pids)) + " 2>/dev/null; true")


def _kills(g: Guest) -> list[dict]:
    return (read_state(g) or {}).get("oom_kills") or []


def _wait_kill(g: Guest, after: int, timeout: float, what: str) -> dict:
    st = wait_state(g, lambda st: len(st.get("oom_kills") or []) > after, timeout, what, period=0.5)
    return st["oom_kills"][after]


def qmp_at(s: Sampler, t: float, error_s: float) -> Optional[dict[str, Any]]:
    """QMP's balloon at host time t, known to ± error_s (the guest clock's
    mapping): the value interpolated at t, and the range QMP reported within
    t ± error_s (with the samples just outside it, which bound it)."""
    series = s.balloon_series()
    before = [x for x in series if x[0] <= t - error_s]
    after = [x for x in series if x[0] >= t + error_s]
    inside = [x for x in series if t - error_s < x[0] < t + error_s]
    window = before[-1:] + inside + after[:1]
    if not before or not after:
        return None
    below = [x for x in series if x[0] <= t][-1]
    above = [x for x in series if x[0] >= t][0]
    (t0, b0), (t1, b1) = below, above
    value = b0 if t1 == t0 else b0 + (b1 - b0) * (t - t0) / (t1 - t0)
    return {"bytes": int(round(value)), "low": min(b for _, b in window), "high": max(b for _, b in window),
            "error_ms": round(error_s * 1000, 1), "samples": len(window)}


def record_balloon(kill: dict) -> Optional[int]:
    sizes = [b.get("current_bytes") for b in kill.get("balloons") or []]
    return sum(sizes) if sizes and None not in sizes else None


def balloon_oom(g: Guest, s: Sampler, daemon: dict, kills_before: int) -> dict[str, Any]:
    """The first OOM record after the balloon request, against QMP."""
    res: dict[str, Any] = {}
    try:
        kill = _wait_kill(g, kills_before, 60, "the KB OOM recorded")
    except GuestTimeout as e:
        res["error"] = f"no OOM record: {e}; log: {daemon_log(g)[-800:]}"
        return res
    res["record"] = kill
    res["verdict_balloon"] = kill.get("verdict")
    res["balloon_bytes_recorded"] = record_balloon(kill)
    t_host = float(kill.get("read_boottime") or 0) + daemon["clock_offset_s"]
    # The mapping is good to half the round trip of its measurement.
    q = qmp_at(s, t_host, daemon["clock_rtt_ms"] / 2000)
    res["balloon_bytes_qmp"] = q["bytes"] if q else None
    res["qmp_bracket"] = q
    return res


def control_mib(g: Guest) -> int:
    """A memhog past what the guest can give: MemTotal − 16 MiB (the kernel,
    the daemon and the shell use more than that). Above MemTotal (+ swap)
    mmap's overcommit heuristic refuses it, and nothing is OOM-killed."""
    return g.read_kv("/proc/meminfo")["MemTotal"] // 1024 - 16


def control_oom(g: Guest) -> dict[str, Any]:
    """Balloon at 0, then memhog past the guest's free memory: a record, not_involved."""
    res: dict[str, Any] = {}
    g.balloon(g.ram_bytes)
    g.wait_actual(lambda a: a == g.ram_bytes, timeout=60)
    time.sleep(1)
    before = len(_kills(g))
    mib = control_mib(g)
    rc, out = g.run(f"memhog {mib} 1", timeout=240, guest_timeout=200)
    res["control_memhog_mib"] = mib
    res["control_memhog_rc"] = rc
    try:
        kill = _wait_kill(g, before, 60, "the control OOM recorded")
    except GuestTimeout as e:
        res["control_error"] = str(e)
        return res
    res["control_record"] = kill
    res["verdict_control"] = kill.get("verdict")
    res["control_balloon_bytes"] = record_balloon(kill)
    return res


def save_kmsg(g: Guest) -> None:
    """The guest's kernel log as /dev/kmsg gives it (the unit tests' fixtures
    come from such captures), and what `status` and `status --json` say."""
    for name, cmd in (("kmsg.txt", "timeout 2 cat /dev/kmsg; true"),
                      ("status.txt", f"{BALLOONCTL} status; true"),
                      ("status.json", f"{BALLOONCTL} status --json; true"),
                      ("daemon-log.txt", "cat /tmp/balloonctl.log; true")):
        _, out = g.run(cmd, timeout=30)
        if name == "kmsg.txt":
            # Only the records (the shell's "Terminated" from timeout goes).
            out = "".join(ln + "\n" for ln in out.splitlines() if re.match(r"\d+,\d+,\d+,|\s", ln))
        with open(os.path.join(g.logdir, name), "w") as f:
            f.write(out)


def judge(res: dict[str, Any]) -> dict[str, Any]:
    problems = []
    if res.get("error"):
        problems.append(res["error"])
    if res.get("verdict_balloon") != "balloon_caused":
        problems.append(f"the KB OOM was recorded as {res.get('verdict_balloon')}, not balloon_caused")
    rec, q = res.get("balloon_bytes_recorded"), res.get("qmp_bracket")
    if rec is None or q is None:
        problems.append(f"no balloon size to compare (recorded {rec}, QMP {q})")
    else:
        res["balloon_diff_bytes"] = rec - q["bytes"]
        # Within 2 MiB of what QMP reported at that moment, the moment known
        # to ± half the clock mapping's round trip: while the balloon moves,
        # within 2 MiB of the range QMP reported in that window.
        if abs(rec - q["bytes"]) > TOLERANCE and not (q["low"] - TOLERANCE <= rec <= q["high"] + TOLERANCE):
            problems.append(f"recorded balloon {fmt_mib(rec)} vs QMP {fmt_mib(q['bytes'])} "
                            f"({fmt_mib(q['low'])}..{fmt_mib(q['high'])} within ±{q['error_ms']} ms): "
                            "more than 2 MiB apart")
    if res.get("control_error"):
        problems.append(res["control_error"])
    if res.get("verdict_control") != "not_involved":
        problems.append(f"the control OOM was recorded as {res.get('verdict_control')}, not not_involved")
    return verdict(res, problems)


def run(ctx: Context) -> dict:
    r = ctx.shared.get(SHARED_KEY)
    if r is None:
        from .kb_failure import _kb_without
        try:
            _kb_without(ctx)
        except GuestError as e:
            return {"passed": False, "reason": f"{type(e).__name__}: {e}"}
        r = ctx.shared.get(SHARED_KEY) or {"passed": False, "reason": "kb_failure's without half gave no result"}
    return r


def describe(r: dict) -> list[str]:
    q = r.get("qmp_bracket") or {}
    return [f"KB OOM: {r.get('verdict_balloon')}, balloon recorded {fmt_mib(r.get('balloon_bytes_recorded'))} "
            f"vs QMP {fmt_mib(r.get('balloon_bytes_qmp'))} ({fmt_mib(q.get('low'))}..{fmt_mib(q.get('high'))} "
            f"within ±{q.get('error_ms')} ms); "
            f"control OOM (memhog {r.get('control_memhog_mib')} MiB, balloon "
            f"{fmt_mib(r.get('control_balloon_bytes'))}): {r.get('verdict_control')}"]


SCENARIO = Scenario("oom_postmortem", run, describe,
                    result_keys=["verdict_balloon", "verdict_control", "balloon_bytes_recorded",
                                 "balloon_bytes_qmp"])
