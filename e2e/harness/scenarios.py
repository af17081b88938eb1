"""End-to-end scenarios: each boots its own guest(s) and returns a result dict.

A scenario is a function ``f(ctx) -> dict`` registered with ``@scenario``; the
dict has at least ``passed`` (bool) and, when it failed, ``reason``. Raising
is fine too: the runner turns an exception into ``passed: false``.

Scenarios that need balloonctl check what the staged binary offers (asked in
the guest: ``status --help``, ``run --help``). When the build has no daemon
(or no binary at all) they run only what needs none (kb_failure's
without-balloonctl half, the manual unbind/bind and hotplug machinery checks,
the kernel's MemTotal behaviour) and return ``{"passed": false, "reason":
"not implemented"}``. The runner fills the result keys that the results JSON
promises (see ``RESULT_KEYS``) with null when missing.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .guest import MiB, PAGE, Guest, GuestConfig, GuestDied, GuestError, GuestTimeout, Kernel

NOT_IMPLEMENTED = "not implemented"

# Keys each scenario's result must carry in the results JSON (null if unknown).
RESULT_KEYS: dict[str, list[str]] = {
    "smoke": [],
    "status": [],
    "kb_failure": ["oom_kills_without", "oom_kills_with", "max_actual_bytes", "limit_bytes",
                   "over_limit_ms", "interval_ms", "reaction_ms"],
    "hold_readmit": ["release_ms", "readmit_ms"],
    "crash_safety": [],
    "report_mode": [],
    "hotplug": [],
    "deflate_on_oom": [],
}

BALLOONCTL = "/usr/local/bin/balloonctl"
# One virtio inflate/deflate step: 256 4-KiB pages (VIRTIO_BALLOON_ARRAY_PFNS_MAX).
INFLATE_STEP = 256 * PAGE


@dataclass
class Scenario:
    name: str
    func: Callable[["Context"], dict]
    doc: str
    needs_daemon: bool


REGISTRY: dict[str, Scenario] = {}


def scenario(name: str, needs_daemon: bool = False):
    def deco(func: Callable[["Context"], dict]) -> Callable[["Context"], dict]:
        REGISTRY[name] = Scenario(name, func, (func.__doc__ or "").strip(), needs_daemon)
        return func
    return deco


@dataclass
class Context:
    """What a scenario gets: the kernel, where to log, options, balloonctl."""

    kernel: Kernel
    logdir: str
    balloonctl_note: str                      # "staged" or why not (build failed, ...)
    opts: dict[str, Any] = field(default_factory=dict)
    _caps: Optional[dict[str, bool]] = None

    def guest(self, name: str, **cfg: Any) -> Guest:
        cfg.setdefault("watchdog", float(self.opts.get("guest_watchdog_s", 420)))
        return Guest(self.kernel, GuestConfig(**cfg), os.path.join(self.logdir, name), name)

    @property
    def staged(self) -> bool:
        return self.balloonctl_note == "staged"

    def probe_caps(self, g: Guest) -> dict[str, bool]:
        """Which balloonctl subcommands the staged binary has (asked in the guest)."""
        if self._caps is None:
            caps = {"binary": False, "status": False, "run": False}
            if self.staged:
                rc, _ = g.run(f"[ -x {BALLOONCTL} ]")
                caps["binary"] = rc == 0
                if caps["binary"]:
                    for sub in ("status", "run"):
                        rc, _ = g.run(f"{BALLOONCTL} {sub} --help >/dev/null 2>&1", timeout=60)
                        caps[sub] = rc == 0
            self._caps = caps
        return self._caps

    def caps(self) -> dict[str, bool]:
        """probe_caps with a throwaway guest when no scenario has probed yet."""
        if self._caps is None:
            if not self.staged:
                self._caps = {"binary": False, "status": False, "run": False}
            else:
                with self.guest("caps-probe") as g:
                    g.boot()
                    self.probe_caps(g)
        assert self._caps is not None
        return self._caps

    def daemon_missing(self) -> Optional[str]:
        """None when `balloonctl run` is usable, else why not."""
        if not self.staged:
            return f"balloonctl not available ({self.balloonctl_note})"
        if not self.caps()["run"]:
            return "balloonctl run not available in this build"
        return None


def mib(b: Optional[float]) -> Optional[float]:
    return None if b is None else round(b / MiB, 2)


def ms(s: Optional[float]) -> Optional[int]:
    return None if s is None else int(round(s * 1000))


def todo(what: str, **extra: Any) -> dict:
    """The result of a daemon-dependent half that is not written yet."""
    return {"passed": False, "reason": NOT_IMPLEMENTED, "todo": what, **extra}


# --------------------------------------------------------------------------
# Guest-side helpers for the daemon (ready for when `balloonctl run` exists)


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


def start_daemon(g: Guest, interval: float = 0.2, mode: str = "enforce", probe_target: bool = True,
                 extra: str = "") -> int:
    """Starts `balloonctl run` in the background; returns its pid (stderr -> /tmp/balloonctl.log)."""
    args = f"--interval {interval:g} --mode {mode}" + (" --probe-target" if probe_target else " --no-probe-target") + \
        (f" {extra}" if extra else "")
    out = g.check(f"{BALLOONCTL} run {args} >>/tmp/balloonctl.out 2>>/tmp/balloonctl.log & echo $!")
    return int(out.strip().splitlines()[-1])


def process_alive(g: Guest, pid: int) -> bool:
    rc, out = g.run(f"cat /proc/{pid}/status 2>/dev/null | grep '^State:'")
    return rc == 0 and " Z " not in out and "zombie" not in out


def daemon_log(g: Guest) -> str:
    _, out = g.run("cat /tmp/balloonctl.log 2>/dev/null")
    return out


def read_state(g: Guest) -> Optional[dict]:
    """/run/balloonctl/state.json as written by the daemon, or None.

    Format (BalloonKit DaemonState, version 1): pid, mode, interval_ms,
    limit_bytes, updated_boottime, balloons[] with kind, name, held,
    since_boottime (guest CLOCK_BOOTTIME seconds), releases, last_decision.
    """
    rc, out = g.run("cat /run/balloonctl/state.json 2>/dev/null")
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


def clock_offset(g: Guest, tries: int = 5) -> tuple[float, float]:
    """(host_time - guest_uptime, round trip) in seconds: maps guest
    CLOCK_BOOTTIME instants (state.json's *_boottime) onto the harness clock
    (Guest.now()). Under TCG the guest clock follows the host's. The reading
    with the shortest command round trip is kept; the error is at most half
    of that round trip."""
    best: Optional[tuple[float, float]] = None
    for _ in range(tries):
        t0 = g.now()
        out = g.check("cat /proc/uptime")
        t1 = g.now()
        cand = ((t0 + t1) / 2 - float(out.split()[0]), t1 - t0)
        if best is None or cand[1] < best[1]:
            best = cand
    assert best is not None
    return best


def wait_state(g: Guest, pred: Callable[[dict], bool], timeout: float, period: float = 0.1) -> dict:
    """Polls /run/balloonctl/state.json until pred(state); returns that state."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = read_state(g)
        if st is not None:
            last = st
            if pred(st):
                return st
        if time.monotonic() >= deadline:
            raise GuestTimeout(f"state.json: condition not met within {timeout}s (last: {json.dumps(last)[:600]})")
        time.sleep(period)


def is_held(st: dict) -> bool:
    return bool((state_hold(st) or {}).get("held"))


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


def log_lines(g: Guest) -> list[str]:
    return [ln for ln in daemon_log(g).splitlines() if ln.strip()]


def page_align(b: float) -> int:
    return int(b) // PAGE * PAGE


# Timing tolerance added to every "within N intervals" assertion: the sampler
# period (50 ms), the host<->guest clock mapping and QMP/TCG latency.
TOL_MS = 150


def verdict(res: dict, problems: list[str]) -> dict:
    """A scenario's result: passed when no problem was found, else the reasons."""
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


# --------------------------------------------------------------------------
# balloonctl status --json: where the numbers are


def status_numbers(doc: Any) -> dict[str, Any]:
    """The virtio balloon's documented sizes in `status --json` (README): the
    device's own `actual` (config space, exact), the kernel counter
    `current_bytes` (nr_balloon_pages lags up to ~1 s; balloon_inflate -
    balloon_deflate on 6.1) and `target_bytes` (config space num_pages)."""
    balloons = [b for b in (doc.get("balloons") or []) if isinstance(b, dict) and b.get("kind") == "virtio"]
    if len(balloons) != 1:
        return {"current_bytes": None, "counter_bytes": None, "target_bytes": None,
                "error": f"expected one virtio balloon, got {len(balloons)}"}
    b = balloons[0]
    return {"current_bytes": b.get("device_actual_bytes"), "counter_bytes": b.get("current_bytes"),
            "current_source": b.get("current_source"), "target_bytes": b.get("target_bytes"),
            "target_source": b.get("target_source")}


def run_status(g: Guest, timeout: float = 90.0) -> tuple[int, Optional[Any], str, str]:
    """Runs `balloonctl status --json --probe-target`; returns (rc, parsed JSON or None, stdout, stderr)."""
    rc, out = g.run(f"{BALLOONCTL} status --json --probe-target 2>/tmp/status.err", timeout=timeout)
    _, err = g.run("cat /tmp/status.err")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    return rc, doc, out, err


# --------------------------------------------------------------------------
# smoke


@scenario("smoke")
def smoke(ctx: Context) -> dict:
    """Boot; inflate to a 324 MiB balloon over QMP; the guest kernel counts it; deflate."""
    res: dict[str, Any] = {}
    size = 324 * MiB
    with ctx.guest("smoke", deflate_on_oom=True) as g:
        res["boot_s"] = round(g.boot(), 2)
        if ctx.staged:
            res["balloonctl_caps"] = ctx.probe_caps(g)
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


# --------------------------------------------------------------------------
# 1. status


@scenario("status")
def status(ctx: Context) -> dict:
    """`balloonctl status --json --probe-target` matches QMP (actual) and the host's
    target within one inflate step (1 MiB), at three sizes."""
    if not ctx.staged:
        return {"passed": False, "reason": f"balloonctl status not available ({ctx.balloonctl_note})"}
    sizes = [int(x) * MiB for x in ctx.opts.get("status_sizes_mib", (128, 324, 512))]
    res: dict[str, Any] = {"sizes_mib": [s // MiB for s in sizes], "tolerance_bytes": INFLATE_STEP, "points": []}
    with ctx.guest("status", deflate_on_oom=True) as g:
        res["boot_s"] = round(g.boot(), 2)
        rc, doc, out, err = run_status(g)
        if rc != 0 or doc is None:
            lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
            errs = [ln for ln in lines if ln.lower().startswith("error")]
            why = (errs or lines or ["no output"])[0][:200]
            return {**res, "passed": False, "stdout": out[-2000:], "stderr": err[-2000:],
                    "reason": f"balloonctl status not available (rc={rc}: {why})"}
        problems = []
        for size in sizes:
            g.set_balloon_size(size)
            g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            before = g.balloon_bytes()
            rc, doc, out, err = run_status(g)
            after = g.balloon_bytes()
            pt: dict[str, Any] = {"target_bytes": size, "qmp_balloon_bytes": after, "rc": rc}
            if rc != 0 or doc is None:
                pt["stdout"], pt["stderr"] = out[-2000:], err[-2000:]
                problems.append(f"{size // MiB} MiB: status failed rc={rc}")
                res["points"].append(pt)
                continue
            nums = status_numbers(doc)
            pt.update(nums)
            if nums["current_bytes"] is None or nums["target_bytes"] is None:
                pt["json"] = doc
                problems.append(f"{size // MiB} MiB: no device_actual_bytes/target_bytes for the virtio balloon ({nums.get('error', 'null')})")
            else:
                if before != after:
                    problems.append(f"{size // MiB} MiB: balloon moved during status ({before} -> {after})")
                if abs(nums["current_bytes"] - after) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status device_actual {nums['current_bytes']} != QMP {after}")
                counter = nums["counter_bytes"]
                if counter is None or abs(counter - after) > INFLATE_STEP:
                    # nr_balloon_pages is a per-cpu batched counter that lags
                    # up to ~1 s: read once more before calling it wrong.
                    time.sleep(1.5)
                    _, again, _, _ = run_status(g)
                    counter = status_numbers(again or {}).get("counter_bytes")
                    pt["counter_bytes_reread"] = counter
                if counter is None or abs(counter - after) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status current_bytes ({nums['current_source']}) {counter} != QMP {after}")
                if abs(nums["target_bytes"] - size) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status target {nums['target_bytes']} != host {size}")
            res["points"].append(pt)
        g.balloon(g.ram_bytes)
    return verdict(res, problems)


# --------------------------------------------------------------------------
# 2. kb_failure


def _kb_sizes(ctx: Context, ram_mib: int) -> dict[str, int]:
    ram = ram_mib * MiB
    lock = int(ram * float(ctx.opts.get("kb_lock_fraction", 0.5))) // MiB
    balloon = int(ram * float(ctx.opts.get("kb_balloon_fraction", 0.65))) // PAGE * PAGE
    return {"ram_bytes": ram, "lock_mib": lock, "balloon_bytes": balloon,
            # 192 MiB fits a 1 GiB guest with 512 MiB mlocked once the balloon
            # is held, on every kernel here (256 MiB is at the edge on 7.3, whose
            # kernel and per-cpu free lists keep ~100 MiB more). Without
            # balloonctl the balloon alone OOMs the guest before the workload.
            "workload_mib": int(ctx.opts.get("kb_workload_mib", 192))}


def _kb_prepare(g: Guest, lock_mib: int) -> dict[str, Any]:
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


def _kb_workload(g: Guest, mib_: int, hold_s: int = 2) -> dict[str, Any]:
    """Runs memhog; returns how it ended (exit status 137 = SIGKILL = OOM-killed)."""
    t0 = g.now()
    rc, out = g.run(f"memhog {mib_} {hold_s}", timeout=240, guest_timeout=200)
    prog = re.findall(r"MEMHOG-PROGRESS mib=(\d+)", out)
    ok = "MEMHOG-OK" in out
    return {"workload_mib": mib_, "workload_rc": rc, "workload_completed": ok and rc == 0,
            "workload_oom_killed": rc == 137, "workload_reached_mib": int(prog[-1]) if prog else 0,
            "workload_s": round(g.now() - t0, 2), "workload_tail": out.strip().splitlines()[-3:]}


def _oom_victims(g: Guest) -> list[str]:
    _, out = g.run("dmesg | grep -E 'Killed process|Out of memory' || true")
    return re.findall(r"Killed process \d+ \(([^)]+)\)", out)


def _first_oom(g: Guest, oom0: int, t_req: float) -> dict[str, Any]:
    """From the monitor lines: when oom_kill first rose after t_req, and the
    guest-counted balloon just before (1 s resolution)."""
    prev = None
    for t, kv in g.monitor_lines():
        if t < t_req:
            continue
        try:
            ok = int(kv.get("oom_kill", "0"))
        except ValueError:
            continue
        if ok > oom0:
            b = None
            if prev is not None:
                try:
                    b = (int(prev["balloon_inflate"]) - int(prev["balloon_deflate"])) * PAGE
                except (KeyError, ValueError):
                    b = None
            return {"first_oom_after_request_s": round(t - t_req, 1), "balloon_before_first_oom_bytes": b}
        prev = kv
    return {"first_oom_after_request_s": None, "balloon_before_first_oom_bytes": None}


def _console_oom(g: Guest) -> dict[str, Any]:
    """OOM evidence from the console, for when the guest is gone (panic)."""
    kills = g.console_lines(r"Out of memory: Killed process|Memory cgroup out of memory: Killed process")
    panic = g.console_lines(r"Kernel panic")
    return {"oom_kills": len(kills),
            "oom_victims": [re.search(r"\(([^)]+)\)", ln.text).group(1) for ln in kills
                            if re.search(r"\(([^)]+)\)", ln.text)],
            "guest_panic": panic[0].text.split("]", 1)[-1].strip() if panic else None}


def _kb_without(ctx: Context) -> dict:
    """Reproduces KB 340369 with no balloonctl: the guest hits OOM (or, when
    nothing killable is left, panics: "System is deadlocked on memory")."""
    sz = _kb_sizes(ctx, 1024)
    res: dict[str, Any] = {"lock_mib": sz["lock_mib"], "balloon_target_bytes": sz["balloon_bytes"],
                           "guest_panic": None}
    g = ctx.guest("kb_failure-without", mem_mib=1024, deflate_on_oom=False, swap_mib=0)
    keep: dict[str, Any] = {}
    try:
        _kb_without_run(g, sz, res, keep)
    except GuestError as e:
        if not (isinstance(e, GuestDied) or g.console_lines(r"Kernel panic")):
            raise
        # The guest died of it (panic=-1 ends QEMU): count from its console.
        res.update(_console_oom(g))
        res["error"] = f"{type(e).__name__}: {e}"
        res.setdefault("workload_completed", False)
        if "sampler" in keep and "t_req" in keep:
            res["max_balloon_bytes"] = keep["sampler"].max_balloon(since=keep["t_req"])
    res["reproduced"] = res["oom_kills"] > 0 or not res["workload_completed"] or res["guest_panic"] is not None
    return res


def _kb_without_run(g: Guest, sz: dict[str, int], res: dict[str, Any], keep: dict[str, Any]) -> None:
    with g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(_kb_prepare(g, sz["lock_mib"]))
        oom0 = g.vmstat().get("oom_kill", 0)
        with g.sampler(0.05) as s:
            keep["sampler"] = s
            t_req = keep["t_req"] = g.set_balloon_size(sz["balloon_bytes"])
            settle_s, actual = g.wait_settled(timeout=60, quiet=3)
            res["balloon_settle_s"] = round(settle_s, 2)
            res["balloon_reached_bytes"] = g.ram_bytes - actual
            # The balloon alone can already push the guest into OOM (any fork
            # or page-table allocation below the min watermark): count apart.
            oom_before = g.vmstat().get("oom_kill", 0) - oom0
            res["oom_kills_before_workload"] = oom_before
            res.update(_kb_workload(g, sz["workload_mib"]))
            time.sleep(1)
        mi = g.meminfo()
        res["oom_kills"] = g.vmstat().get("oom_kill", 0) - oom0
        res["oom_kills_during_workload"] = res["oom_kills"] - oom_before
        res["oom_victims"] = _oom_victims(g)
        res["memlock_survived"] = process_alive(g, res["memlock_pid"])
        res.update(_first_oom(g, oom0, t_req))
        res["max_balloon_bytes"] = s.max_balloon(since=t_req)
        res["memtotal_kb"] = mi.get("MemTotal")
        res["samples"] = len(s.samples)
        s.write_csv(os.path.join(g.logdir, "balloon-samples.csv"))
        g.balloon(g.ram_bytes)


def _kb_with(ctx: Context, probe_target: bool = True) -> dict:
    """The same guest and host request with `balloonctl run --mode enforce`.
    With the probe the daemon sees the host's target (preventive); without it
    (`--no-probe-target`) only the balloon's size (reactive): the host asks for
    64 MiB over the limit, the balloon crosses it, and the time above it is
    measured for real."""
    sz = _kb_sizes(ctx, 1024)
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {"lock_mib": sz["lock_mib"], "balloon_target_bytes": sz["balloon_bytes"],
                           "probe_target": probe_target}
    name = "kb_failure-with" if probe_target else "kb_failure-with-reactive"
    with ctx.guest(name, mem_mib=1024, deflate_on_oom=False, swap_mib=0) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(_kb_prepare(g, sz["lock_mib"]))
        pid, st = start_and_wait_daemon(g, interval=interval, probe_target=probe_target)
        res["interval_ms"] = st.get("interval_ms")
        off, rtt = clock_offset(g)
        res["clock_offset_rtt_ms"] = ms(rtt)
        oom0 = g.vmstat().get("oom_kill", 0)
        with g.sampler(0.05) as s:
            limit_at_request = read_state(g)["limit_bytes"]
            # Preventive: the KB's request (65 % of RAM). Reactive: a balloon
            # that crosses the limit by 64 MiB, so what is measured is the
            # daemon's reaction, not a race with the OOM killer (a balloon
            # racing past the limit into OOM outruns any interval: README).
            request = sz["balloon_bytes"] if probe_target else page_align(limit_at_request + 64 * MiB)
            res["balloon_target_bytes"] = request
            t_req = g.set_balloon_size(request)
            st = wait_state(g, is_held, timeout=30)
            hold = state_hold(st) or {}
            t_hold = float(hold["since_boottime"]) + off
            res["hold_reason"] = hold.get("reason")
            res["limit_bytes"] = st.get("limit_bytes")
            res["limit_at_request_bytes"] = limit_at_request
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=30)
            time.sleep(0.3)
            res["driver_bound_while_held"] = driver_bound(g)
            res.update(_kb_workload(g, sz["workload_mib"]))
            time.sleep(1)
        res["oom_kills"] = g.vmstat().get("oom_kill", 0) - oom0
        res["oom_victims"] = _oom_victims(g)
        res["memlock_survived"] = process_alive(g, res["memlock_pid"])
        res["daemon_alive"] = process_alive(g, pid)
        res["daemon_log_tail"] = log_lines(g)[-8:]
        s.write_csv(os.path.join(g.logdir, "balloon-samples.csv"))
    limit = res["limit_bytes"]
    res["reaction_ms"] = ms(t_hold - t_req)
    res["max_actual_bytes"] = s.max_balloon(since=t_req)
    res["over_limit_ms"] = ms(s.time_above(limit, since=t_req))
    t_cross = s.first_time(lambda b: b > limit, since=t_req)
    t_back = s.first_time(lambda b: b <= limit, since=max(t_hold, t_cross or t_hold))
    res["deflate_ms"] = ms(t_back - t_hold) if (t_cross is not None and t_back is not None) else 0
    # Sampler-side cross-check: the balloon back at 0 after its peak.
    series = s.balloon_series(since=t_req)
    t_peak = max(series, key=lambda x: x[1])[0] if series else t_req
    t_zero = s.first_time(lambda b: b == 0, since=t_peak)
    res["release_complete_ms"] = ms(t_zero - t_req) if t_zero is not None else None
    bound = (res["interval_ms"] or 0) + res["deflate_ms"] + TOL_MS
    problems = []
    if res["oom_kills"]:
        problems.append(f"{res['oom_kills']} OOM kill(s) with balloonctl ({res['oom_victims']})")
    if not res["workload_completed"]:
        problems.append(f"workload failed (rc={res['workload_rc']})")
    if res["over_limit_ms"] > bound:
        problems.append(f"balloon above the limit for {res['over_limit_ms']} ms > interval + deflate + {TOL_MS} ms = {bound} ms")
    if res["driver_bound_while_held"]:
        problems.append("virtio_balloon still bound while held")
    if not res["daemon_alive"]:
        problems.append("the daemon died")
    return verdict(res, problems)


@scenario("kb_failure", needs_daemon=True)
def kb_failure(ctx: Context) -> dict:
    """KB 340369, then the fix: 1 GiB guest, swap off, deflate-on-oom off, 50 % of
    memory mlock'ed (memlock), the host asks for a balloon of 65 % of guest
    memory, then a workload (memhog) needs memory. Without balloonctl the guest
    OOMs (oom_kill rises, the workload fails, or the guest panics); with
    `balloonctl run --interval 0.2 --mode enforce` it must not, and the
    balloon may exceed the daemon's limit for at most one interval plus the
    deflate time (+ TOL_MS). reaction_ms: from the host's QMP request to the
    hold (state.json since_boottime mapped onto the host clock).
    """
    without = _kb_without(ctx)
    missing = ctx.daemon_missing()
    if missing is None:
        try:
            with_half = _kb_with(ctx)
        except Exception as e:  # noqa: BLE001 - reported as the half's failure
            with_half = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
        try:
            reactive = _kb_with(ctx, probe_target=False)
        except Exception as e:  # noqa: BLE001 - reported as the half's failure
            reactive = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
    else:
        with_half = {"passed": False, "reason": NOT_IMPLEMENTED, "detail": missing}
        reactive = {"passed": False, "reason": NOT_IMPLEMENTED, "detail": missing}
    res = {
        "oom_kills_without": without["oom_kills"],
        "oom_kills_with": with_half.get("oom_kills"),
        "max_actual_bytes": with_half.get("max_actual_bytes"),   # max balloon size seen (bytes)
        "limit_bytes": with_half.get("limit_bytes"),
        "over_limit_ms": with_half.get("over_limit_ms"),
        "interval_ms": with_half.get("interval_ms"),
        "reaction_ms": with_half.get("reaction_ms"),
        "reactive": {k: reactive.get(k) for k in (
            "passed", "oom_kills", "max_actual_bytes", "limit_bytes", "over_limit_ms", "interval_ms",
            "reaction_ms", "deflate_ms", "reason")},
        "without": without,
        "with": with_half,
        "with_reactive": reactive,
    }
    problems = []
    if not without["reproduced"]:
        problems.append("the without-balloonctl half did not reproduce the OOM")
    if not with_half.get("passed"):
        if with_half.get("reason") == NOT_IMPLEMENTED and without["reproduced"]:
            return {**res, "passed": False, "reason": NOT_IMPLEMENTED, "detail": missing}
        problems.append("with balloonctl: " + str(with_half.get("reason")))
    if not reactive.get("passed") and reactive.get("reason") != NOT_IMPLEMENTED:
        problems.append("with balloonctl, reactive (--no-probe-target): " + str(reactive.get("reason")))
    return verdict(res, problems)


# --------------------------------------------------------------------------
# 3. hold_readmit


def _hold_readmit_machinery(ctx: Context) -> dict:
    """Without the daemon: a manual unbind/bind timed exactly as the daemon's
    release and re-admit are (validates the Sampler-based measurement)."""
    size = 324 * MiB
    with ctx.guest("hold_readmit-machinery", deflate_on_oom=True) as g:
        g.boot()
        vname = balloon_virtio_name(g)
        g.set_balloon_size(size)
        g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
        with g.sampler(0.05) as s:
            t0 = g.now()
            g.check(f"echo {vname} > /sys/bus/virtio/drivers/virtio_balloon/unbind")
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=30)
            time.sleep(0.2)
            t_rel = s.first_time(lambda b: b == 0, since=t0)
            t1 = g.now()
            g.check(f"echo {vname} > /sys/bus/virtio/drivers/virtio_balloon/bind")
            g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            time.sleep(0.2)
            t_back = s.first_time(lambda b: b == size, since=t1)
            t_start = s.first_time(lambda b: b > 0, since=t1)
        s.write_csv(os.path.join(g.logdir, "balloon-samples.csv"))
    return {
        "manual_release_ms": ms(t_rel - t0) if t_rel is not None else None,
        "manual_readmit_start_ms": ms(t_start - t1) if t_start is not None else None,
        "manual_readmit_full_ms": ms(t_back - t1) if t_back is not None else None,
        "passed": t_rel is not None and t_back is not None,
    }


@scenario("hold_readmit", needs_daemon=True)
def hold_readmit(ctx: Context) -> dict:
    """Over-limit target -> released within two intervals; target lowered below
    the re-admit threshold (limit x (1 - margin 0.05)) -> re-admitted within
    two intervals and the balloon reaches the target.

    release_ms: QMP request -> the daemon's hold (state.json since_boottime).
    readmit_ms: QMP request -> the first sample with the balloon growing again
    (the driver re-inflates as soon as it is bound). Both <= 2 x interval + TOL_MS.
    Without the daemon only the machinery check runs (manual unbind/bind).
    """
    missing = ctx.daemon_missing()
    if missing is not None:
        return {"passed": False, "reason": NOT_IMPLEMENTED, "detail": missing,
                "release_ms": None, "readmit_ms": None, "precheck": _hold_readmit_machinery(ctx)}
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    with ctx.guest("hold_readmit", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(_kb_prepare(g, 512))
        pid, st = start_and_wait_daemon(g, interval=interval)
        res["interval_ms"] = st.get("interval_ms")
        limit = st["limit_bytes"]
        res["limit_bytes"] = limit
        off, rtt = clock_offset(g)
        res["clock_offset_rtt_ms"] = ms(rtt)
        over = page_align(limit + 64 * MiB)
        below = page_align(limit * (1 - 0.05) - 32 * MiB)
        res.update(over_target_bytes=over, below_target_bytes=below)
        with g.sampler(0.05) as s:
            t0 = g.set_balloon_size(over)
            st = wait_state(g, is_held, timeout=30)
            t_hold = float(state_hold(st)["since_boottime"]) + off
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=30)
            res["bound_while_held"] = driver_bound(g)
            time.sleep(1.0)
            t1 = g.set_balloon_size(below)
            wait_state(g, lambda st: not is_held(st), timeout=30)
            took, _ = g.wait_actual(lambda a: a == g.ram_bytes - below, timeout=60)
            res["readmit_full_ms"] = ms(g.now() - t1)
            time.sleep(0.2)
            t_start = s.first_time(lambda b: b > 0, since=t1)
            res["bound_after_readmit"] = driver_bound(g)
            time.sleep(2 * interval + 0.3)
            res["still_readmitted"] = not is_held(read_state(g) or {})
        res["daemon_alive"] = process_alive(g, pid)
        res["daemon_log_tail"] = log_lines(g)[-8:]
        s.write_csv(os.path.join(g.logdir, "balloon-samples.csv"))
    res["release_ms"] = ms(t_hold - t0)
    t_zero = s.first_time(lambda b: b == 0, since=t_hold)
    res["release_complete_ms"] = ms(t_zero - t0) if t_zero is not None else None
    res["readmit_ms"] = ms(t_start - t1) if t_start is not None else None
    limit_ms = 2 * (res["interval_ms"] or 0) + TOL_MS
    problems = []
    if res["release_ms"] > limit_ms:
        problems.append(f"release took {res['release_ms']} ms > 2 intervals + {TOL_MS} ms")
    if res["readmit_ms"] is None or res["readmit_ms"] > limit_ms:
        problems.append(f"re-admit took {res['readmit_ms']} ms > 2 intervals + {TOL_MS} ms")
    if res["bound_while_held"]:
        problems.append("driver still bound while held")
    if not res["bound_after_readmit"] or not res["still_readmitted"]:
        problems.append("not (stably) re-admitted")
    if not res["daemon_alive"]:
        problems.append("the daemon died")
    return verdict(res, problems)


# --------------------------------------------------------------------------
# 4. crash_safety


@scenario("crash_safety", needs_daemon=True)
def crash_safety(ctx: Context) -> dict:
    """SIGKILL the daemon while it holds; restart; it resumes the hold without a
    second unbind (same `releases` count and `since_boottime`, no release or
    unbind in the new instance's log, the balloon stays at 0) and re-admits
    when the target drops below the threshold."""
    missing = ctx.daemon_missing()
    if missing is not None:
        return todo("balloonctl run", detail=missing)
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    with ctx.guest("crash_safety", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(_kb_prepare(g, 512))
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


# --------------------------------------------------------------------------
# 5. report_mode


@scenario("report_mode", needs_daemon=True)
def report_mode(ctx: Context) -> dict:
    """`balloonctl run --mode report` acts on nothing and logs what it would do:
    with an over-limit target the driver stays bound, the balloon reaches the
    host's target, and the log says `would release`."""
    missing = ctx.daemon_missing()
    if missing is not None:
        return todo("balloonctl run --mode report", detail=missing)
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    with ctx.guest("report_mode", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(_kb_prepare(g, 512))
        pid, st = start_and_wait_daemon(g, interval=interval, mode="report", probe_target=True)
        res["mode"] = st.get("mode")
        limit = st["limit_bytes"]
        over = page_align(limit + 64 * MiB)
        n0 = len(log_lines(g))
        g.set_balloon_size(over)
        g.wait_actual(lambda a: a == g.ram_bytes - over, timeout=60)
        time.sleep(5 * interval + 0.5)
        res["balloon_bytes"] = g.balloon_bytes()
        res["bound"] = driver_bound(g)
        lines = log_lines(g)[n0:]
        res["would_lines"] = [ln for ln in lines if "would " in ln][:3]
        res["acted_lines"] = [ln for ln in lines if re.search(r"notice balloonctl: .*\] (release|readmit) ", ln)][:3]
        res["daemon_alive"] = process_alive(g, pid)
        g.balloon(g.ram_bytes)
    problems = []
    if res["mode"] != "report":
        problems.append(f"state says mode={res['mode']}")
    if not res["bound"] or res["balloon_bytes"] != over:
        problems.append(f"report mode changed something: bound={res['bound']}, balloon={res['balloon_bytes']} (target {over})")
    if not any("would release" in ln for ln in res["would_lines"]):
        problems.append("no 'would release' in the log")
    if res["acted_lines"]:
        problems.append(f"report mode logged an action: {res['acted_lines'][0]}")
    if not res["daemon_alive"]:
        problems.append("the daemon died")
    return verdict(res, problems)


# --------------------------------------------------------------------------
# 6. hotplug


def _hotplug_machinery(ctx: Context) -> dict:
    """Without the daemon: device_del -> DEVICE_DELETED and the guest's virtio
    device disappears; device_add -> virtio_balloon binds and it inflates."""
    size = 128 * MiB
    pre: dict[str, Any] = {}
    with ctx.guest("hotplug-machinery", deflate_on_oom=True) as g:
        g.boot()
        g.set_balloon_size(size)
        g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
        pre.update(_unplug(g))
        pre.update(_replug(g))
        g.set_balloon_size(size)
        try:
            t, _ = g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            pre["reinflate_s"] = round(t, 2)
        except GuestError as e:
            pre["reinflate_error"] = str(e)
    pre["passed"] = bool(pre["guest_device_gone"] and pre["guest_bound_after_add"] and "reinflate_s" in pre)
    return pre


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


@scenario("hotplug", needs_daemon=True)
def hotplug(ctx: Context) -> dict:
    """QMP device_del of the balloon and device_add back: the daemon survives,
    logs both (udev remove / add events), and governs the new device (an
    over-limit target on it is held). Without the daemon only the machinery
    check runs."""
    missing = ctx.daemon_missing()
    if missing is not None:
        return {"passed": False, "reason": NOT_IMPLEMENTED, "detail": missing, "precheck": _hotplug_machinery(ctx)}
    interval = float(ctx.opts.get("interval", 0.2))
    res: dict[str, Any] = {}
    size = 128 * MiB
    with ctx.guest("hotplug", mem_mib=1024, deflate_on_oom=False) as g:
        res["boot_s"] = round(g.boot(), 2)
        res.update(_kb_prepare(g, 512))
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


# --------------------------------------------------------------------------
# 7. deflate_on_oom


@scenario("deflate_on_oom", needs_daemon=True)
def deflate_on_oom(ctx: Context) -> dict:
    """deflate-on-oom on and off: MemTotal moves only without it (kernel half:
    inflate 324 MiB, MemTotal before/after), and balloonctl's guest-size
    accounting stays right (status --json: memory.guest_bytes the same
    inflated and deflated, within 1 MiB; removes_from_memtotal == not on).
    Without balloonctl only the kernel half runs."""
    size = 324 * MiB
    res: dict[str, Any] = {}
    problems = []
    use_status = ctx.staged and ctx.caps().get("status", False)
    for dom in (True, False):
        key = "on" if dom else "off"
        r: dict[str, Any] = {}
        with ctx.guest(f"deflate_on_oom-{key}", deflate_on_oom=dom) as g:
            r["boot_s"] = round(g.boot(), 2)
            rc, feats = g.run("cat /sys/bus/virtio/drivers/virtio_balloon/virtio*/features")
            r["feature_bit2"] = feats.strip()[2:3] == "1" if rc == 0 else None
            mt0 = g.meminfo()["MemTotal"]
            st0 = run_status(g)[1] if use_status else None
            g.set_balloon_size(size)
            g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            g.wait_guest_balloon_pages(size // PAGE, timeout=10)
            mt1 = g.meminfo()["MemTotal"]
            st1 = run_status(g)[1] if use_status else None
            g.balloon(g.ram_bytes)
            g.wait_actual(lambda a: a == g.ram_bytes, timeout=60)
            mt2 = g.meminfo()["MemTotal"]
        r.update(memtotal_kb_before=mt0, memtotal_kb_inflated=mt1, memtotal_kb_after=mt2,
                 memtotal_drop_kb=mt0 - mt1)
        if r["feature_bit2"] is not dom:
            problems.append(f"{key}: DEFLATE_ON_OOM feature bit is {r['feature_bit2']}")
        if dom and mt1 != mt0:
            problems.append(f"on: MemTotal moved {mt0} -> {mt1} kB")
        if not dom and abs((mt0 - mt1) - size // 1024) > 1024:
            problems.append(f"off: MemTotal dropped {mt0 - mt1} kB, expected {size // 1024}")
        if mt2 != mt0:
            problems.append(f"{key}: MemTotal not restored after deflate ({mt0} -> {mt2})")
        if use_status:
            def guest_bytes(doc: Any) -> Optional[int]:
                return ((doc or {}).get("memory") or {}).get("guest_bytes")
            def removes(doc: Any) -> Optional[bool]:
                bs = (doc or {}).get("balloons") or []
                return bs[0].get("removes_from_memtotal") if bs else None
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
    res["precheck"] = {"passed": not [p for p in problems if "status" not in p and "balloonctl" not in p
                                      and "removes_from" not in p]}
    if not use_status:
        res.update(passed=False, reason=NOT_IMPLEMENTED,
                   detail=f"balloonctl status not available ({ctx.balloonctl_note})", problems=problems)
        return res
    return verdict(res, problems)
