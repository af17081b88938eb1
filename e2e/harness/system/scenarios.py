"""The system tier's scenarios, run in three boots per kernel.

A boot costs 15-25 s under TCG before any scenario runs, so the scenarios
share boots where they allow it (one boot per scenario would be 7-12 min for
three kernels):

1. ``install``: no balloon at boot, a writable copy of the root disk. The
   .deb (a raw tar on /dev/vdb) is installed with apt-get on the running
   guest, as a user would; then **hotplug**. The guest powers off cleanly and
   its disk, with the package installed, is what boots 2 and 3 start from
   (read-only, snapshot=on).
2. ``coldplug``: a balloon at boot, the unit not enabled: **coldplug**,
   **exposure**, **unprivileged**, and the systemctl half of **lifecycle**
   (stop with both BALLOONCTL_ON_EXIT values, restart, kill -s KILL).
3. ``sandbox``: a balloon at boot, virtio_balloon kept from loading by udev
   (``modprobe.blacklist=``) and the unit started at boot
   (``systemd.wants=``): **sandbox_at_boot** (the module loads after the
   unit's namespace is built; the first lever pull must work),
   **sandboxed_kb** (with the guard), the apt half of **lifecycle** (remove,
   purge), then sandboxed_kb's half without the guard (the package is gone).

Every boot leaves console.log, journal.txt (``journalctl -b``), ttyS1.log
and harness.log in its directory.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from typing import Any, Callable, Optional

from ..guest import MiB, PAGE, GuestDied, GuestError, GuestTimeout
from ..scenarios import clock_offset, page_align
from .guest import SystemConfig, SystemGuest, SystemImage

BIN = "/usr/sbin/balloonctl"
UNIT = "balloonctl.service"
STATE = "/run/balloonctl/state.json"
SCENARIOS = ["coldplug", "hotplug", "sandbox_at_boot", "sandboxed_kb", "lifecycle", "exposure", "unprivileged"]
# Keys the results JSON promises per scenario (null when unknown).
RESULT_KEYS = {"coldplug": ["coldplug_s"], "hotplug": ["hotplug_s"],
               "sandboxed_kb": ["oom_kills_with", "oom_kills_without"], "exposure": ["exposure"]}
# The unit's exposure offline when the tier was written (issue 7): it must not rise.
EXPOSURE_MAX = 2.8
# Paths outside the package that the file listings before install and after
# purge leave out: they change on every boot whatever is installed.
VOLATILE = ["/proc", "/sys", "/dev", "/run", "/tmp", "/var/log", "/var/cache", "/var/lib/apt",
            "/var/lib/systemd", "/var/tmp", "/root/debs", "/root/files-before.txt", "/root/balloonctl-files.txt",
            "/var/lib/dpkg"]


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


# --------------------------------------------------------------------------
# guest-side helpers


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


def read_state(g: SystemGuest) -> Optional[dict]:
    rc, out = g.run(f"cat {STATE} 2>/dev/null")
    if rc != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


def hold_of(st: Optional[dict]) -> Optional[dict]:
    for b in (st or {}).get("balloons", []):
        if b.get("kind") == "virtio":
            return b
    return None


def wait_state(g: SystemGuest, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = read_state(g)
        if st is not None:
            last = st
            if pred(st):
                return st
        if time.monotonic() >= deadline:
            raise GuestTimeout(f"state.json: {what} not within {timeout:.0f}s (last: {json.dumps(last)[:400]})")
        time.sleep(0.2)


def held(st: dict) -> bool:
    return bool((hold_of(st) or {}).get("held"))


def driver_bound(g: SystemGuest) -> bool:
    rc, _ = g.run("ls /sys/bus/virtio/drivers/virtio_balloon/ 2>/dev/null | grep -q '^virtio'")
    return rc == 0


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


def memlock(g: SystemGuest, mib_: int) -> dict[str, Any]:
    """The pinned process: memlock holding `mib_` MiB (outside any sandbox)."""
    out = g.check(f"memlock {mib_} >/tmp/memlock.log 2>&1 & echo $!")
    pid = int(out.strip().splitlines()[-1])
    deadline = time.monotonic() + 120
    while True:
        _, log = g.run("cat /tmp/memlock.log")
        if "MEMLOCK-OK" in log:
            return {"memlock_pid": pid, "mlocked_kb": g.meminfo().get("Mlocked")}
        rc, _ = g.run(f"kill -0 {pid}")
        if "MEMLOCK-FAIL" in log or rc != 0 or time.monotonic() > deadline:
            raise GuestError(f"memlock {mib_} failed: {log.strip()}")
        time.sleep(0.3)


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
    off, _ = clock_offset(g, tries=3)
    return us / 1e6 + off


def keep_journal(g: Optional[SystemGuest]) -> None:
    if g is not None and g.alive():
        g.save_journal()


# --------------------------------------------------------------------------
# boot 1: install + hotplug


def boot_install(img: SystemImage, logdir: str, work_img: str, debs_tar: str, deb_name: str,
                 opts: dict[str, Any]) -> tuple[dict, dict]:
    """Returns (install facts, hotplug result). Writes the installed disk to work_img."""
    inst: dict[str, Any] = {"ok": False}
    res: dict[str, Any] = {}
    p = Problems()
    if os.path.exists(work_img):
        os.unlink(work_img)
    rc = os.system(f"cp --sparse=always {shlex.quote(img.rootfs)} {shlex.quote(work_img)}")
    if rc != 0:
        raise GuestError(f"cannot copy {img.rootfs} to {work_img}")
    cfg = SystemConfig(rootfs=work_img, writable=True, extra_disk=debs_tar, balloon=False, smp=2,
                       deflate_on_oom=False, watchdog=float(opts.get("boot_watchdog_s", 900)))
    g = SystemGuest(img, cfg, os.path.join(logdir, "install"), "install")
    with g:
        try:
            inst["boot_s"] = round(g.boot(), 2)
            inst["channel_s"] = g.channel_s
            # What is there before the package, for the purge check (boot 3).
            prune = " -o ".join(f"-path {v}" for v in VOLATILE)
            g.check(f"find / -xdev \\( {prune} \\) -prune -o -print | sort >/root/files-before.txt", timeout=120)
            g.check("mkdir -p /root/debs && tar -C /root/debs -xf /dev/vdb", timeout=60)
            t = time.monotonic()
            rc, out = g.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y /root/debs/{deb_name}", timeout=240)
            inst["apt_install_s"] = round(time.monotonic() - t, 1)
            inst["apt_install_rc"] = rc
            inst["apt_install_tail"] = out.strip().splitlines()[-6:]
            if rc != 0:
                inst["error"] = f"apt-get install failed (rc={rc}): {out.strip()[-800:]}"
                return inst, verdict(res, [inst["error"]])
            inst["version"] = g.check(f"{BIN} --version").strip()
            g.check("dpkg -L balloonctl >/root/balloonctl-files.txt")
            time.sleep(2)
            s = service(g)
            inst["enabled_after_install"] = s.get("UnitFileState")
            res["active_without_balloon"] = s.get("ActiveState")
            p.need(s.get("ActiveState") in ("inactive", "failed") and s.get("MainPID") == "0",
                   f"the service is {s.get('ActiveState')} with no balloon (expected inactive)")
            if s.get("UnitFileState") == "enabled":
                # coldplug proves the rule alone: the unit must not be enabled.
                g.check(f"systemctl disable {UNIT}")
                inst["disabled_by_harness"] = True
            inst["ok"] = True
            hotplug_steps(g, res, p, opts)
        except GuestError as e:
            p.append(f"{type(e).__name__}: {e}")
        finally:
            keep_journal(g)
            if inst["ok"] and g.alive():
                inst["clean_poweroff"] = g.poweroff()
                if not inst["clean_poweroff"]:
                    inst["ok"] = False
                    p.append("the install guest did not power off")
    return inst, verdict(res, p)


def hotplug_steps(g: SystemGuest, res: dict, p: Problems, opts: dict[str, Any]) -> None:
    """device_add: active within 5 s, started by the rule; device_del: the daemon
    stays alive and logs it; device_add again: the new device is governed."""
    t_add = g.device_add()
    s = wait_service(g, is_active, timeout=30)
    if not p.need(s, "the service did not start within 30 s of device_add"):
        return
    t_active = guest_mono_to_host(g, s["ActiveEnterTimestampMonotonic"])
    res["hotplug_s"] = round(t_active - t_add, 2) if t_active is not None else None
    res["wanted_by"] = s.get("WantedBy")
    res["unit_file_state"] = s.get("UnitFileState")
    p.need(res["hotplug_s"] is not None and res["hotplug_s"] <= 5.0,
           f"active {res['hotplug_s']} s after device_add (> 5 s)")
    started_by_rule(g, s, res, p)
    pid = s["MainPID"]
    st = wait_state(g, lambda st: hold_of(st) is not None, 30, "the daemon sees the balloon")
    n0 = len(journal(g))
    res["device_del_s"] = round(g.device_del("balloon0", timeout=60), 2)
    time.sleep(3)
    s2 = service(g)
    res["alive_after_del"] = is_active(s2) and s2["MainPID"] == pid
    lines = journal(g)
    res["log_after_del"] = lines[n0:][-4:]
    p.need(res["alive_after_del"], f"the daemon did not survive device_del ({s2})")
    p.need(any("remove" in ln for ln in lines[n0:]), "no journal line about the removal")
    n1 = len(lines)
    g.device_add()
    wait_state(g, lambda st: hold_of(st) is not None and driver_bound(g), 30, "the new device bound and seen")
    limit = (read_state(g) or st)["limit_bytes"]
    ask_balloon(g, limit + 64 * MiB)
    try:
        st3 = wait_state(g, held, 30, "a hold of the new device")
        res["held_new_device"] = (hold_of(st3) or {}).get("name")
    except GuestTimeout as e:
        res["held_new_device"] = None
        p.append(f"the new device is not governed: {e}")
    res["bound_while_held"] = driver_bound(g)
    p.need(not res["bound_while_held"], "virtio_balloon still bound while held")
    res["log_after_add"] = journal(g)[n1:][-4:]
    res["same_daemon"] = service(g).get("MainPID") == pid
    p.need(res["same_daemon"], "a different daemon governs the new device")
    g.balloon(g.ram_bytes)
    try:
        wait_state(g, lambda st: not held(st), 30, "re-admit")
        res["readmitted"] = driver_bound(g)
    except GuestTimeout as e:
        res["readmitted"] = False
        p.append(str(e))


# --------------------------------------------------------------------------
# boot 2: coldplug, exposure, unprivileged, lifecycle (systemctl)


def boot_coldplug(img: SystemImage, logdir: str, disk: str, opts: dict[str, Any]) -> dict[str, dict]:
    out = {n: {"passed": False, "reason": "not run"} for n in ("coldplug", "exposure", "unprivileged")}
    out["lifecycle_systemctl"] = {"passed": False, "reason": "not run"}
    cfg = SystemConfig(rootfs=disk, balloon=True, deflate_on_oom=False, smp=2,
                       watchdog=float(opts.get("boot_watchdog_s", 900)))
    g = SystemGuest(img, cfg, os.path.join(logdir, "coldplug"), "coldplug")
    with g:
        try:
            res: dict[str, Any] = {"boot_s": round(g.boot(), 2)}
            p = Problems()
            t_mu = time.monotonic()
            s = wait_service(g, is_active, timeout=20)
            mu = show(g, "multi-user.target", ["ActiveEnterTimestampMonotonic"])
            if p.need(s, f"not active within 20 s of multi-user.target ({service(g)})"):
                a, m = int(s["ActiveEnterTimestampMonotonic"]), int(mu["ActiveEnterTimestampMonotonic"])
                # Negative: active before multi-user.target was reached.
                res["coldplug_s"] = round((a - m) / 1e6, 2)
                res["active_at_s"] = round(a / 1e6, 2)
                res["multi_user_at_s"] = round(m / 1e6, 2)
                res["wanted_by"] = s.get("WantedBy")
                res["unit_file_state"] = s.get("UnitFileState")
                p.need(res["coldplug_s"] <= 10.0, f"active {res['coldplug_s']} s after multi-user.target (> 10 s)")
                started_by_rule(g, s, res, p)
            res["waited_s"] = round(time.monotonic() - t_mu, 1)
            wait_state(g, lambda st: hold_of(st) is not None, 30, "the daemon's state")
            rc, text = g.run(f"{BIN} status", timeout=90)
            res["status_rc"] = rc
            res["status_daemon"] = next((ln for ln in text.splitlines() if ln.startswith("Daemon")), None)
            p.need(rc == 0 and re.search(r"^Daemon\s+running, pid \d+", text, re.M),
                   f"balloonctl status (rc={rc}) does not show the running daemon: {text.strip()[-300:]}")
            # What a user sees (the README's install section shows these).
            for name, cmd in (("systemctl-status.txt", f"SYSTEMD_COLORS=0 systemctl status {UNIT} --no-pager -l"),
                              ("journalctl-u.txt", f"journalctl -b -u {UNIT} --no-pager -o short")):
                _, seen = g.run(f"COLUMNS=100 {cmd}", timeout=60)
                with open(os.path.join(g.logdir, name), "w") as f:
                    f.write(seen)
            out["coldplug"] = verdict(res, p)
        except GuestError as e:
            out["coldplug"] = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
            keep_journal(g)
            return out
        for name, fn in (("exposure", exposure), ("unprivileged", unprivileged),
                         ("lifecycle_systemctl", lifecycle_systemctl)):
            t = time.monotonic()
            try:
                out[name] = fn(g, opts)
            except GuestError as e:
                out[name] = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
            out[name]["duration_s"] = round(time.monotonic() - t, 1)
            if not g.alive():
                break
        keep_journal(g)
    return out


def exposure(g: SystemGuest, opts: dict[str, Any]) -> dict:
    rc, text = g.run(f"systemd-analyze security {UNIT} --no-pager", timeout=120)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", text)
    res: dict[str, Any] = {"exposure": float(m.group(1)) if m else None, "exposure_word": m.group(2) if m else None,
                           "max": float(opts.get("exposure_max", EXPOSURE_MAX))}
    with open(os.path.join(g.logdir, "systemd-analyze-security.txt"), "w") as f:
        f.write(text)
    p = Problems()
    if p.need(m, f"no exposure level in systemd-analyze security (rc={rc}): {text.strip()[-300:]}"):
        p.need(res["exposure"] <= res["max"], f"exposure {res['exposure']} > {res['max']}")
    return verdict(res, p)


def unprivileged(g: SystemGuest, opts: dict[str, Any]) -> dict:
    rc, text = g.run(f"runuser -u nobody -- {BIN} status", timeout=90)
    with open(os.path.join(g.logdir, "status-nobody.txt"), "w") as f:
        f.write(text)
    unexplained = [ln.strip() for ln in text.splitlines()
                   if re.search(r"\bunknown\b", ln) and "(" not in ln and ":" not in ln.split("unknown", 1)[1]]
    res: dict[str, Any] = {"rc": rc, "lines": len(text.splitlines()), "unknowns": sum("unknown" in ln for ln in text.splitlines()),
                           "unexplained": unexplained[:5]}
    p = Problems()
    p.need(rc == 0, f"exit status {rc}: {text.strip()[-300:]}")
    p.need(re.search(r"^Daemon\s+running", text, re.M), "no Daemon line (state not readable by a user?)")
    p.need(not unexplained, f"unknowns without a reason: {unexplained[:3]}")
    return verdict(res, p)


def set_on_exit(g: SystemGuest, value: str) -> None:
    g.check("f=/etc/default/balloonctl; sed -i '/^[#[:space:]]*BALLOONCTL_ON_EXIT=/d' $f; "
            f"echo BALLOONCTL_ON_EXIT={value} >>$f")


def lifecycle_systemctl(g: SystemGuest, opts: dict[str, Any]) -> dict:
    """A hold, then: restart and kill -s KILL resume it without a second unbind;
    stop with BALLOONCTL_ON_EXIT=hold keeps it, with readmit gives it back."""
    res: dict[str, Any] = {}
    p = Problems()
    st = wait_state(g, lambda st: st.get("limit_bytes") is not None and hold_of(st) is not None, 30, "a limit")
    ask_balloon(g, st["limit_bytes"] + 64 * MiB)
    st = wait_state(g, held, 30, "the hold")
    releases = (hold_of(st) or {}).get("releases")
    n_rel = len(release_lines(journal(g)))
    res["releases"] = releases

    def still_held(step: str, pid_before: str) -> None:
        s = wait_service(g, lambda s: is_active(s) and s["MainPID"] != pid_before, 30)
        if not p.need(s, f"{step}: the service is not running again ({service(g)})"):
            return
        try:
            st2 = wait_state(g, lambda st: st.get("pid") == int(s["MainPID"]) and held(st), 20, "the resumed hold")
            r = (hold_of(st2) or {}).get("releases")
            p.need(r == releases, f"{step}: releases {releases} -> {r} (a second unbind)")
        except GuestTimeout as e:
            p.append(f"{step}: {e}")
        p.need(not driver_bound(g), f"{step}: virtio_balloon bound again")
        n = len(release_lines(journal(g)))
        p.need(n == n_rel, f"{step}: {n - n_rel} more release line(s) in the journal")
        res[f"{step}_nrestarts"] = s.get("NRestarts")

    pid = service(g)["MainPID"]
    g.check(f"systemctl restart {UNIT}", timeout=60)
    still_held("restart", pid)
    s = service(g)
    pid, nr = s["MainPID"], int(s.get("NRestarts") or 0)
    g.check(f"systemctl kill -s KILL {UNIT}")
    still_held("kill", pid)
    res["kill_restarted_by_systemd"] = int(service(g).get("NRestarts") or 0) == nr + 1
    p.need(res["kill_restarted_by_systemd"], "kill -s KILL: NRestarts did not rise by one")
    # stop, BALLOONCTL_ON_EXIT=hold (the shipped default): the balloon stays released.
    set_on_exit(g, "hold")
    pid = service(g)["MainPID"]
    g.check(f"systemctl stop {UNIT}", timeout=60)
    res["stop_hold_bound"] = driver_bound(g)
    p.need(not res["stop_hold_bound"], "stop with BALLOONCTL_ON_EXIT=hold re-admitted the balloon")
    g.check(f"systemctl start {UNIT}", timeout=60)
    still_held("start", pid)
    # stop, BALLOONCTL_ON_EXIT=readmit: the balloon is given back.
    set_on_exit(g, "readmit")
    g.check(f"systemctl restart {UNIT}", timeout=60)
    # Wait for the new daemon's own state: a stop before it is up tests nothing.
    s = wait_service(g, is_active, 30) or {}
    wait_state(g, lambda st: st.get("pid") == int(s.get("MainPID") or -1) and held(st), 30,
               "the hold after the restart")
    res["on_exit_readmit_started"] = any("on_exit=readmit" in ln for ln in journal(g)[-6:])
    g.check(f"systemctl stop {UNIT}", timeout=60)
    time.sleep(0.5)
    res["stop_readmit_bound"] = driver_bound(g)
    p.need(res["stop_readmit_bound"], "stop with BALLOONCTL_ON_EXIT=readmit left the balloon unbound")
    res["journal_tail"] = journal(g)[-4:]
    g.balloon(g.ram_bytes)
    return verdict(res, p)


# --------------------------------------------------------------------------
# boot 3: sandbox_at_boot, sandboxed_kb, lifecycle (apt)


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
            kb.update(memlock(g, lock_mib))
            g.check("modprobe virtio_balloon")
            st = wait_state(g, lambda st: hold_of(st) is not None and st.get("limit_bytes"), 30,
                            "the daemon sees the balloon")
            # The first lever pull: the host asks for 65 % of the guest (KB 340369).
            ram = g.ram_bytes
            kb["balloon_target_bytes"] = page_align(ram * float(opts.get("kb_balloon_fraction", 0.65)))
            oom0 = oom_kills(g)
            with g.sampler(0.05) as smp:
                t_req = ask_balloon(g, kb["balloon_target_bytes"])
                try:
                    st = wait_state(g, held, 30, "the hold")
                except GuestTimeout as e:
                    p.append(f"the first lever pull did not hold the balloon: {e}")
                    st = read_state(g) or {}
                h = hold_of(st) or {}
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
            # The bind lever inside the sandbox: the host's target drops, re-admit.
            g.balloon(ram)
            try:
                wait_state(g, lambda st: not held(st), 30, "re-admit")
                kb["readmitted"] = driver_bound(g)
            except GuestTimeout as e:
                kb["readmitted"] = False
                kb["readmit_error"] = str(e)
            kb["journal_tail"] = journal(g)[-6:]
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
    if not kb.get("warning_release_lines"):
        p.append("`journalctl -u balloonctl -p warning` does not show the release line "
                 f"(journal PRIORITY of the release line: {kb.get('journal_release_priority')}; "
                 "warning is 4 — the daemon's stderr lines carry no sd-daemon <N> prefix)")
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
    wait_state(g, held, 30, "a hold before removal")
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
    w = memlock(g, lock_mib)
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
    w["oom_victims"] = oom_victims(g)[len(kb.get("oom_victims_with") or []):]
    kb["without"] = w


# --------------------------------------------------------------------------
# one kernel


def run_kernel(img: SystemImage, logdir: str, work_dir: str, debs_tar: str, deb_name: str,
               opts: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {n: {"passed": False, "reason": "not run"} for n in SCENARIOS}
    timings: dict[str, float] = {}
    os.makedirs(logdir, exist_ok=True)
    disk = os.path.join(work_dir, "installed.ext4")
    t = time.monotonic()
    try:
        inst, hot = boot_install(img, logdir, disk, debs_tar, deb_name, opts)
    except GuestError as e:
        inst, hot = {"ok": False, "error": f"{type(e).__name__}: {e}"}, {"passed": False, "reason": f"{type(e).__name__}: {e}"}
    timings["install_boot_s"] = round(time.monotonic() - t, 1)
    results["hotplug"] = hot
    results["install"] = inst
    progress(f"install+hotplug: {'PASS' if hot.get('passed') else 'FAIL'} ({timings['install_boot_s']} s)")
    if not inst.get("ok"):
        why = f"the package was not installed: {inst.get('error') or hot.get('reason')}"
        for n in SCENARIOS:
            if n != "hotplug":
                results[n] = {"passed": False, "reason": why}
        results["timings"] = timings
        return results
    t = time.monotonic()
    try:
        cold = boot_coldplug(img, logdir, disk, opts)
    except GuestError as e:
        cold = {"coldplug": {"passed": False, "reason": f"{type(e).__name__}: {e}"}}
    timings["coldplug_boot_s"] = round(time.monotonic() - t, 1)
    progress(f"coldplug boot ({timings['coldplug_boot_s']} s)")
    t = time.monotonic()
    try:
        sand = boot_sandbox(img, logdir, disk, opts)
    except GuestError as e:
        sand = {"sandbox_at_boot": {"passed": False, "reason": f"{type(e).__name__}: {e}"}}
    timings["sandbox_boot_s"] = round(time.monotonic() - t, 1)
    progress(f"sandbox boot ({timings['sandbox_boot_s']} s)")
    for n in ("coldplug", "exposure", "unprivileged"):
        results[n] = cold.get(n, results[n])
    for n in ("sandbox_at_boot", "sandboxed_kb"):
        results[n] = sand.get(n, results[n])
    ls, la = cold.get("lifecycle_systemctl", {"passed": False, "reason": "not run"}), \
        sand.get("lifecycle_apt", {"passed": False, "reason": "not run"})
    life = {"passed": bool(ls.get("passed") and la.get("passed")), "systemctl": ls, "apt": la}
    reasons = [f"systemctl: {ls['reason']}" for _ in [0] if not ls.get("passed")] + \
        [f"apt: {la['reason']}" for _ in [0] if not la.get("passed")]
    if reasons:
        life["reason"] = "; ".join(reasons)
    results["lifecycle"] = life
    for n, keys in RESULT_KEYS.items():
        for k in keys:
            results[n].setdefault(k, None)
    results["timings"] = timings
    return results
