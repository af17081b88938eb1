"""events: the daemon wakes on the balloon driver's own event (a kprobe on
virtballoon_changed), races the host's request and wins; falls back to the
tick, saying why, where the kernel refuses kprobes.

race      one guest, 1 GiB, no swap, half of it mlocked. `balloonctl run
          --mode enforce` at the default 1 s interval; the host asks for 65 %
          at a random offset within the tick, N times with events and N times
          with `--no-events` (the baseline), deflating and re-admitting between
          runs. OOM kills, the longest time over the limit, the request ->
          release reaction (p50/p99).
lockdown  `lockdown=integrity` (what Secure Boot turns on): the PCI window
          write is refused (EPERM), so the target is unknown; the probe still
          works and the 5 ms watch releases as the balloon crosses the limit.
fallback  `lockdown=confidentiality`: kprobes are refused. The daemon ticks,
          status says why, and a balloon crossing the limit is still
          released (kb_failure's reactive case) with 0 OOM kills.
"""

from __future__ import annotations

import random
import time
from typing import Any, Optional

from ..errors import GuestError
from ..guest import Guest, MiB, page_align
from ..guestside import driver_bound, is_held, pin_memory, process_alive, read_state, state_hold, wait_state
from .base import BALLOONCTL, TOL_MS, Context, Scenario, fmt_mib, fmt_ms, ms, verdict
from .daemon import log_lines, start_and_wait_daemon


def _percentile(values: list[float], q: float) -> Optional[int]:
    if not values:
        return None
    v = sorted(values)
    return int(round(v[min(len(v) - 1, int(round(q * (len(v) - 1))))]))


