"""End-to-end scenarios: each boots its own guest(s) and returns a result dict.

A scenario is a function ``f(ctx) -> dict`` registered with ``@scenario``; the
dict has at least ``passed`` (bool) and, when it failed, ``reason``. Raising
is fine too: the runner turns an exception into ``passed: false``.

Scenarios that need the daemon (``balloonctl run``), which does not exist yet,
have their guest setup and host-side measurement machinery here and return
``{"passed": false, "reason": "not implemented"}`` for the daemon half; each
one's docstring says exactly what remains. The runner fills the result keys
that the results JSON promises (see ``RESULT_KEYS``) with null when missing.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .guest import MiB, PAGE, Guest, GuestConfig, GuestDied, GuestError, Kernel

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
    args = f"--interval {interval:g} --mode {mode}" + (" --probe-target" if probe_target else "") + \
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


def clock_offset(g: Guest) -> float:
    """host_time - guest_uptime (seconds): maps guest CLOCK_BOOTTIME instants
    (state.json's *_boottime) onto the harness clock (Guest.now()). Under TCG
    the guest clock follows the host's; the command round trip (~20-50 ms) is
    halved out."""
    t0 = g.now()
    out = g.check("cat /proc/uptime")
    t1 = g.now()
    return (t0 + t1) / 2 - float(out.split()[0])


# --------------------------------------------------------------------------
# balloonctl status --json: where the numbers are


def _flatten(doc: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    out: list[tuple[tuple, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _flatten(v, path + (str(k),))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _flatten(v, path + (str(i),))
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out.append((path, doc))
    return out


def _norm(k: str) -> str:
    return re.sub(r"[^a-z0-9]", "", k.lower())


def status_numbers(doc: Any) -> dict[str, Any]:
    """Finds the balloon's current and target size (bytes) in status JSON.

    The status JSON is being written in parallel, so this accepts the usual
    spellings (snake or camel case): current = `device_actual_bytes`, else
    `current_bytes`/`current.bytes`/`actual_bytes`/`balloon_bytes`/`size_bytes`,
    else `current_pages`/`actual_pages` x 4096; target = `target_bytes` or
    `target.bytes`, else `target_pages`/`num_pages` x 4096. Paths under a
    `limit`, `pinned` or `memory` key are ignored.
    """
    leaves = []
    for path, v in _flatten(doc):
        comps = [_norm(c) for c in path]
        if any(c in ("limit", "limits", "pinned", "memory", "meminfo", "swap") for c in comps[:-1]):
            continue
        leaves.append((comps, path, v))

    def find(rules: list[tuple[Callable[[list[str]], bool], int]]) -> tuple[Optional[int], Optional[str]]:
        for pred, scale in rules:
            for comps, path, v in leaves:
                if pred(comps):
                    return int(v) * scale, ".".join(path)
        return None, None

    last = lambda *names: (lambda c: c[-1] in names)  # noqa: E731
    under = lambda parent, leaf: (lambda c: len(c) >= 2 and c[-2] in parent and c[-1] == leaf)  # noqa: E731
    cur, cur_path = find([
        (last("deviceactualbytes"), 1),
        (last("currentbytes", "actualbytes", "balloonbytes", "sizebytes"), 1),
        (under(("current", "actual", "size"), "bytes"), 1),
        (last("currentpages", "actualpages", "deviceactualpages"), PAGE),
    ])
    tgt, tgt_path = find([
        (last("targetbytes"), 1),
        (under(("target",), "bytes"), 1),
        (last("targetpages", "numpages"), PAGE),
    ])
    return {"current_bytes": cur, "current_path": cur_path, "target_bytes": tgt, "target_path": tgt_path}


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
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


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
                problems.append(f"{size // MiB} MiB: no recognisable current/target fields in the JSON")
            else:
                if before != after:
                    problems.append(f"{size // MiB} MiB: balloon moved during status ({before} -> {after})")
                if abs(nums["current_bytes"] - after) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status current {nums['current_bytes']} != QMP {after}")
                if abs(nums["target_bytes"] - size) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status target {nums['target_bytes']} != host {size}")
            res["points"].append(pt)
        g.balloon(g.ram_bytes)
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


# --------------------------------------------------------------------------
# 2. kb_failure


def _kb_sizes(ctx: Context, ram_mib: int) -> dict[str, int]:
    ram = ram_mib * MiB
    lock = int(ram * float(ctx.opts.get("kb_lock_fraction", 0.5))) // MiB
    balloon = int(ram * float(ctx.opts.get("kb_balloon_fraction", 0.65))) // PAGE * PAGE
    return {"ram_bytes": ram, "lock_mib": lock, "balloon_bytes": balloon,
            "workload_mib": int(ctx.opts.get("kb_workload_mib", 256))}


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


@scenario("kb_failure", needs_daemon=True)
def kb_failure(ctx: Context) -> dict:
    """KB 340369, then the fix: 1 GiB guest, swap off, deflate-on-oom off, 50 % of
    memory mlock'ed, the host asks for a balloon of 65 % of guest memory, then a
    workload needs memory. Without balloonctl the guest OOMs; with `balloonctl
    run` it must not, and the balloon may exceed the limit for at most one
    interval plus the deflate time.

    TODO (with half, needs `balloonctl run`): boot the same guest; memlock;
    `start_daemon(g, interval=0.2)`; wait until read_state() shows the daemon
    running and take its `limit_bytes`; start the Sampler; t_req =
    set_balloon_size(65 %); wait for the hold (state_hold(...)["held"], or
    driver_bound() false) -> reaction_ms = since_boottime + clock_offset(g)
    - t_req (cross-check with the sampler's first balloon==0 after t_req);
    interval_ms from state.json; over_limit_ms = sampler.time_above(limit_bytes, since=t_req);
    max_actual_bytes = sampler.max_balloon(since=t_req); run the workload;
    oom_kills_with = oom_kill delta. Pass if oom_kills_with == 0, the workload
    completed, and over_limit_ms <= interval_ms + the deflate time measured by
    smoke (unbind deflates synchronously, 0.14-0.26 s per the reference).
    """
    without = _kb_without(ctx)
    missing = ctx.daemon_missing()
    with_half = todo("with half: balloonctl run") if missing is None else \
        {"passed": False, "reason": NOT_IMPLEMENTED, "detail": missing}
    res = {
        "oom_kills_without": without["oom_kills"],
        "oom_kills_with": None,
        "max_actual_bytes": None,     # the with-half's max observed balloon size (bytes)
        "limit_bytes": None,
        "over_limit_ms": None,
        "interval_ms": None,
        "reaction_ms": None,
        "without": without,
        "with": with_half,
        "passed": False,
    }
    if not without["reproduced"]:
        res["reason"] = "the without-balloonctl half did not reproduce the OOM"
    else:
        res["reason"] = NOT_IMPLEMENTED
        res["detail"] = "without half reproduced the OOM; with half (balloonctl run) not implemented"
    return res


# --------------------------------------------------------------------------
# 3. hold_readmit


@scenario("hold_readmit", needs_daemon=True)
def hold_readmit(ctx: Context) -> dict:
    """Over-limit target -> released within two intervals; target lowered below
    the limit -> re-admitted within two intervals and the balloon reaches it.

    Implemented now: the machinery check. A manual unbind/bind in the guest,
    timed from the host with the Sampler exactly as the daemon's release and
    re-admit will be (manual_release_ms, manual_readmit_ms).

    TODO (needs `balloonctl run`): memlock so the limit is known and low;
    start_daemon(interval=I); read limit_bytes from state.json; t0 =
    set_balloon_size(limit + 64 MiB); release_ms = first sampler time with
    balloon == 0 after t0 (and driver_bound false), assert <= 2*I + deflate;
    t1 = set_balloon_size(limit - 64 MiB); readmit_ms = first time the driver
    is bound again / the balloon starts growing; assert <= 2*I and that the
    balloon reaches the target (wait_actual).
    """
    res: dict[str, Any] = {"release_ms": None, "readmit_ms": None}
    size = 324 * MiB
    with ctx.guest("hold_readmit", deflate_on_oom=True) as g:
        res["boot_s"] = round(g.boot(), 2)
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
        g.balloon(g.ram_bytes)
    res["precheck"] = {
        "manual_release_ms": ms(t_rel - t0) if t_rel is not None else None,
        "manual_readmit_start_ms": ms(t_start - t1) if t_start is not None else None,
        "manual_readmit_full_ms": ms(t_back - t1) if t_back is not None else None,
        "passed": t_rel is not None and t_back is not None,
    }
    missing = ctx.daemon_missing()
    res.update(passed=False, reason=NOT_IMPLEMENTED,
               detail=missing or "daemon half not written yet")
    return res


# --------------------------------------------------------------------------
# 4. crash_safety


@scenario("crash_safety", needs_daemon=True)
def crash_safety(ctx: Context) -> dict:
    """SIGKILL the daemon while it holds; restart; it resumes the hold without a
    second unbind and re-admits when safe.

    TODO (needs `balloonctl run`): memlock; start_daemon; over-limit target ->
    wait for the hold (driver unbound, state_hold(...)["held"]); note its
    `releases` count; `kill -9 <pid>`; check the driver stays unbound and
    state.json persists in /run; start the daemon again; assert it resumed
    the hold without a second unbind: `releases` unchanged, `since_boottime`
    unchanged, no bind in its log, and the sampler shows no re-inflation
    spike; lower the target below the limit -> bound again and the balloon
    reaches the target.
    """
    return todo("balloonctl run", detail=ctx.daemon_missing() or "daemon half not written yet")


# --------------------------------------------------------------------------
# 5. report_mode


@scenario("report_mode", needs_daemon=True)
def report_mode(ctx: Context) -> dict:
    """`balloonctl run --mode report` acts on nothing and logs what it would do.

    TODO (needs `balloonctl run`): memlock; start_daemon(mode="report");
    over-limit target; assert the driver stays bound, the balloon reaches the
    host's target (wait_actual), and the log says it would release; then
    lower the target and assert it logs the would-be re-admit.
    """
    return todo("balloonctl run --mode report", detail=ctx.daemon_missing() or "daemon half not written yet")


# --------------------------------------------------------------------------
# 6. hotplug


@scenario("hotplug", needs_daemon=True)
def hotplug(ctx: Context) -> dict:
    """QMP device_del of the balloon and device_add back: the daemon survives,
    logs both, and governs the new device.

    Implemented now: the machinery check without the daemon. device_del ->
    DEVICE_DELETED and the guest's virtio device disappears; device_add -> the
    guest binds virtio_balloon to the new device and it inflates to a target.

    TODO (needs `balloonctl run`): start_daemon before the unplug; after
    device_del assert process_alive and a log line about the removal; after
    device_add assert a log line about the new device, then drive it over
    the limit and assert the daemon releases it (driver_bound false).
    """
    res: dict[str, Any] = {}
    size = 128 * MiB
    pre: dict[str, Any] = {}
    with ctx.guest("hotplug", deflate_on_oom=True) as g:
        res["boot_s"] = round(g.boot(), 2)
        g.set_balloon_size(size)
        g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
        pre["device_del_s"] = round(g.device_del("balloon0", timeout=60), 2)
        t_del = g.now()
        gone_deadline = time.monotonic() + 30
        while balloon_virtio_name(g) is not None and time.monotonic() < gone_deadline:
            time.sleep(0.3)
        pre["guest_device_gone"] = balloon_virtio_name(g) is None
        pre["guest_gone_after_s"] = round(g.now() - t_del, 2)
        try:
            g.query_balloon()
            pre["query_without_device"] = "answered"
        except Exception as e:  # noqa: BLE001 - QEMU says no balloon
            pre["query_without_device"] = str(e)[:120]
        t_add = g.device_add()
        bound_deadline = time.monotonic() + 60
        while not driver_bound(g):
            if time.monotonic() > bound_deadline:
                break
            time.sleep(0.3)
        pre["guest_bound_after_add"] = driver_bound(g)
        pre["bound_after_add_s"] = round(g.now() - t_add, 2)
        pre["new_virtio"] = balloon_virtio_name(g)
        g.set_balloon_size(size)
        try:
            t, _ = g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            pre["reinflate_s"] = round(t, 2)
        except GuestError as e:
            pre["reinflate_error"] = str(e)
        g.balloon(g.ram_bytes)
    pre["passed"] = bool(pre["guest_device_gone"] and pre["guest_bound_after_add"] and "reinflate_s" in pre)
    res["precheck"] = pre
    res.update(passed=False, reason=NOT_IMPLEMENTED, detail=ctx.daemon_missing() or "daemon half not written yet")
    return res


# --------------------------------------------------------------------------
# 7. deflate_on_oom


@scenario("deflate_on_oom", needs_daemon=True)
def deflate_on_oom(ctx: Context) -> dict:
    """deflate-on-oom on and off: MemTotal moves only without it, and
    balloonctl's guest-size accounting stays right.

    Implemented now: the kernel half, one guest per setting: inflate 324 MiB
    and compare MemTotal before/after (on: unchanged; off: -324 MiB).

    TODO (needs balloonctl): in both guests, while inflated, run
    `balloonctl status --json` (or read the daemon's state.json) and assert
    its guest memory size is the same inflated and deflated (it must add the
    balloon back when MemTotal shrank, and not subtract it twice when not),
    and that it reports DEFLATE_ON_OOM matching the device.
    """
    size = 324 * MiB
    res: dict[str, Any] = {}
    problems = []
    for dom in (True, False):
        key = "on" if dom else "off"
        r: dict[str, Any] = {}
        with ctx.guest(f"deflate_on_oom-{key}", deflate_on_oom=dom) as g:
            r["boot_s"] = round(g.boot(), 2)
            rc, feats = g.run("cat /sys/bus/virtio/drivers/virtio_balloon/virtio*/features")
            r["feature_bit2"] = feats.strip()[2:3] == "1" if rc == 0 else None
            mt0 = g.meminfo()["MemTotal"]
            g.set_balloon_size(size)
            g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            g.wait_guest_balloon_pages(size // PAGE, timeout=10)
            mt1 = g.meminfo()["MemTotal"]
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
        res[key] = r
    res["precheck"] = {"passed": not problems, "problems": problems}
    res.update(passed=False, reason=NOT_IMPLEMENTED, detail=ctx.daemon_missing() or "balloonctl half not written yet")
    return res
