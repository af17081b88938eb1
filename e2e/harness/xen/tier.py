"""The xen tier: one Xen boot, a PV domU per kernel and domU configuration,
dom0 playing the host (e2e/README.md, "xen tier").

Scenarios (results under each kernel's ``xen`` entry in results.json):

* xen_status: memory=512,maxmem=1024; after each ``xl mem-set`` of
  512 (boot) -> 768 -> 384 -> 1024 -> 512 MiB, ``status --json`` gives kind
  xen, and the daemon (report mode, its metrics file) sizes the balloon and
  its target as dom0 sees them: the largest target dom0 set minus
  ``xl list`` / xenstore ``memory/target``. The guest size per step is
  compared across the kernels after both ran.
* xen_kb, xen_override, xen_readmit share one domU (memory=maxmem=1024, no
  swap, 512 MiB pinned in a tmpfs, see pin()), in this order:
  - xen_kb with balloonctl: ``run --mode enforce``, dom0 asks for a 65 %
    balloon (mem-set to 35 %); the guard holds the balloon at the limit (a
    partial hold) and memhog runs without an OOM kill;
  - xen_override: while held, dom0 sets a new, still too large target; the
    guard re-applies the hold (reaction_ms from the domU's 0.1 s samples);
  - xen_readmit: dom0 lowers its request below limit x (1 - margin); the
    guard lets go, the balloon follows the host;
  - xen_kb without balloonctl: the daemon stopped, dom0 asks for the 65 %
    balloon again and memhog runs: OOM kills, counted from the kernel's
    "Killed process" lines on the domU's console (the starved domU need not
    answer any more; it is destroyed next).
* dom0: balloonctl in dom0 reads dom0's own balloon after ``xl mem-set 0``.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from typing import Any, Callable, Optional

from ..errors import GuestError
from .host import DomU, XenHost, XenImages

MiB = 1 << 20
PAGE = 4096
SCENARIOS = ["xen_status", "xen_kb", "xen_override", "xen_readmit", "dom0"]
RESULT_KEYS = {
    "xen_status": ["passed", "steps", "guest_bytes"],
    "xen_kb": ["passed", "oom_kills_without", "oom_kills_with", "max_balloon_bytes", "limit_bytes",
               "over_limit_ms", "over_limit_ms_hold", "hold_bytes", "hold_reaction_ms", "xl_list_mib",
               "xenstore_target_kib"],
    "xen_override": ["passed", "reaction_ms"],
    "xen_readmit": ["passed", "reaction_ms"],
    "dom0": ["passed"],
}
INTERVAL = 1.0
# What a reaction may take beyond one daemon interval: the domU shares one
# emulated CPU with dom0 and Xen, and a tick there takes a good part of a
# second (more while the balloon moves pages, or on a loaded machine: the
# 7.3 domU was measured at 2.7 s for a hold and 3.6 s for a re-admit).
TCG_SLACK = 3.0
MARGIN = 0.05  # the run default (RunSetting.margin); the state's settings win
XEN = "/sys/devices/system/xen_memory/xen_memory0"
# The tier's waits assume a tick a second: --events-interval 1 keeps it so
# when the daemon's event wakeups work (their idle tick is 5 s by default, and
# the state and metrics read after each step would lag by up to that).
DAEMON = ("balloonctl run --mode {mode} --no-probe-target --interval 1 --events-interval 1 --state-dir /run/bc "
          "--metrics-file /run/bc.prom >/tmp/daemon.log 2>&1 & echo $!")
# A FIFO opened read-write never has a writer's EOF: `read -t` on it is a
# sleep without a fork (under TCG every fork of a PV process costs
# page-table hypercalls, so the domU's samplers use shell builtins only).
TICK = "[ -p /tmp/tick ] || mkfifo /tmp/tick"
NAP = "read -t {s} _ <>/tmp/tick"
# The domU's own record every 0.1 s: uptime, current_kb, target_kb,
# whether the daemon's state says held, and the state's limit_bytes (0: no
# state yet); nothing of it crosses the console until read back.
# state.json is pretty-printed: the top-level "limit_bytes" line comes
# before the balloons, and the first "held" line is the (only) balloon's.
SAMPLER = (TICK + "; ( echo -1000 >/proc/self/oom_score_adj; while :; do read -r up _ </proc/uptime; "
           f"read -r c <{XEN}/info/current_kb; read -r t <{XEN}/target_kb; h=0; lim=0; "
           "[ -f /run/bc/state.json ] && while read -r l; do case $l in *'\"limit_bytes\": '[0-9]*) "
           "lim=${l#*: }; lim=${lim%,};; *'\"held\":'*) "
           "case $l in *true*) h=1;; esac; break;; esac; done </run/bc/state.json; "
           "echo \"$up $c $t $h $lim\"; " + NAP.format(s="0.1") + "; done >/tmp/samples ) >/dev/null 2>&1 & echo $!")
# Without the guard: memhog starts as soon as the host's new target reaches
# the domU, while the balloon inflates (64 MiB take it 0.3-0.7 s; memhog's
# page faults are far slower under TCG): it is then the process the OOM
# killer finds holding the most memory. (A waiter that sat out the
# inflation was itself the victim: the starved domU OOM-kills anything that
# allocates.)
CONSUMER = (TICK + "; ( i=0; read -r t0 <{x}/target_kb; "
            "while read -r t <{x}/target_kb; [ \"$t\" = \"$t0\" ] && [ $i -lt 600 ]; do i=$((i+1)); "
            + NAP.format(s="0.1") + "; done; exec memhog {mib} 2 ) >/tmp/memhog.log 2>&1 & echo $!")
# Around one host write, every 20 ms (builtins only): the uptime when
# target_kb first shows the host's value, then when `done` (a shell
# condition on $t, target_kb) first holds. The 0.1 s sampler can miss the
# host's value: the guard may replace it within one of its gaps.
WATCH = (TICK + "; ( x=" + XEN + "; i=0; while read -r t <$x/target_kb; [ \"$t\" != {host} ] && [ $i -lt 1500 ]; "
         "do i=$((i+1)); " + NAP.format(s="0.02") + "; done; read -r up _ </proc/uptime; echo \"host $up $t\"; "
         "while [ $i -lt 3000 ]; do i=$((i+1)); read -r t <$x/target_kb; {done} && break; "
         + NAP.format(s="0.02") + "; done; read -r up _ </proc/uptime; echo \"done $up $t\" ) >/tmp/watch 2>&1 & echo $!")
# `done` for the re-admit: the daemon's state says not held.
NOT_HELD = ("{ s=1; while read -r l; do case $l in *'\"held\":'*) case $l in *false*) s=0;; esac; break;; "
            "esac; done </run/bc/state.json; [ $s = 0 ]; }")


def metrics(d: DomU) -> dict[str, int]:
    """The daemon's metrics file as {name: value} (first sample per family)."""
    rc, out = d.run("cat /run/bc.prom 2>/dev/null")
    found: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"^balloonctl_(\w+)(?:\{[^}]*\})? (\d+)$", line)
        if m and m.group(1) not in found:
            found[m.group(1)] = int(m.group(2))
    return found


