"""Boot 2, ``coldplug``: a balloon at boot, the unit not enabled:
**coldplug**, **exposure**, **unprivileged**, and the systemctl half of
**lifecycle** (stop with both BALLOONCTL_ON_EXIT values, restart, kill -s
KILL)."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ..errors import GuestError, GuestTimeout
from ..guest import MiB
from ..guestside import driver_bound, is_held, state_hold
from .guest import SystemConfig, SystemGuest, SystemImage
from .guestside import (BIN, UNIT, Problems, ask_balloon, is_active, journal, keep_journal, release_lines, service,
                        show, started_by_rule, verdict, wait_service, wait_state)

# The unit's exposure must not rise: 2.8 when the tier was written (issue 7),
# 2.9 since the filter allows perf_event_open for the balloon driver's kprobe
# events (systemd counts the call as @debug; udev/balloonctl.service says why).
EXPOSURE_MAX = 2.9


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
            wait_state(g, lambda st: state_hold(st) is not None, 30, "the daemon's state")
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
    st = wait_state(g, lambda st: st.get("limit_bytes") is not None and state_hold(st) is not None, 30, "a limit")
    ask_balloon(g, st["limit_bytes"] + 64 * MiB)
    st = wait_state(g, is_held, 30, "the hold")
    releases = (state_hold(st) or {}).get("releases")
    n_rel = len(release_lines(journal(g)))
    res["releases"] = releases

    def still_held(step: str, pid_before: str) -> None:
        s = wait_service(g, lambda s: is_active(s) and s["MainPID"] != pid_before, 30)
        if not p.need(s, f"{step}: the service is not running again ({service(g)})"):
            return
        try:
            st2 = wait_state(g, lambda st: st.get("pid") == int(s["MainPID"]) and is_held(st), 20, "the resumed hold")
            r = (state_hold(st2) or {}).get("releases")
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
    wait_state(g, lambda st: st.get("pid") == int(s.get("MainPID") or -1) and is_held(st), 30,
               "the hold after the restart")
    res["on_exit_readmit_started"] = any("on_exit=readmit" in ln for ln in journal(g)[-6:])
    g.check(f"systemctl stop {UNIT}", timeout=60)
    time.sleep(0.5)
    res["stop_readmit_bound"] = driver_bound(g)
    p.need(res["stop_readmit_bound"], "stop with BALLOONCTL_ON_EXIT=readmit left the balloon unbound")
    res["journal_tail"] = journal(g)[-4:]
    g.balloon(g.ram_bytes)
    unit_makes_link(g, res, p)
    return verdict(res, p)


LINK = "/run/balloonctl.virtio-config"


def unit_makes_link(g: SystemGuest, res: dict[str, Any], p: Problems) -> None:
    """The unit started without the udev rule's link (as when multi-user.target
    starts it before udev has handled the balloon): its ExecStartPre=+ makes
    the link, so the sandbox has the PCI window's hole and the next release is
    preventive, with the host's target in its journal line."""
    set_on_exit(g, "hold")
    g.check(f"rm -f {LINK}")
    n_lines = len(journal(g))
    g.check(f"systemctl start {UNIT}", timeout=60)
    s = wait_service(g, is_active, 30) or {}
    st = wait_state(g, lambda st: st.get("pid") == int(s.get("MainPID") or -1) and st.get("limit_bytes") is not None
                    and not is_held(st), 30, "the daemon started without the link")
    rc, target = g.run(f"readlink -f {LINK}")
    res["link_made_by_unit"] = target.strip() if rc == 0 else None
    p.need(rc == 0 and target.strip().endswith("/config"), f"the unit did not make {LINK} ({target.strip()})")
    ask_balloon(g, st["limit_bytes"] + 64 * MiB)
    wait_state(g, is_held, 30, "the hold without the rule's link")
    new = journal(g)[n_lines:]
    rel = release_lines(new)
    res["link_release_line"] = rel[0] if rel else None
    p.need(rel and "target_bytes=" in rel[0] and "trigger=preventive" in rel[0],
           f"the release after a start without the rule's link was not preventive: {rel[:1]}")
    erofs = [ln for ln in new if "Read-only file system" in ln]
    p.need(not erofs, f"the PCI window had no hole: {erofs[:1]}")
    g.balloon(g.ram_bytes)
    wait_state(g, lambda st: not is_held(st), 30, "the re-admit")


def describe_coldplug(r: dict) -> list[str]:
    if r.get("coldplug_s") is None:
        return []
    return [f"active {r['coldplug_s']} s after multi-user (boot {r.get('boot_s')} s)"]


def describe_exposure(r: dict) -> list[str]:
    if r.get("exposure") is None:
        return []
    return [f"{r['exposure']} {r.get('exposure_word')}"]


SUMMARIES = {"coldplug": describe_coldplug, "exposure": describe_exposure}
