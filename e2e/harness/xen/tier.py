"""The xen tier: one Xen boot, a fresh PV domU per scenario on each domU
kernel, dom0 playing the host (e2e/README.md, "xen tier").

Scenarios (results under each kernel's ``xen`` entry in results.json):

* xen_status: memory=512,maxmem=1024; after each ``xl mem-set`` of
  512 (boot) -> 768 -> 384 -> 1024 -> 512 MiB, ``status --json`` gives kind
  xen, and the daemon (report mode, its metrics file) sizes the balloon and
  its target as dom0 sees them: the largest target dom0 set minus
  ``xl list`` / xenstore ``memory/target``. The guest size per step is
  compared across the kernels after both ran.
* xen_kb: memory=maxmem=1024, no swap, 512 MiB pinned (tmpfs, see pin()),
  dom0 asks for a 65 % balloon (mem-set to 35 %), then memhog: OOM kills without
  balloonctl, none with ``run --mode enforce`` holding the balloon at the
  limit (a partial hold).
* xen_override: while held, dom0 sets a new, still too large target; the
  guard re-applies the hold (reaction_ms from the domU's 0.1 s samples).
* xen_readmit: while held, dom0 lowers its request below
  limit x (1 - margin); the guard lets go, the balloon follows the host.
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
               "over_limit_ms", "hold_bytes", "xl_list_mib", "xenstore_target_kib"],
    "xen_override": ["passed", "reaction_ms"],
    "xen_readmit": ["passed", "reaction_ms"],
    "dom0": ["passed"],
}
INTERVAL = 1.0
MARGIN = 0.05  # the run default (RunSetting.margin); the state's settings win
XEN = "/sys/devices/system/xen_memory/xen_memory0"
DAEMON = ("balloonctl run --mode {mode} --no-probe-target --interval 1 --state-dir /run/bc "
          "--metrics-file /run/bc.prom >/tmp/daemon.log 2>&1 & echo $!")
# The domU's own record every 0.1 s: uptime, current_kb, target_kb and
# whether the daemon's state says held (nothing of it crosses the console
# until read back).
SAMPLER = ("( echo -1000 >/proc/self/oom_score_adj; while :; do read up idle </proc/uptime; "
           f"c=$(cat {XEN}/info/current_kb); t=$(cat {XEN}/target_kb); "
           "h=$(grep -o '\"held\": *[a-z]*' /run/bc/state.json 2>/dev/null | head -n 1 | grep -c true); "
           "echo \"$up $c $t $h\"; sleep 0.1; done >/tmp/samples ) >/dev/null 2>&1 & echo started")


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


def samples(d: DomU) -> list[tuple[float, int, int, int]]:
    out = d.ok("cat /tmp/samples")
    rows = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4:
            try:
                rows.append((float(p[0]), int(p[1]), int(p[2]), int(p[3])))
            except ValueError:
                pass
    return rows


def oom_kills(d: DomU) -> int:
    return int(d.ok("awk '$1 == \"oom_kill\" {print $2}' /proc/vmstat").strip() or 0)


def _try_oom_kills(d: DomU) -> Optional[int]:
    """oom_kill + 1 (so that 0 kills is truthy for wait()), or None while the
    domU does not answer."""
    try:
        rc, out = d.run("awk '$1 == \"oom_kill\" {print $2}' /proc/vmstat", timeout=30)
    except GuestError:
        return None
    return int(out.strip()) + 1 if rc == 0 and out.strip().isdigit() else None


def start_daemon(d: DomU, mode: str) -> None:
    d.ok(DAEMON.format(mode=mode))
    wait(lambda: metrics(d).get("limit_bytes") is not None, 60, f"balloonctl run --mode {mode} ticking")


def pin(d: DomU, mib: int) -> None:
    """Memory the balloon cannot take: `mib` MiB written to a tmpfs (Shmem;
    with no swap it has nowhere to go, so balloonctl counts it as pinned,
    like mlocked memory). Not memlock: in a PV domU under TCG every page
    fault is a page-table hypercall, and `memlock 512` did not finish in
    120 s; write() fills the page cache without touching page tables."""
    d.ok(f"mkdir -p /pin && mount -t tmpfs -o size={mib + 16}m tmpfs /pin && "
         f"dd if=/dev/zero of=/pin/fill bs=1M count={mib} 2>&1 | tail -n 1", timeout=180)


# --- scenarios ---------------------------------------------------------------

def xen_status(h: XenHost, label: str) -> dict:
    res: dict[str, Any] = {"steps": []}
    problems = []
    with DomU(h, f"st-{label}", label, 512, 1024) as d:
        res["domu_boot_s"] = d.boot_s
        start_daemon(d, "report")
        granted = 512
        for mib in (512, 768, 384, 1024, 512):
            if mib != 512 or granted != 512:
                d.mem_set(mib)
            granted = max(granted, mib)
            s = converged(d, mib)
            time.sleep(2 * INTERVAL)
            st = d.status_json()
            m = metrics(d)
            xs = d.xs("memory/target")
            xl = d.xl_list_mib()
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
            # Metrics are rounded down to MiB; xl list to MiB; 7.3 may lack a 4 MiB block.
            if step["daemon_target_bytes"] is None or abs(step["daemon_target_bytes"] - want_target) > MiB:
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


def _kb_run(h: XenHost, label: str, guard: bool, workload_mib: int,
            then: Optional[Callable[[DomU], None]] = None) -> dict[str, Any]:
    r: dict[str, Any] = {}
    with DomU(h, f"kb{int(guard)}-{label}", label, 1024, 1024) as d:
        pin(d, 512)
        if guard:
            start_daemon(d, "enforce")
        d.ok(SAMPLER)
        oom0 = oom_kills(d)
        ask = int(1024 * 0.35)
        d.mem_set(ask)
        time.sleep(8)
        if guard:
            wait(lambda: xen_record(state(d)).get("held"), 180, "the guard holding the balloon", period=1)
        if guard:
            rc, out = d.run(f"memhog {workload_mib} 2", timeout=200)
            r["workload_rc"] = rc
            r["workload_completed"] = "MEMHOG-OK" in out and rc == 0
            time.sleep(2)
        else:
            # Without the guard the balloon leaves the domU too little to
            # answer (an OOM storm): memhog runs in the background, dom0
            # waits without talking to the domU, records what it sees, then
            # gives the memory back. The oom_kill counter keeps what happened.
            d.ok(f"memhog {workload_mib} 2 >/tmp/memhog.log 2>&1 & echo $!")
            time.sleep(float(90))
        r["xl_list_mib"] = d.xl_list_mib()
        r["xenstore_target_kib"] = d.xs("memory/target")
        if not guard:
            d.mem_set(1024)
            time.sleep(5)
        r["oom_kills"] = wait(lambda: _try_oom_kills(d), 150, "the domU's oom_kill counter", period=2) - 1 - oom0
        rows = samples(d)
        r["min_current_kb"] = min(c for _, c, _, _ in rows) if rows else None
        r["max_balloon_bytes"] = (1024 * MiB - r["min_current_kb"] * 1024) if rows else None
        if guard:
            st = state(d)
            limit = (st or {}).get("limit_bytes")
            r["limit_bytes"] = limit
            rec = xen_record(st)
            r["held"] = rec.get("held")
            s = d.sysfs_kib()
            r["hold_bytes"] = 1024 * MiB - s["target_kb"] * 1024
            r["final_sysfs"] = s
            # Over the limit: samples whose balloon (grant - current) exceeds
            # the limit the daemon wrote last, by more than a page.
            over = 0.0
            if limit and rows:
                for (t0, c, _, _), (t1, _, _, _) in zip(rows, rows[1:]):
                    if 1024 * MiB - c * 1024 > limit + PAGE:
                        over += t1 - t0
            r["over_limit_ms"] = int(over * 1000)
            r["daemon_log_tail"] = d.run("tail -n 5 /tmp/daemon.log")[1].strip().splitlines()
        if then is not None:
            then(d)
    return r


def xen_kb(h: XenHost, label: str, workload_mib: int, then: Optional[Callable[[DomU], None]] = None) -> dict:
    res: dict[str, Any] = {}
    without = _kb_run(h, label, False, workload_mib)
    with_ = _kb_run(h, label, True, workload_mib, then)
    res["without"], res["with"] = without, with_
    res["oom_kills_without"] = without["oom_kills"]
    res["oom_kills_with"] = with_["oom_kills"]
    for k in ("max_balloon_bytes", "limit_bytes", "over_limit_ms", "hold_bytes", "xl_list_mib",
              "xenstore_target_kib"):
        res[k] = with_.get(k)
    problems = []
    if without["oom_kills"] <= 0:
        problems.append("no OOM kill without balloonctl")
    if with_["oom_kills"] != 0:
        problems.append(f"{with_['oom_kills']} OOM kills with balloonctl")
    if not with_.get("held"):
        problems.append("the guard does not hold at the end")
    limit = with_.get("limit_bytes") or 0
    hold = with_.get("hold_bytes") or 0
    asked = (1024 - int(1024 * 0.35)) * MiB
    # A partial hold: the balloon's target at the limit (within target_kb's
    # KiB rounding and the limit's movement with the workload), not released.
    if not (0 < hold < asked):
        problems.append(f"hold {hold} is not a partial hold (host asked {asked})")
    if limit and abs(hold - limit) > 16 * MiB:
        problems.append(f"hold {hold} not at the limit {limit}")
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


def _held_domu(h: XenHost, d: DomU) -> tuple[int, dict]:
    pin(d, 512)
    start_daemon(d, "enforce")
    d.ok(SAMPLER)
    d.mem_set(int(1024 * 0.35))
    st = wait(lambda: (lambda s: s if xen_record(s).get("held") else None)(state(d)), 180, "the guard holding",
              period=1)
    held_kb = d.sysfs_kib()["target_kb"]
    return held_kb, st


def xen_override(h: XenHost, label: str) -> dict:
    with DomU(h, f"ov-{label}", label, 1024, 1024) as d:
        _held_domu(h, d)
        return override_on(d)


def override_on(d: DomU) -> dict:
    """The override on a domU the guard holds."""
    res: dict[str, Any] = {}
    if True:
        held_kb = d.sysfs_kib()["target_kb"]
        res["held_target_kb"] = held_kb
        t_prev = (samples(d) or [(0.0, 0, 0, 0)])[-1][0]
        new = int(1024 * 0.30)
        d.mem_set(new)
        time.sleep(4)
        rows = [row for row in samples(d) if row[0] > t_prev]
        t_host = next((t for t, _, tk, _ in rows if tk == new * 1024), None)
        t_back = next((t for t, _, tk, _ in rows if t_host is not None and t > t_host and tk > new * 1024), None)
        res["host_write_seen"] = t_host is not None
        res["reaction_ms"] = int((t_back - t_host) * 1000) if t_host is not None and t_back is not None else None
        res["final_target_kb"] = d.sysfs_kib()["target_kb"]
        res["xenstore_target_kib"] = d.xs("memory/target")
        res["held"] = xen_record(state(d)).get("held")
    ok = res["reaction_ms"] is not None and res["reaction_ms"] <= (INTERVAL + 1.0) * 1000 and res["held"]
    res["passed"] = bool(ok)
    if not ok:
        res["reason"] = f"no re-hold within one interval (+1 s of TCG slack): {res}"
    return res


def xen_readmit(h: XenHost, label: str) -> dict:
    with DomU(h, f"ra-{label}", label, 1024, 1024) as d:
        _held_domu(h, d)
        return readmit_on(d)


def readmit_on(d: DomU) -> dict:
    """The re-admit on a domU the guard holds."""
    res: dict[str, Any] = {}
    if True:
        st = wait(lambda: (lambda s: s if xen_record(s).get("held") else None)(state(d)), 180,
                  "the guard holding", period=1)
        held_kb = d.sysfs_kib()["target_kb"]
        limit = st["limit_bytes"]
        margin = float((st.get("settings") or {}).get("margin", MARGIN))
        t_prev = (samples(d) or [(0.0, 0, 0, 0)])[-1][0]
        # A balloon below limit x (1 - margin), with a quarter of it to spare.
        balloon = int(limit * (1 - margin) * 0.75)
        new = 1024 - balloon // MiB
        res.update(held_target_kb=held_kb, limit_bytes=limit, host_target_mib=new)
        d.mem_set(new)
        s = converged(d, new, timeout=120)
        time.sleep(2)
        rows = [row for row in samples(d) if row[0] > t_prev]
        t_host = next((t for t, _, tk, _ in rows if tk == new * 1024), None)
        t_free = next((t for t, _, tk, hd in rows if t_host is not None and t >= t_host and hd == 0), None)
        res["reaction_ms"] = int((t_free - t_host) * 1000) if t_host is not None and t_free is not None else None
        res["final_sysfs"] = s
        res["held"] = xen_record(state(d)).get("held")
        res["xenstore_target_kib"] = d.xs("memory/target")
    ok = (res["held"] is False and res["final_sysfs"]["target_kb"] == new * 1024
          and res["reaction_ms"] is not None and res["reaction_ms"] <= (INTERVAL + 1.0) * 1000)
    res["passed"] = bool(ok)
    if not ok:
        res["reason"] = f"the guard did not let go to the host's target within one interval: {res}"
    return res


def dom0(h: XenHost) -> dict:
    res: dict[str, Any] = {}
    h.dom0_ok("balloonctl run --mode report --no-probe-target --interval 1 --state-dir /run/bc "
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
                f"over limit {r.get('over_limit_ms')} ms; dom0 sees xl {r.get('xl_list_mib')} MiB, "
                f"xenstore target {r.get('xenstore_target_kib')} KiB")
    if name in ("xen_override", "xen_readmit"):
        return f"reaction {r.get('reaction_ms')} ms"
    if name == "xen_status":
        g = [x >> 20 for x in (r.get("guest_bytes") or []) if x]
        return f"guest MiB per step {g}" + (f"; {r['same_guest']}" if r.get("same_guest") else "")
    return ""


def shared_done(entry: dict) -> list[str]:
    return [n for n in ("xen_override", "xen_readmit") if (entry["xen"].get(n) or {}).get("domu")]


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
    workload = int(opts.get("xen_kb_workload_mib", 128))
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
            for name in [n for n in SCENARIOS if n in selected and n != "dom0"]:
                print(f"[xen {label}] {name} ...", flush=True)
                t = time.monotonic()
                try:
                    if name == "xen_status":
                        r = xen_status(h, label)
                    elif name == "xen_kb":
                        # The guarded xen_kb domU, held at the end, serves
                        # xen_override and xen_readmit next (a domU boot,
                        # the pin and the daemon's start cost ~2.5 min each
                        # under TCG).
                        def then(d: DomU, label: str = label) -> None:
                            for follow, fn in (("xen_override", override_on), ("xen_readmit", readmit_on)):
                                if follow in selected:
                                    t1 = time.monotonic()
                                    try:
                                        fr = fn(d)
                                    except Exception as ex:  # noqa: BLE001
                                        fr = {"passed": False, "reason": f"{type(ex).__name__}: {ex}",
                                              "traceback": traceback.format_exc()}
                                    fr["duration_s"] = round(time.monotonic() - t1, 1)
                                    fr["domu"] = "shared with xen_kb"
                                    shared[follow] = fr
                        shared: dict[str, dict] = {}
                        r = xen_kb(h, label, workload, then)
                        for follow, fr in shared.items():
                            entries[label]["xen"][follow] = {k: None for k in RESULT_KEYS[follow]} | fr
                            print(f"[xen {label}] {follow}: {'PASS' if fr.get('passed') else 'FAIL'} "
                                  f"({fr['duration_s']} s) "
                                  f"{fr.get('reason', '') if not fr.get('passed') else describe(follow, fr)}", flush=True)
                    elif name in shared_done(entries[label]):
                        continue
                    elif name == "xen_override":
                        r = xen_override(h, label)
                    else:
                        r = xen_readmit(h, label)
                except Exception as ex:  # noqa: BLE001 - a scenario error is a failed scenario
                    r = {"passed": False, "reason": f"{type(ex).__name__}: {ex}", "traceback": traceback.format_exc()}
                r["duration_s"] = round(time.monotonic() - t, 1)
                entries[label]["xen"][name] = {k: None for k in RESULT_KEYS[name]} | r
                print(f"[xen {label}] {name}: {'PASS' if r.get('passed') else 'FAIL'} ({r['duration_s']} s) "
                      f"{r.get('reason', '') if not r.get('passed') else describe(name, r)}", flush=True)
                write()
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