def state(d: DomU) -> Optional[dict]:
    rc, out = d.run("cat /run/bc/state.json 2>/dev/null")
    try:
        return json.loads(out) if rc == 0 else None
    except ValueError:
        return None


def xen_record(st: Optional[dict]) -> dict:
    for b in (st or {}).get("balloons", []):
        if b.get("kind") == "xen":
            return b
    return {}


def wait(pred: Callable[[], Any], timeout: float, what: str, period: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise GuestError(f"{what}: not within {timeout:g}s")
        time.sleep(period)


def converged(d: DomU, target_mib: int, timeout: float = 60) -> dict[str, int]:
    """Waits until the domU's reservation reaches target_mib (within the 4 MiB
    hotplug block 7.3 may leave unpopulated)."""
    def ok():
        s = d.sysfs_kib()
        return s if s["target_kb"] == target_mib * 1024 and abs(s["current_kb"] - s["target_kb"]) <= 4096 else None
    return wait(ok, timeout, f"domU reservation at {target_mib} MiB")


Sample = tuple[float, int, int, int, int]  # uptime, current_kb, target_kb, held, limit_bytes


def samples(d: DomU) -> list[Sample]:
    out = d.ok("cat /tmp/samples")
    rows = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 5:
            try:
                rows.append((float(p[0]), int(p[1]), int(p[2]), int(p[3]), int(p[4])))
            except ValueError:
                pass
    return rows


def oom_kills(d: DomU) -> int:
    return int(d.ok("awk '$1 == \"oom_kill\" {print $2}' /proc/vmstat").strip() or 0)


def start_daemon(d: DomU, mode: str) -> int:
    pid = int(d.ok(DAEMON.format(mode=mode)).strip().splitlines()[-1])
    wait(lambda: metrics(d).get("limit_bytes") is not None, 60, f"balloonctl run --mode {mode} ticking")
    return pid


def stop(d: DomU, pid: int, what: str, timeout: int = 20) -> None:
    """SIGTERM, then waits (in the domU, without a fork per poll) until the
    process is gone or a zombie (PID 1, the busybox init, reaps orphans only
    when it next waits); SIGKILL after `timeout` seconds."""
    gone = (f"{{ [ -e /proc/{pid}/stat ] || break; read -r _ _ st _ </proc/{pid}/stat; "
            "[ \"$st\" = Z ] && break; }")
    rc, out = d.run(f"{TICK}; kill {pid}; i=0; while :; do {gone}; i=$((i+1)); "
                    f"[ $i -lt {timeout * 5} ] || {{ kill -9 {pid}; echo killed; break; }}; "
                    f"{NAP.format(s='0.2')}; done", timeout=timeout + 20)
    d.host.log(f"{what} (pid {pid}) stopped{' with SIGKILL' if 'killed' in out else ''}")


def pin(d: DomU, mib: int) -> None:
    """Memory the balloon cannot take: `mib` MiB written to a tmpfs (Shmem;
    with no swap it has nowhere to go, so balloonctl counts it as pinned,
    like mlocked memory). Not memlock: in a PV domU under TCG every page
    fault is a page-table hypercall, and `memlock 512` did not finish in
    120 s; write() fills the page cache without touching page tables."""
    d.ok(f"mkdir -p /pin && mount -t tmpfs -o size={mib + 16}m tmpfs /pin && "
         f"dd if=/dev/zero of=/pin/fill bs=1M count={mib} 2>&1 | tail -n 1", timeout=180)


# --- scenarios ---------------------------------------------------------------

# One domU command per xen_status step: wait (builtins only) until target_kb
# is dom0's target and the reservation reached it (within the 4 MiB
# hotplug block 7.3 may leave unpopulated), let the report-mode daemon
# tick twice, then print the sysfs values, `status --json` and the daemon's
# metrics, each section after an @ line.
STEP = (TICK + "; x=" + XEN + "; i=0; while read -r t <$x/target_kb; read -r c <$x/info/current_kb; "
        "{{ [ \"$t\" != {want} ] || [ $((c - t)) -gt 4096 ] || [ $((t - c)) -gt 4096 ]; }} && [ $i -lt 600 ]; "
        "do i=$((i+1)); " + NAP.format(s="0.1") + "; done; " + NAP.format(s="{settle}") + "; "
        "echo @sysfs; for f in target_kb info/current_kb info/low_kb info/high_kb; do read -r v <$x/$f; "
        "echo \"${{f#info/}} $v\"; done; while read -r k v _; do [ \"$k\" = MemTotal: ] && echo \"MemTotal $v\"; "
        "done </proc/meminfo; echo @status; balloonctl status --json; echo @prom; cat /run/bc.prom")


def step_view(d: DomU, want_mib: int) -> tuple[dict[str, int], dict, dict[str, int]]:
    """The domU's view once its reservation reached `want_mib`: sysfs (KiB),
    `status --json`, the daemon's metrics."""
    out = d.ok(STEP.format(want=want_mib * 1024, settle=int(2 * INTERVAL)), timeout=120)
    sec: dict[str, list[str]] = {}
    cur = None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line[1:].strip()
            sec[cur] = []
        elif cur is not None:
            sec[cur].append(line)
    sysfs = {k: int(v) for k, v in (l.split() for l in sec.get("sysfs", []) if len(l.split()) == 2)}
    if sysfs.get("target_kb") != want_mib * 1024 or abs(sysfs["current_kb"] - sysfs["target_kb"]) > 4096:
        raise GuestError(f"domU reservation not at {want_mib} MiB within 60 s: {sysfs}")
    m: dict[str, int] = {}
    for line in sec.get("prom", []):
        mm = re.match(r"^balloonctl_(\w+)(?:\{[^}]*\})? (\d+)$", line)
        if mm and mm.group(1) not in m:
            m[mm.group(1)] = int(mm.group(2))
    return sysfs, json.loads("\n".join(sec.get("status", []))), m


def xen_status(h: XenHost, label: str) -> dict:
    res: dict[str, Any] = {"steps": []}
    problems = []
    with DomU(h, f"st-{label}", label, 512, 1024) as d:
        res["domu_boot_s"] = d.boot_s
        start_daemon(d, "report")
        granted = 512
        for i, mib in enumerate((512, 768, 384, 1024, 512)):
            if i:
                d.mem_set(mib)
            granted = max(granted, mib)
            s, st, m = step_view(d, mib)
            xs, xl = d.dom0_view()
            balloons = st.get("balloons") or [{}]
            step = {"mib": mib, "kind": balloons[0].get("kind"), "sysfs": s, "xenstore_target_kib": xs,
                    "xl_list_mib": xl, "daemon_current_bytes": m.get("balloon_current_bytes"),
                    "daemon_target_bytes": m.get("balloon_target_bytes"),
                    "guest_bytes": m.get("guest_bytes"), "status_guest_bytes": st["memory"]["guest_bytes"]}
            res["steps"].append(step)
            want_target = (granted * 1024 - xs) * 1024
            want_current = (granted - xl) * MiB
            if step["kind"] != "xen":
                problems.append(f"{mib}: kind {step['kind']}")
            # The daemon's target against xenstore's: within one page. Its
            # balloon against xl list's MiB: within that rounding, plus the
            # 4 MiB hotplug block 7.3 may leave unpopulated.
            if step["daemon_target_bytes"] is None or abs(step["daemon_target_bytes"] - want_target) > PAGE:
                problems.append(f"{mib}: balloon target {step['daemon_target_bytes']} != {want_target}")
            if step["daemon_current_bytes"] is None or abs(step["daemon_current_bytes"] - want_current) > 5 * MiB:
                problems.append(f"{mib}: balloon {step['daemon_current_bytes']} != {want_current}")
            if s["target_kb"] != xs:
                problems.append(f"{mib}: target_kb {s['target_kb']} != xenstore {xs}")
    res["guest_bytes"] = [s["guest_bytes"] for s in res["steps"]]
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


def reaction(rows: list[Sample], host_kib: int, before_kib: int, done: Callable[[Sample], bool]) -> tuple[Optional[int], str]:
    """Milliseconds from the host's target reaching the domU (the first
    sample with target_kb == host_kib) to the first later sample that is
    `done`. When the guard answered before a sample caught the host's value,
    the last sample still showing `before_kib` bounds the host's write from
    below, and the result is an upper bound ("upper")."""
    t_host = next((r[0] for r in rows if r[2] == host_kib), None)
    kind = "exact"
    if t_host is None:
        first_done = next((r[0] for r in rows if done(r)), None)
        t_host = max((r[0] for r in rows if r[2] == before_kib and (first_done is None or r[0] < first_done)),
                     default=None)
        kind = "upper"
    if t_host is None:
        return None, "host target not seen"
    t_done = next((r[0] for r in rows if r[0] > t_host and done(r)), None)
    return (int((t_done - t_host) * 1000) if t_done is not None else None), kind


def watched(d: DomU, host_kib: int, done: str, act: Callable[[], None]) -> tuple[Optional[int], dict]:
    """Starts WATCH, runs `act` (dom0's write), returns the milliseconds from
    the host's value to `done` in the domU, and what the watch saw."""
    d.ok(WATCH.format(host=host_kib, done=done))
    act()
    def seen() -> Optional[dict]:
        out = d.ok("cat /tmp/watch")
        got = {p[0]: (float(p[1]), int(p[2])) for p in (l.split() for l in out.splitlines()) if len(p) == 3}
        return got if "done" in got else None
    got = wait(seen, 90, "the domU's watch of target_kb", period=1)
    t_host, v_host = got.get("host", (None, None))
    t_done, v_done = got["done"]
    info = {"watch_host_kib": v_host, "watch_done_kib": v_done}
    if t_host is None or v_host != host_kib:
        return None, info
    return int((t_done - t_host) * 1000), info


def over_limit_ms(rows: list[Sample], grant_kib: int) -> int:
    """How long the balloon (grant - current) was above the daemon's limit
    of the moment (the state file's, rewritten while held when it moves by
    a MiB or more: so by more than a MiB), from the domU's samples."""
    over = 0.0
    for (t0, c, _, _, lim), (t1, *_) in zip(rows, rows[1:]):
        if lim and (grant_kib - c) * 1024 > lim + MiB:
            over += t1 - t0
    return int(over * 1000)


def guarded_kb(h: XenHost, d: DomU, workload_mib: Optional[int]) -> dict[str, Any]:
    """The guard's half of xen_kb on a fresh 1024 MiB domU: pin, run --mode
    enforce, dom0 asks for a 65 % balloon, the guard holds at the limit;
    then (workload_mib) memhog runs. Leaves the domU held, the daemon and the
    sampler running (their pids in the result)."""
    r: dict[str, Any] = {}
    pin(d, 512)
    r["daemon_pid"] = start_daemon(d, "enforce")
    r["sampler_pid"] = int(d.ok(SAMPLER).strip().splitlines()[-1])
    t_prev = (samples(d) or [(0.0, 0, 0, 0, 0)])[-1][0]
    ask = int(1024 * 0.35)
    d.mem_set(ask)
    wait(lambda: xen_record(state(d)).get("held"), 60, "the guard holding the balloon", period=1)
    # The balloon settles at the hold (the reservation at target_kb).
    r["settled_sysfs"] = wait(lambda: (lambda s: s if abs(s["current_kb"] - s["target_kb"]) <= 4096 else None)(
        d.sysfs_kib()), 60, "the reservation at the guard's target_kb", period=1)
    rows = [row for row in samples(d) if row[0] >= t_prev]
    r["hold_reaction_ms"], r["hold_reaction_kind"] = reaction(
        rows, ask * 1024, 1024 * 1024, lambda row: ask * 1024 < row[2] < 1024 * 1024)
    # Over the limit while the guard took hold (before the workload).
    r["over_limit_ms_hold"] = over_limit_ms(rows, 1024 * 1024)
    oom0 = oom_kills(d)
    if workload_mib:
        rc, out = d.run(f"memhog {workload_mib} 2", timeout=240)
        r["workload_rc"] = rc
        r["workload_completed"] = "MEMHOG-OK" in out and rc == 0
        r["workload_tail"] = out.strip().splitlines()[-2:]
    r["oom_kills"] = oom_kills(d) - oom0
    rows = [row for row in samples(d) if row[0] > t_prev]
    st = state(d)
    limit = (st or {}).get("limit_bytes")
    r["limit_bytes"] = limit
    r["held"] = xen_record(st).get("held")
    # The Xen driver's event (docs/kernel-interfaces.md §10.1): the probe on
    # watch_target, attached in a real domU.
    r["wakeups"] = {k: ((st or {}).get("wakeups") or {}).get(k) for k in ("mode", "reason", "symbols")}
    s = d.sysfs_kib()
    r["final_sysfs"] = s
    r["hold_bytes"] = 1024 * MiB - s["target_kb"] * 1024
    r["max_balloon_bytes"] = (1024 * MiB - min(row[1] for row in rows) * 1024) if rows else None
    r["over_limit_ms"] = over_limit_ms(rows, 1024 * 1024) if rows else None
    r["samples"] = len(rows)
    r["xl_list_mib"] = d.xl_list_mib()
    r["xenstore_target_kib"] = d.xs("memory/target")
    r["daemon_log_tail"] = d.run("tail -n 5 /tmp/daemon.log")[1].strip().splitlines()
    return r


def unguarded_kb(h: XenHost, d: DomU, guarded: dict, workload_mib: int) -> dict[str, Any]:
    """The same domU without balloonctl: the daemon and the sampler stopped,
    dom0 asks for the 65 % balloon again, memhog runs once the balloon took
    what it could. The OOM kills are the kernel's "Killed process" lines on
    the domU's console (console loglevel 4 from here on: they are KERN_ERR),
    read by dom0, so the starved domU need not answer."""
    r: dict[str, Any] = {}
    stop(d, guarded["daemon_pid"], "balloonctl")
    stop(d, guarded["sampler_pid"], "the sampler")
    before = int(h.dom0_ok(f"domu-exec count {d.name} 'Killed process'").strip() or 0)
    d.ok("echo 4 >/proc/sys/kernel/printk")
    d.ok(CONSUMER.format(x=XEN, mib=workload_mib))
    ask = int(1024 * 0.35)
    d.mem_set(ask)

    def killed() -> Optional[int]:
        n = int(h.dom0_ok(f"domu-exec count {d.name} 'Killed process'").strip() or 0) - before
        return n if n > 0 else None
    wait(killed, 120, "an OOM kill in the domU without balloonctl", period=1)
    r["xl_list_mib"] = d.xl_list_mib()
    r["xenstore_target_kib"] = d.xs("memory/target")
    time.sleep(2)
    r["oom_kills"] = killed() or 0
    _, log = h.dom0(f"grep -a 'Killed process' /var/log/xen/console/guest-{d.name}.log | tail -n 3")
    r["kills"] = [l.strip() for l in log.strip().splitlines()]
    return r


def kb_verdict(guarded: dict, unguarded: Optional[dict]) -> dict:
    res: dict[str, Any] = {"with": guarded, "without": unguarded,
                           "hold_reaction_kind": guarded.get("hold_reaction_kind")}
    res["oom_kills_without"] = (unguarded or {}).get("oom_kills")
    res["oom_kills_with"] = guarded.get("oom_kills")
    for k in ("max_balloon_bytes", "limit_bytes", "over_limit_ms", "over_limit_ms_hold", "hold_bytes",
              "xl_list_mib", "xenstore_target_kib", "hold_reaction_ms", "wakeups"):
        res[k] = guarded.get(k)
    problems = []
    if unguarded is None:
        problems.append("the run without balloonctl did not happen")
    elif (unguarded.get("oom_kills") or 0) <= 0:
        problems.append("no OOM kill without balloonctl")
    if guarded.get("oom_kills") != 0:
        problems.append(f"{guarded.get('oom_kills')} OOM kills with balloonctl")
    if not guarded.get("workload_completed"):
        problems.append(f"memhog did not complete with balloonctl (rc {guarded.get('workload_rc')})")
    if not guarded.get("held"):
        problems.append("the guard does not hold at the end")
    wakeups = guarded.get("wakeups") or {}
    if wakeups.get("mode") != "events" or "watch_target" not in (wakeups.get("symbols") or []):
        problems.append(f"the daemon does not wake on watch_target: {wakeups}")
    limit = guarded.get("limit_bytes") or 0
    hold = guarded.get("hold_bytes") or 0
    asked = (1024 - int(1024 * 0.35)) * MiB
    # A partial hold: the balloon's target at the limit (within target_kb's
    # KiB rounding and the limit's movement with the workload), not released.
    if not (0 < hold < asked):
        problems.append(f"hold {hold} is not a partial hold (host asked {asked})")
    if limit and abs(hold - limit) > 16 * MiB:
        problems.append(f"hold {hold} not at the limit {limit}")
    # The hold is written within one interval (+ TCG_SLACK) of the
    # host's target reaching the domU.
    rx = guarded.get("hold_reaction_ms")
    if rx is None or rx > (INTERVAL + TCG_SLACK) * 1000:
        problems.append(f"the hold came {rx} ms after the host's target (more than one interval + {TCG_SLACK:g} s)")
    # Until the workload: never over the limit longer than one interval
    # (+ TCG_SLACK). During it the workload's own memory (pinned: no swap)
    # lowers the limit below a balloon Xen cannot shrink back (`xl mem-set`
    # set max_pages): that time is in over_limit_ms, reported, not failed.
    oh = guarded.get("over_limit_ms_hold")
    if oh is None or oh > (INTERVAL + TCG_SLACK) * 1000:
        problems.append(f"over the limit {oh} ms while the guard took hold")
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


def override_on(d: DomU) -> dict:
    """The override on a domU the guard holds."""
    res: dict[str, Any] = {}
    held_kb = d.sysfs_kib()["target_kb"]
    res["held_target_kb"] = held_kb
    new = int(1024 * 0.30)
    res["reaction_ms"], watch = watched(d, new * 1024, '[ "$t" != ' + str(new * 1024) + ' ]',
                                        lambda: d.mem_set(new))
    res.update(watch)
    res["reaction_kind"] = "watch, 20 ms"
    res["final_target_kb"] = d.sysfs_kib()["target_kb"]
    res["xenstore_target_kib"] = d.xs("memory/target")
    res["held"] = xen_record(state(d)).get("held")
    ok = res["reaction_ms"] is not None and res["reaction_ms"] <= (INTERVAL + TCG_SLACK) * 1000 and res["held"]
    res["passed"] = bool(ok)
    if not ok:
        res["reason"] = f"no re-hold within one interval (+{TCG_SLACK:g} s of TCG slack): {res}"
    return res


def readmit_on(d: DomU) -> dict:
    """The re-admit on a domU the guard holds."""
    res: dict[str, Any] = {}
    st = wait(lambda: (lambda s: s if xen_record(s).get("held") else None)(state(d)), 60,
              "the guard holding", period=1)
    held_kb = d.sysfs_kib()["target_kb"]
    limit = st["limit_bytes"]
    margin = float((st.get("settings") or {}).get("margin", MARGIN))
    # A balloon below limit x (1 - margin), with a quarter of it to spare.
    balloon = int(limit * (1 - margin) * 0.75)
    new = 1024 - balloon // MiB
    res.update(held_target_kb=held_kb, limit_bytes=limit, host_target_mib=new)
    res["reaction_ms"], watch = watched(d, new * 1024, NOT_HELD, lambda: d.mem_set(new))
    res.update(watch)
    res["reaction_kind"] = "watch, 20 ms"
    s = converged(d, new, timeout=60)
    res["final_sysfs"] = s
    res["held"] = xen_record(state(d)).get("held")
    res["xenstore_target_kib"] = d.xs("memory/target")
    ok = (res["held"] is False and res["final_sysfs"]["target_kb"] == new * 1024
          and res["reaction_ms"] is not None and res["reaction_ms"] <= (INTERVAL + TCG_SLACK) * 1000)
    res["passed"] = bool(ok)
    if not ok:
        res["reason"] = f"the guard did not let go to the host's target within one interval: {res}"
    return res


def kb_domu(h: XenHost, label: str, selected: list[str], workload_mib: int) -> dict[str, dict]:
    """xen_kb, xen_override and xen_readmit (those selected) on one domU."""
    out: dict[str, dict] = {}
    names = [n for n in ("xen_kb", "xen_override", "xen_readmit") if n in selected]

    def failed(ex: BaseException) -> dict:
        return {"passed": False, "reason": f"{type(ex).__name__}: {ex}", "traceback": traceback.format_exc()}
    t = time.monotonic()
    with DomU(h, f"kb-{label}", label, 1024, 1024) as d:
        try:
            guarded = guarded_kb(h, d, workload_mib if "xen_kb" in names else None)
        except Exception as ex:  # noqa: BLE001 - every scenario of the domU fails
            return {n: failed(ex) for n in names}
        if "xen_kb" in names:
            out["xen_kb"] = {"duration_s": round(time.monotonic() - t, 1), "domu_boot_s": d.boot_s}
        for name, fn in (("xen_override", override_on), ("xen_readmit", readmit_on)):
            if name in names:
                t1 = time.monotonic()
                try:
                    out[name] = fn(d)
                except Exception as ex:  # noqa: BLE001
                    out[name] = failed(ex)
                out[name]["duration_s"] = round(time.monotonic() - t1, 1)
                out[name]["domu"] = "shared with xen_kb"
        if "xen_kb" in names:
            t1 = time.monotonic()
            try:
                unguarded = unguarded_kb(h, d, guarded, workload_mib)
            except Exception as ex:  # noqa: BLE001
                unguarded = failed(ex)
            r = kb_verdict(guarded, unguarded if "oom_kills" in unguarded else None)
            if "reason" in unguarded and "oom_kills" not in unguarded:
                r["reason"] = f"{r.get('reason', '')}; without balloonctl: {unguarded['reason']}"
            r["duration_s"] = round(out["xen_kb"]["duration_s"] + time.monotonic() - t1, 1)
            r["domu_boot_s"] = d.boot_s
            out["xen_kb"] = r
    return out


def dom0(h: XenHost) -> dict:
    res: dict[str, Any] = {}
    h.dom0_ok("balloonctl run --mode report --no-probe-target --interval 1 --events-interval 1 --state-dir /run/bc "
              "--metrics-file /run/bc.prom >/tmp/daemon.log 2>&1 & echo $! >/run/bc.pid")
    time.sleep(3)
    h.dom0_ok("xl mem-set 0 768m")
    def reached():
        _, out = h.dom0(f"cat {XEN}/info/current_kb")
        return out.strip().isdigit() and abs(int(out) - 768 * 1024) <= 4096
    wait(reached, 60, "dom0 at 768 MiB")
    time.sleep(2)
    st = json.loads(h.dom0_ok("balloonctl status --json"))
    _, prom = h.dom0("cat /run/bc.prom")
    m = {mm.group(1): int(mm.group(2)) for mm in re.finditer(r"^balloonctl_(\w+)\{[^}]*\} (\d+)$", prom, re.M)}
    h.dom0("kill $(cat /run/bc.pid); xl mem-set 0 1024m")
    b = (st.get("balloons") or [{}])[0]
    res.update(kind=b.get("kind"), driver=b.get("driver"), daemon_current_bytes=m.get("balloon_current_bytes"),
               daemon_target_bytes=m.get("balloon_target_bytes"))
    ok = (b.get("kind") == "xen" and res["daemon_target_bytes"] == 256 * MiB
          and res["daemon_current_bytes"] is not None and abs(res["daemon_current_bytes"] - 256 * MiB) <= 4 * MiB)
    res["passed"] = bool(ok)
    if not ok:
        res["reason"] = f"dom0's balloon not read as 256 MiB of Xen balloon: {res}"
    return res


def describe(name: str, r: dict) -> str:
    if name == "xen_kb":
        return (f"OOM kills without {r.get('oom_kills_without')}, with {r.get('oom_kills_with')}; "
                f"hold {(r.get('hold_bytes') or 0) >> 20} MiB at limit {(r.get('limit_bytes') or 0) >> 20} MiB, "
                f"over limit {r.get('over_limit_ms_hold')} ms taking hold, {r.get('over_limit_ms')} ms in all (the workload lowers the limit); hold after {r.get('hold_reaction_ms')} ms; dom0 sees xl {r.get('xl_list_mib')} MiB, "
                f"xenstore target {r.get('xenstore_target_kib')} KiB; wakes on "
                f"{','.join((r.get('wakeups') or {}).get('symbols') or []) or 'nothing'}")
    if name in ("xen_override", "xen_readmit"):
        return f"reaction {r.get('reaction_ms')} ms"
    if name == "xen_status":
        g = [x >> 20 for x in (r.get("guest_bytes") or []) if x]
        return f"guest MiB per step {g}" + (f"; {r['same_guest']}" if r.get("same_guest") else "")
    return ""


def run_tier(work: str, results_dir: str, labels: list[str], selected: list[str], opts: dict,
             entry_for: Callable[[str], dict], write: Callable[[], None]) -> None:
    t0 = time.monotonic()
    logdir = os.path.join(results_dir, "xen")
    entries = {l: entry_for(l) for l in labels}
    for e in entries.values():
        e["xen"] = {n: {k: None for k in RESULT_KEYS[n]} | {"passed": None, "skipped": True}
                    for n in SCENARIOS}
    try:
        images = XenImages.load(work, labels)
    except (OSError, KeyError) as e:
        for e_ in entries.values():
            e_["xen"]["error"] = f"xen images not available: {e}"
            for n in selected:
                e_["xen"][n] = {"passed": False, "reason": e_["xen"]["error"]}
        write()
        return
    # What the hold at the limit leaves free (about 150 MiB next to the 512
    # pinned) with room to spare: on Xen the guard cannot take pages back
    # once the balloon gave them (docs/kernel-interfaces.md §3.1), and
    # without swap the workload's own memory lowers the limit as it grows.
    workload = int(opts.get("xen_kb_workload_mib", 64))

    def report(label: str, name: str, r: dict) -> None:
        entries[label]["xen"][name] = {k: None for k in RESULT_KEYS[name]} | r
        print(f"[xen {label}] {name}: {'PASS' if r.get('passed') else 'FAIL'} ({r.get('duration_s')} s) "
              f"{r.get('reason', '') if not r.get('passed') else describe(name, r)}", flush=True)
        write()
    with XenHost(images, logdir) as h:
        boot = h.boot()
        for l, e in entries.items():
            k = images.domu_kernels[l]
            if not e.get("package"):
                e.update(kernel=k.get("KVER"), package=k.get("PKG"), package_version=k.get("PKG_VERSION"))
            e["xen"]["xen_version"] = images.xen_version
            e["xen"]["dom0_kernel"] = images.dom0_kver
            e["xen"]["xen_boot_s"] = round(boot, 1)
        print(f"[xen] Xen {images.xen_version} + dom0 {images.dom0_kver} up in {boot:.1f} s", flush=True)
        for label in labels:
            if "xen_status" in selected:
                print(f"[xen {label}] xen_status ...", flush=True)
                t = time.monotonic()
                try:
                    r = xen_status(h, label)
                except Exception as ex:  # noqa: BLE001 - a scenario error is a failed scenario
                    r = {"passed": False, "reason": f"{type(ex).__name__}: {ex}", "traceback": traceback.format_exc()}
                r["duration_s"] = round(time.monotonic() - t, 1)
                report(label, "xen_status", r)
            kb = [n for n in ("xen_kb", "xen_override", "xen_readmit") if n in selected]
            if kb:
                # One domU serves the three (a domU boot and the 512 MiB pin
                # cost about 40 s under TCG).
                print(f"[xen {label}] {', '.join(kb)} (one domU) ...", flush=True)
                for name, r in kb_domu(h, label, selected, workload).items():
                    report(label, name, r)
        if "dom0" in selected:
            t = time.monotonic()
            try:
                r = dom0(h)
            except Exception as ex:  # noqa: BLE001
                r = {"passed": False, "reason": f"{type(ex).__name__}: {ex}", "traceback": traceback.format_exc()}
            r["duration_s"] = round(time.monotonic() - t, 1)
            print(f"[xen] dom0: {'PASS' if r.get('passed') else 'FAIL'} ({r['duration_s']} s) {r.get('reason', '')}",
                  flush=True)
            for e in entries.values():
                e["xen"]["dom0"] = r
    # The same VM on both kernels: the guest size per xen_status step.
    st = [entries[l]["xen"]["xen_status"] for l in labels if entries[l]["xen"]["xen_status"].get("guest_bytes")]
    if len(st) >= 2:
        a, b = st[0]["guest_bytes"], st[1]["guest_bytes"]
        diffs = [abs(x - y) for x, y in zip(a, b) if x and y]
        same = bool(diffs) and max(diffs) <= 32 * MiB
        for r in st:
            r["same_guest"] = f"guest size across kernels within {max(diffs) >> 20} MiB" if diffs else "not compared"
            if not same:
                r["passed"] = False
                r["reason"] = f"the guest size differs across kernels by up to {max(diffs) >> 20 if diffs else '?'} MiB"
    wall = round(time.monotonic() - t0, 1)
    for e in entries.values():
        e["xen"]["wall_s"] = wall
    write()