def _stop_daemon(g: Guest, pid: int) -> None:
    g.run(f"kill -TERM {pid}")
    deadline = time.monotonic() + 20
    while process_alive(g, pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _mount_securityfs(g: Guest) -> Optional[str]:
    g.run("mkdir -p /sys/kernel/security; mount -t securityfs securityfs /sys/kernel/security 2>/dev/null")
    rc, out = g.run("cat /sys/kernel/security/lockdown 2>/dev/null")
    return out.strip() if rc == 0 and out.strip() else None


def _one_run(g: Guest, request: int, off: float, rng: random.Random, readmit: bool = True) -> dict[str, Any]:
    """One host request at a random offset within the 1 s tick; then back to
    0 and, when `readmit`, re-admitted (at once with the target known; a
    blind hold waits out its 30 s back-off, so the last run skips it)."""
    offset = rng.uniform(0.0, 1.0)
    time.sleep(offset)
    oom0 = g.vmstat().get("oom_kill", 0)
    limit = read_state(g)["limit_bytes"]
    with g.sampler(0.05) as s:
        t_req = g.set_balloon_size(request)
        st = wait_state(g, is_held, timeout=30)
        hold = state_hold(st) or {}
        t_hold = float(hold["since_boottime"]) + off
        g.wait_actual(lambda a: a == g.ram_bytes, timeout=30)
        time.sleep(0.2)
    t_cross = s.first_time(lambda b: b > limit, since=t_req)
    t_back = s.first_time(lambda b: b <= limit, since=max(t_hold, t_cross or t_hold))
    run = {
        "offset_ms": ms(offset), "limit_bytes": limit, "reaction_ms": ms(t_hold - t_req),
        "over_limit_ms": ms(s.time_above(limit, since=t_req)), "max_balloon_bytes": s.max_balloon(since=t_req),
        "deflate_ms": ms(t_back - t_hold) if (t_cross is not None and t_back is not None) else 0,
        "hold_reason": hold.get("reason"),
        # How far the balloon got before the release: the race's margin.
        "max_balloon_before_release_bytes": s.max_balloon(since=t_req, until=t_hold),
    }
    run["oom_kills"] = g.vmstat().get("oom_kill", 0) - oom0
    if not readmit:
        return run
    # Back to 0: the daemon re-admits at its next tick (the interval while held).
    g.set_balloon_size(0)
    wait_state(g, lambda st: not is_held(st), timeout=30, what="the re-admit")
    deadline = time.monotonic() + 10
    while not driver_bound(g) and time.monotonic() < deadline:
        time.sleep(0.1)
    return run


def _series(g: Guest, runs: int, events: bool, request_of: Any, rng: random.Random,
            probe_target: bool = True, readmit_last: bool = True) -> dict[str, Any]:
    """`runs` requests under one daemon; its `balloonctl status` is kept too."""
    pid, st = start_and_wait_daemon(g, interval=1.0, events=events, probe_target=probe_target)
    wakeups = st.get("wakeups") or {}
    off, _ = g.clock_offset()
    out: list[dict[str, Any]] = []
    try:
        for i in range(runs):
            last = i == runs - 1
            out.append(_one_run(g, request_of(read_state(g)["limit_bytes"]), off, rng,
                                readmit=readmit_last or not last))
    finally:
        alive = process_alive(g, pid)
        log = log_lines(g)[-6:]
        _, status = g.run(f"{BALLOONCTL} status 2>&1")
        _stop_daemon(g, pid)
    reactions = [r["reaction_ms"] for r in out]
    return {
        "runs": len(out), "wakeups": wakeups.get("mode"), "wakeups_reason": wakeups.get("reason"),
        "oom_kills": sum(r["oom_kills"] for r in out),
        "max_over_limit_ms": max((r["over_limit_ms"] for r in out), default=None),
        "deflate_ms": max((r["deflate_ms"] for r in out), default=None),
        "reaction_p50_ms": _percentile(reactions, 0.5), "reaction_p99_ms": _percentile(reactions, 0.99),
        "max_balloon_before_release_bytes": max((r["max_balloon_before_release_bytes"] or 0 for r in out),
                                                default=None),
        "daemon_alive": alive, "daemon_log_tail": log, "per_run": out, "status": status.splitlines(),
    }


def _inflate_times(g: Guest, events: bool, reps: int, size: int) -> list[float]:
    """`reps` inflates of `size` under a report-mode daemon (it acts on
    nothing), with or without its probe; seconds from the request to the size."""
    pid, _ = start_and_wait_daemon(g, interval=1.0, mode="report", probe_target=False, events=events)
    times = []
    try:
        for _ in range(reps):
            t0 = g.set_balloon_size(size)
            g.wait_actual(lambda a: a <= g.ram_bytes - size, timeout=60, period=0.01)
            times.append(g.now() - t0)
            g.set_balloon_size(0)
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=60)
            time.sleep(0.5)
    finally:
        _stop_daemon(g, pid)
    return times


