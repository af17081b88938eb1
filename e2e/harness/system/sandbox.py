"""Boot 3, ``sandbox``: a balloon at boot, virtio_balloon kept from loading
by udev (``modprobe.blacklist=``) and the unit started at boot
(``systemd.wants=``): **sandbox_at_boot** (the module loads after the unit's
namespace is built; the first lever pull must work), **sandboxed_kb** (with
the guard), the apt half of **lifecycle** (remove, purge), then
sandboxed_kb's half without the guard (the package is gone)."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Optional

from ..errors import GuestError, GuestTimeout
from ..guest import MiB, page_align
from ..guestside import driver_bound, is_held, pin_memory, read_state, state_hold
from .guest import SystemConfig, SystemGuest, SystemImage
from .guestside import (UNIT, VOLATILE, Problems, ask_balloon, is_active, journal, keep_journal, memhog,
                        oom_kills, oom_victims, release_lines, service, verdict, wait_service, wait_state)


def boot_sandbox(img: SystemImage, logdir: str, disk: str, opts: dict[str, Any]) -> dict[str, dict]:
    out = {n: {"passed": False, "reason": "not run"} for n in ("sandbox_at_boot", "sandboxed_kb", "lifecycle_apt")}
    cfg = SystemConfig(rootfs=disk, balloon=True, deflate_on_oom=False,
                       append=f"modprobe.blacklist=virtio_balloon systemd.wants={UNIT}",
                       watchdog=float(opts.get("boot_watchdog_s", 900)))
    g = SystemGuest(img, cfg, os.path.join(logdir, "sandbox"), "sandbox")
    lock_mib = int(opts.get("kb_lock_mib", 512))
    work_mib = int(opts.get("kb_workload_mib", 192))
    kb: dict[str, Any] = {}
    with g:
        try:
            sab: dict[str, Any] = {"boot_s": round(g.boot(), 2)}
            p = Problems()
            s = wait_service(g, is_active, timeout=30)
            if not p.need(s, f"not started at boot by systemd.wants ({service(g)})"):
                out["sandbox_at_boot"] = verdict(sab, p)
                return out
            pid = s["MainPID"]
            rc, _ = g.run("test -d /sys/bus/virtio/drivers/virtio_balloon")
            sab["module_loaded_at_start"] = rc == 0
            p.need(rc != 0, "virtio_balloon was already loaded when the unit started (blacklist ignored?)")
            kb.update(pin_memory(g, lock_mib))
            g.check("modprobe virtio_balloon")
            st = wait_state(g, lambda st: state_hold(st) is not None and st.get("limit_bytes"), 30,
                            "the daemon sees the balloon")
            # The first lever pull: the host asks for 65 % of the guest (KB 340369).
            ram = g.ram_bytes
            kb["balloon_target_bytes"] = page_align(ram * float(opts.get("kb_balloon_fraction", 0.65)))
            oom0 = oom_kills(g)
            with g.sampler(0.05) as smp:
                t_req = ask_balloon(g, kb["balloon_target_bytes"])
                try:
                    st = wait_state(g, is_held, 30, "the hold")
                except GuestTimeout as e:
                    p.append(f"the first lever pull did not hold the balloon: {e}")
                    st = read_state(g) or {}
                h = state_hold(st) or {}
                kb["limit_bytes"] = st.get("limit_bytes")
                sab["held"] = bool(h.get("held"))
                sab["bound_while_held"] = driver_bound(g)
                p.need(not sab["bound_while_held"], "virtio_balloon still bound after the lever pull")
                s = service(g)
                sab["nrestarts"] = s.get("NRestarts")
                sab["same_pid"] = s.get("MainPID") == pid
                lines = journal(g)
                erofs = [ln for ln in lines if "Read-only file system" in ln or "EROFS" in ln]
                sab["erofs_lines"] = erofs[:4]
                p.need(not erofs, f"EROFS in the journal: {erofs[:2]}")
                p.need(sab["same_pid"] and s.get("NRestarts") == "0",
                       f"the daemon was restarted (NRestarts={s.get('NRestarts')}, pid {pid} -> {s.get('MainPID')})")
                out["sandbox_at_boot"] = verdict(sab, p)

                # sandboxed_kb, with the guard: the workload.
                if sab["held"]:
                    g.wait_actual(lambda a: a >= ram - 16 * MiB, timeout=30)
                kb.update(memhog(g, work_mib))
                time.sleep(1)
            kb["oom_kills_with"] = oom_kills(g) - oom0
            kb["oom_victims_with"] = oom_victims(g)
            kb["max_balloon_bytes"] = smp.max_balloon(since=t_req)
            smp.write_csv(os.path.join(g.logdir, "balloon-samples-with.csv"))
            kb["probe"] = probe_evidence(lines, h)
            warn = journal(g, "-p warning")
            kb["warning_release_lines"] = release_lines(warn)[:2]
            kb["journal_release_priority"] = release_priority(g)
            kb["journal_priorities"] = journal_priorities(g)
            # The bind lever inside the sandbox: the host's target drops, re-admit.
            g.balloon(ram)
            try:
                wait_state(g, lambda st: not is_held(st), 30, "re-admit")
                kb["readmitted"] = driver_bound(g)
            except GuestTimeout as e:
                kb["readmitted"] = False
                kb["readmit_error"] = str(e)
            kb["journal_tail"] = journal(g)[-6:]
            # The OOM post-mortem under the hardened unit: the packaged
            # daemon reads /dev/kmsg (BindReadOnlyPaths=, DeviceAllow=,
            # CAP_SYSLOG) and records an OOM kill with its victim.
            kb["postmortem"] = sandbox_oom_record(g)
        except GuestError as e:
            if out["sandbox_at_boot"].get("reason") == "not run":
                out["sandbox_at_boot"] = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
            kb.setdefault("error", f"{type(e).__name__}: {e}")
            keep_journal(g)
            out["sandboxed_kb"] = kb_verdict(kb)
            return out
        try:
            out["lifecycle_apt"] = lifecycle_apt(g, kb, opts)
        except GuestError as e:
            out["lifecycle_apt"] = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
        keep_journal(g)
        mark = g.mark()
        try:
            kb_without(g, kb, lock_mib, work_mib)
        except GuestError as e:
            # A guest thrashing or dead of OOM may stop answering: the kernel's
            # own console lines are the evidence then.
            kb["without_error"] = f"{type(e).__name__}: {e}"
            kb["oom_kills_without"] = len(g.console_lines(r"Out of memory: Killed process", since=mark))
            kb["oom_kills_without_source"] = "console"
            kb["guest_panic"] = bool(g.console_lines(r"Kernel panic", since=mark))
    out["sandboxed_kb"] = kb_verdict(kb)
    return out


def status_oom_kills(g: SystemGuest) -> list[dict]:
    rc, out = g.run("balloonctl status --json", timeout=60)
    try:
        return json.loads(out[out.index("{"):]).get("oom_kills") or []
    except ValueError:
        return []


def sandbox_oom_record(g: SystemGuest) -> dict[str, Any]:
    """memhog past the guest's free memory (the balloon given back): the OOM kill
    must appear in `balloonctl status --json` `oom_kills`, from the kernel
    log (source kmsg, the victim named), as the packaged daemon saw it."""
    res: dict[str, Any] = {}
    before = len(status_oom_kills(g))
    victims0 = len(oom_victims(g))
    t0 = time.monotonic()
    # Below MemTotal: a larger mmap is refused by the overcommit heuristic.
    res.update(memhog(g, g.read_kv("/proc/meminfo")["MemTotal"] // 1024 - 16))
    deadline = time.monotonic() + 60
    kills: list[dict] = []
    while time.monotonic() < deadline:
        kills = status_oom_kills(g)
        if len(kills) > before:
            break
        time.sleep(1)
    res["victims"] = len(oom_victims(g)) - victims0
    res["seconds"] = round(time.monotonic() - t0, 1)
    res["record"] = kills[before] if len(kills) > before else None
    rec = res["record"] or {}
    res["source"] = rec.get("source")
    res["victim"] = (rec.get("victim") or {}).get("comm")
    res["verdict"] = rec.get("verdict")
    res["kernel_log_unreadable"] = [ln for ln in journal(g) if "kernel log unreadable" in ln][:1]
    return res


def probe_evidence(lines: list[str], hold: dict) -> dict[str, Any]:
    """The PCI window probe inside the sandbox: the release line carries the
    host's target (target_bytes, read through the window) and no line says
    the probe failed."""
    rel = release_lines(lines)
    tgt = re.search(r"target_bytes=(\d+)", rel[0]) if rel else None
    failed = [ln for ln in lines if re.search(r"probe|config", ln, re.I) and re.search(r"fail|denied|read-only|error", ln, re.I)]
    return {"release_line": rel[0] if rel else None, "target_bytes": int(tgt.group(1)) if tgt else None,
            "failures": failed[:3], "hold_reason": hold.get("reason")}


def release_priority(g: SystemGuest) -> Optional[list[int]]:
    _, out = g.run(f"journalctl -b -u {UNIT} --no-pager -o json --output-fields=MESSAGE,PRIORITY", timeout=60)
    prios = []
    for ln in out.splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if re.search(r"\brelease virtio", str(e.get("MESSAGE", ""))):
            prios.append(int(e.get("PRIORITY", -1)))
    return prios or None


def journal_priorities(g: SystemGuest) -> dict[str, Any]:
    """The daemon's own journal entries (SYSLOG_IDENTIFIER balloonctl; the
    unit's also has systemd's): the PRIORITY each level reached, what
    `-p warning` selects, and any MESSAGE that kept a `<N>` prefix or a
    timestamp of its own (journald strips the prefix it understood)."""
    def entries(args: str) -> list[dict]:
        _, out = g.run(f"journalctl -b -u {UNIT} --no-pager -o json "
                       f"--output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER {args}", timeout=60)
        found = []
        for ln in out.splitlines():
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            if e.get("SYSLOG_IDENTIFIER") == "balloonctl" and isinstance(e.get("MESSAGE"), str):
                found.append(e)
        return found
    every = entries("")
    warn = entries("-p warning")
    def prio(pattern: str, among: list[dict]) -> list[int]:
        return [int(e.get("PRIORITY", -1)) for e in among if re.search(pattern, e["MESSAGE"])]
    return {
        "entries": len(every),
        "started": prio(r"^balloonctl run started\b", every),
        "release": prio(r"^release virtio", every),
        "warning_entries": len(warn),
        "warning_priorities": sorted({int(e.get("PRIORITY", -1)) for e in warn}),
        "warning_release": prio(r"^release virtio", warn),
        "prefixed": [e["MESSAGE"] for e in every if re.match(r"<\d>", e["MESSAGE"])][:3],
        "timestamped": [e["MESSAGE"] for e in every if re.match(r"\d{4}-\d\d-\d\dT", e["MESSAGE"])][:3],
    }


def kb_verdict(kb: dict) -> dict:
    p = Problems()
    p.need(kb.get("oom_kills_with") == 0, f"{kb.get('oom_kills_with')} OOM kill(s) with the guard")
    p.need(kb.get("workload_completed"), f"the workload failed with the guard (rc={kb.get('workload_rc')})")
    p.need((kb.get("oom_kills_without") or 0) > 0 or kb.get("guest_panic"),
           f"no OOM kill without the guard ({kb.get('oom_kills_without')}): the failure was not reproduced")
    probe = kb.get("probe") or {}
    p.need(probe.get("target_bytes") is not None and not probe.get("failures"),
           f"no evidence the PCI window probe worked in the sandbox ({probe})")
    p.need(kb.get("readmitted"), f"the bind (re-admit) did not work in the sandbox {kb.get('readmit_error', '')}")
    pm = kb.get("postmortem") or {}
    p.need(pm.get("source") == "kmsg" and pm.get("victim"),
           f"no OOM kill from the kernel log in `status --json` oom_kills under the unit "
           f"(record {pm.get('record')}, journal {pm.get('kernel_log_unreadable')})")
    if not kb.get("warning_release_lines"):
        p.append("`journalctl -u balloonctl -p warning` does not show the release line "
                 f"(journal PRIORITY of the release line: {kb.get('journal_release_priority')}; "
                 "warning is 4 — the daemon's stderr lines carry no sd-daemon <N> prefix)")
    jp = kb.get("journal_priorities") or {}
    p.need(jp.get("started") and set(jp["started"]) == {5}, f"`balloonctl run started` is not at notice (5) in the journal: {jp.get('started')}")
    p.need(jp.get("release") and set(jp["release"]) == {4},
           f"the release line is not at warning (4) in the journal: {jp.get('release')}")
    p.need(jp.get("warning_release") and all(0 <= x <= 4 for x in jp.get("warning_priorities", [-1])),
           f"`journalctl -p warning` selects entries above warning or misses the release: {jp}")
    p.need(not jp.get("prefixed") and not jp.get("timestamped"),
           f"journal lines with a <N> prefix or a timestamp of their own: {jp.get('prefixed')} {jp.get('timestamped')}")
    if kb.get("error"):
        p.insert(0, kb["error"])
    return verdict(kb, p)


def lifecycle_apt(g: SystemGuest, kb: dict, opts: dict[str, Any]) -> dict:
    """apt-get remove while a balloon is held leaves none held; apt-get purge
    leaves no file behind (dpkg -L and the listing taken before install)."""
    res: dict[str, Any] = {}
    p = Problems()
    # The pinned memory goes first, so the balloon the guard gives back at
    # removal cannot push the guest into OOM.
    pid = kb.get("memlock_pid", 0)
    # Its 512 MiB take a while to be unlocked and freed under TCG.
    g.run(f"kill {pid}; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done",
          timeout=60)
    # The host asks for 65 % again: above any limit the daemon can compute
    # (at most fraction x MemTotal), so it is held whatever the daemon makes
    # of the freed memory, and small enough for the guest once given back.
    ask_balloon(g, kb["balloon_target_bytes"])
    wait_state(g, is_held, 30, "a hold before removal")
    res["held_before_remove"] = not driver_bound(g)
    rc, text = g.run("DEBIAN_FRONTEND=noninteractive apt-get remove -y balloonctl", timeout=180)
    res["remove_rc"] = rc
    p.need(rc == 0, f"apt-get remove failed (rc={rc}): {text.strip()[-400:]}")
    time.sleep(1)
    res["bound_after_remove"] = driver_bound(g)
    p.need(res["bound_after_remove"], "apt-get remove left the balloon held (virtio_balloon unbound)")
    _, procs = g.run("pgrep -x balloonctl || true")
    p.need(not procs.strip(), f"a balloonctl process survived the removal: {procs.strip()}")
    rc, text = g.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y balloonctl", timeout=180)
    res["purge_rc"] = rc
    p.need(rc == 0, f"apt-get purge failed (rc={rc}): {text.strip()[-400:]}")
    prune = " -o ".join(f"-path {v}" for v in VOLATILE)
    g.check(f"find / -xdev \\( {prune} \\) -prune -o -print | sort >/tmp/files-after.txt", timeout=120)
    _, left = g.run("while read -r f; do [ \"$f\" != /. ] && [ -e \"$f\" ] && ! grep -qxF \"$f\" /root/files-before.txt && echo \"$f\"; "
                    "done </root/balloonctl-files.txt; comm -13 /root/files-before.txt /tmp/files-after.txt; "
                    "ls -d /run/balloonctl /run/balloonctl.virtio-config /etc/default/balloonctl 2>/dev/null; true", timeout=60)
    res["left_behind"] = sorted(set(ln for ln in left.splitlines() if ln.strip()))[:20]
    p.need(not res["left_behind"], f"files left after purge: {res['left_behind'][:6]}")
    return verdict(res, p)


def kb_without(g: SystemGuest, kb: dict, lock_mib: int, work_mib: int) -> None:
    """KB 340369 with no guard (the package is purged): the guest OOMs."""
    rc, _ = g.run("dpkg -s balloonctl >/dev/null 2>&1")
    if rc == 0:
        # The apt half of lifecycle failed before the removal: no guard may run here.
        g.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y balloonctl", timeout=180)
        kb["purged_for_without"] = True
    _, procs = g.run("pgrep -x balloonctl || true")
    if procs.strip():
        raise GuestError(f"balloonctl still runs ({procs.strip()}): no run without the guard")
    g.run("for d in /sys/bus/virtio/devices/*; do [ \"$(cat $d/device)\" = 0x0005 ] && [ ! -e $d/driver ] && "
          "echo ${d##*/} >/sys/bus/virtio/drivers/virtio_balloon/bind; done; true")
    g.balloon(g.ram_bytes)
    g.wait_actual(lambda a: a == g.ram_bytes, timeout=60)
    w = pin_memory(g, lock_mib)
    oom0 = oom_kills(g)
    with g.sampler(0.05) as smp:
        t_req = ask_balloon(g, kb["balloon_target_bytes"])
        settle, actual = g.wait_settled(timeout=60, quiet=3)
        w["balloon_reached_bytes"] = g.ram_bytes - actual
        # The guest may thrash on its file pages (no swap) before the OOM
        # killer acts: generous timeouts.
        w["oom_kills_before_workload"] = oom_kills(g, timeout=120) - oom0
        w.update(memhog(g, work_mib))
        time.sleep(1)
    w["max_balloon_bytes"] = smp.max_balloon(since=t_req)
    kb["oom_kills_without"] = oom_kills(g, timeout=120) - oom0
    w["oom_victims"] = oom_victims(g)[len(kb.get("oom_victims_with") or []) + (kb.get("postmortem") or {}).get("victims", 0):]
    kb["without"] = w


def describe_sandboxed_kb(r: dict) -> list[str]:
    return [f"OOM kills with={r.get('oom_kills_with')} without={r.get('oom_kills_without')}"]


SUMMARIES = {"sandboxed_kb": describe_sandboxed_kb}