def _probe_cost(g: Guest, reps: int) -> dict[str, Any]:
    """A 324 MiB inflate with the daemon's probe attached (and its 5 ms
    watch running, report mode) against the same without events."""
    size = 324 * MiB
    with_probe = _inflate_times(g, True, reps, size)
    without = _inflate_times(g, False, reps, size)
    a, b = sorted(with_probe)[len(with_probe) // 2], sorted(without)[len(without) // 2]
    res = {"inflate_with_s": [round(t, 3) for t in with_probe], "inflate_without_s": [round(t, 3) for t in without],
           "median_with_s": round(a, 3), "median_without_s": round(b, 3),
           "slowdown_pct": round((a - b) / b * 100, 1) if b > 0 else None}
    problems = []
    if res["slowdown_pct"] is None or res["slowdown_pct"] > 5:
        problems.append(f"the inflate is {res['slowdown_pct']} % slower with the probe (> 5 %)")
    return verdict(res, problems)


def _race(ctx: Context, rng: random.Random) -> dict[str, Any]:
    runs = int(ctx.opts.get("events_race_runs", 5))
    res: dict[str, Any] = {}
    with ctx.guest("events-race", mem_mib=1024, deflate_on_oom=False, swap_mib=0) as g:
        res["boot_s"] = round(g.boot(), 2)
        # The probe's cost first, before anything is pinned (its own result).
        try:
            ctx.shared["events_probe_cost"] = _probe_cost(g, int(ctx.opts.get("events_cost_reps", 3)))
        except (GuestError, KeyError, TypeError) as e:
            ctx.shared["events_probe_cost"] = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
        res.update(pin_memory(g, 512))
        request = page_align(int(g.ram_bytes * 0.65))
        ev = _series(g, runs, True, lambda _limit: request, rng)
        base = _series(g, runs, False, lambda _limit: request, rng)
    res.update({k: ev[k] for k in ("runs", "oom_kills", "max_over_limit_ms", "deflate_ms", "reaction_p50_ms",
                                   "reaction_p99_ms", "max_balloon_before_release_bytes", "wakeups",
                                   "wakeups_reason")})
    res["baseline"] = {k: base[k] for k in ("runs", "oom_kills", "max_over_limit_ms", "reaction_p50_ms",
                                            "reaction_p99_ms", "max_balloon_before_release_bytes", "wakeups")}
    res["events_detail"], res["baseline_detail"] = ev, base
    problems = []
    if ev["wakeups"] != "events":
        problems.append(f"the daemon did not wake on events: {ev['wakeups_reason']}")
    if ev["oom_kills"]:
        problems.append(f"{ev['oom_kills']} OOM kill(s) with events")
    over_limit_problem(ev, problems)
    if not ev["daemon_alive"]:
        problems.append("the daemon died")
    return verdict(res, problems)


def over_limit_problem(ev: dict[str, Any], problems: list[str]) -> None:
    """The issue's bound on the time over the limit: 100 ms plus the deflate
    (plus the host-guest clock tolerance)."""
    bound = 100 + (ev["deflate_ms"] or 0) + TOL_MS
    if (ev["max_over_limit_ms"] or 0) > bound:
        problems.append(f"over the limit for {ev['max_over_limit_ms']} ms > 100 ms + deflate + {TOL_MS} ms = {bound} ms")


LOCKED_DOWN_GUEST_MIB = 1024


def _locked_down_run(ctx: Context, rng: random.Random, name: str, mode: str,
                     request_of: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request with events on, in a 1 GiB guest booted with
    lockdown=`mode` and 512 MiB pinned: (the boot's facts, the series)."""
    res: dict[str, Any] = {}
    with ctx.guest(name, mem_mib=LOCKED_DOWN_GUEST_MIB, deflate_on_oom=False, swap_mib=0,
                   append=f"lockdown={mode}") as g:
        res["boot_s"] = round(g.boot(), 2)
        res["lockdown"] = _mount_securityfs(g)
        res.update(pin_memory(g, 512))
        ev = _series(g, 1, True, request_of, rng, readmit_last=False)
    return res, ev


def _lockdown(ctx: Context, rng: random.Random) -> dict[str, Any]:
    """lockdown=integrity: the probe works, the PCI window does not; 65 % request, size-watch release."""
    request = page_align(int(LOCKED_DOWN_GUEST_MIB * MiB * 0.65))
    res, ev = _locked_down_run(ctx, rng, "events-lockdown", "integrity", lambda _limit: request)
    errors = [ln.strip() for ln in ev["status"] if "not permitted" in ln or "EPERM" in ln]
    res.update({"probe_error": errors[0] if errors else None, "oom_kills_with": ev["oom_kills"],
                "wakeups": ev["wakeups"], "max_over_limit_ms": ev["max_over_limit_ms"],
                "reaction_p50_ms": ev["reaction_p50_ms"], "deflate_ms": ev["deflate_ms"], "detail": ev})
    problems = []
    if ev["wakeups"] != "events":
        problems.append(f"no events under lockdown=integrity: {ev['wakeups_reason']}")
    if ev["oom_kills"]:
        problems.append(f"{ev['oom_kills']} OOM kill(s)")
    if not errors:
        problems.append("status does not show the PCI window's EPERM")
    over_limit_problem(ev, problems)
    return verdict(res, problems)


def _fallback(ctx: Context, rng: random.Random) -> dict[str, Any]:
    """lockdown=confidentiality: kprobes refused -> the tick, said in status; reactive hold, 0 OOM kills."""
    # kb_failure's reactive case: 64 MiB over the limit.
    res, ev = _locked_down_run(ctx, rng, "events-fallback", "confidentiality",
                               lambda limit: page_align(limit + 64 * MiB))
    line = next((ln for ln in ev["status"] if ln.startswith("Wakeups")), None)
    res.update({"reason": ev["wakeups_reason"], "wakeups": ev["wakeups"], "status_line": line,
                "oom_kills": ev["oom_kills"], "max_over_limit_ms": ev["max_over_limit_ms"], "detail": ev})
    problems = []
    if ev["wakeups"] != "tick":
        problems.append(f"wakeups {ev['wakeups']!r} under lockdown=confidentiality, expected tick")
    if "confidentiality" not in str(ev["wakeups_reason"]):
        problems.append(f"the reason does not name the lockdown: {ev['wakeups_reason']}")
    if not line or "tick every 1 s only" not in line:
        problems.append(f"status does not say tick: {line}")
    if ev["oom_kills"]:
        problems.append(f"{ev['oom_kills']} OOM kill(s)")
    return verdict(res, problems)


def run(ctx: Context) -> dict:
    seed = int(ctx.opts.get("events_seed", time.time()))
    rng = random.Random(seed)
    parts: dict[str, Any] = {"seed": seed}
    wanted = [p for p in str(ctx.opts.get("events_parts", "race,fallback,lockdown")).split(",") if p]
    for name, fn in (("race", _race), ("fallback", _fallback), ("lockdown", _lockdown)):
        if name not in wanted:
            continue
        t0 = time.monotonic()
        try:
            parts[name] = fn(ctx, rng)
        except (GuestError, KeyError, TypeError) as e:
            parts[name] = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
        parts[name]["seconds"] = round(time.monotonic() - t0, 1)
        if name == "race":
            # Recorded, not yet asserted: the first runs were on a loaded
            # machine, where 3 inflates varied 1.0-3.4 s (e2e/README.md).
            parts["probe_cost"] = ctx.shared.pop("events_probe_cost", {"passed": False, "reason": "not run"})
    problems = [f"{n}: {parts[n].get('reason')}" for n in wanted if not parts[n].get("passed")]
    return verdict(parts, problems)


def describe(r: dict) -> list[str]:
    bits = []
    race = r.get("race") or {}
    if race:
        b = race.get("baseline") or {}
        bits.append(f"race ({race.get('runs')} runs): OOM kills {race.get('oom_kills')}, over limit max "
                    f"{fmt_ms(race.get('max_over_limit_ms'))}, reaction p50 {fmt_ms(race.get('reaction_p50_ms'))} "
                    f"p99 {fmt_ms(race.get('reaction_p99_ms'))}, balloon at release max "
                    f"{fmt_mib(race.get('max_balloon_before_release_bytes'))}; baseline (tick): OOM kills "
                    f"{b.get('oom_kills')}, over limit max {fmt_ms(b.get('max_over_limit_ms'))}, reaction p50 "
                    f"{fmt_ms(b.get('reaction_p50_ms'))} p99 {fmt_ms(b.get('reaction_p99_ms'))}, balloon at release max "
                    f"{fmt_mib(b.get('max_balloon_before_release_bytes'))}")
    pc = r.get("probe_cost") or {}
    if pc:
        bits.append(f"probe cost: 324 MiB inflate {pc.get('median_with_s')} s with the probe, "
                    f"{pc.get('median_without_s')} s without ({pc.get('slowdown_pct')} %)")
    fb = r.get("fallback") or {}
    if fb:
        bits.append(f"fallback: wakeups {fb.get('wakeups')}, OOM kills {fb.get('oom_kills')}: {fb.get('reason')}")
    ld = r.get("lockdown") or {}
    if ld:
        bits.append(f"lockdown=integrity: wakeups {ld.get('wakeups')}, OOM kills {ld.get('oom_kills_with')}, "
                    f"over limit max {fmt_ms(ld.get('max_over_limit_ms'))}, probe error {ld.get('probe_error')}")
    return bits


SCENARIO = Scenario("events", run, describe, result_keys=["race", "fallback", "lockdown", "probe_cost", "seed"])
