"""Boot 1, ``install``: no balloon at boot, a writable copy of the root disk.
The .deb (a raw tar on /dev/vdb) is installed with apt-get on the running
guest, as a user would; then **hotplug**. The guest powers off cleanly and
its disk, with the package installed, is what boots 2 and 3 start from
(read-only, snapshot=on)."""

from __future__ import annotations

import os
import shlex
import time
from typing import Any

from ..errors import GuestError, GuestTimeout
from ..guest import MiB
from ..guestside import driver_bound, is_held, read_state, state_hold
from .guest import BootFailed, SystemConfig, SystemGuest, SystemImage
from .qga import describe_guest_agent, guest_agent_steps
from .guestside import (BIN, UNIT, VOLATILE, Problems, ask_balloon, guest_mono_to_host, is_active, journal,
                        keep_journal, service, started_by_rule, verdict, wait_service, wait_state)


def boot_install(img: SystemImage, logdir: str, work_img: str, debs_tar: str, deb_name: str,
                 opts: dict[str, Any]) -> tuple[dict, dict]:
    """Returns (install facts, hotplug result). Writes the installed disk to work_img."""
    inst: dict[str, Any] = {"ok": False}
    res: dict[str, Any] = {}
    p = Problems()
    cfg = SystemConfig(rootfs=work_img, writable=True, extra_disk=debs_tar, balloon=False, smp=2,
                       deflate_on_oom=False, watchdog=float(opts.get("boot_watchdog_s", 900)),
                       guest_agent=True)
    for attempt in (1, 2):
        fresh_copy(img.rootfs, work_img)
        g = SystemGuest(img, cfg, os.path.join(logdir, "install" if attempt == 1 else "install-2"), "install")
        with g:
            try:
                inst["boot_s"] = round(g.boot(), 2)
                inst["channel_s"] = g.channel_s
                install_steps(g, inst, res, p, deb_name, opts)
            except BootFailed as e:
                if e.died and attempt == 1:
                    # QEMU exited before multi-user on a disk that has no
                    # balloonctl and no balloon: nothing of ours ran, so this is
                    # the emulator's or the guest kernel's, and one more boot
                    # is fair. It is recorded and printed, never hidden.
                    inst["first_boot_died"] = str(e)[:2000]
                    continue
                p.append(f"{type(e).__name__}: {e}")
            except GuestError as e:
                p.append(f"{type(e).__name__}: {e}")
            finally:
                if inst["ok"] and g.alive():
                    # The host reads the floor through qemu-guest-agent (qga.py).
                    t = time.monotonic()
                    inst["guest_agent"] = guest_agent_steps(g.qga_socket)
                    inst["guest_agent"]["wall_s"] = round(time.monotonic() - t, 1)
                keep_journal(g)
                if inst["ok"] and g.alive():
                    inst["clean_poweroff"] = g.poweroff()
                    if not inst["clean_poweroff"]:
                        inst["ok"] = False
                        p.append("the install guest did not power off")
        break
    return inst, verdict(res, p)


def fresh_copy(rootfs: str, work_img: str) -> None:
    """The install boot's writable disk: a sparse copy of the built image."""
    if os.path.exists(work_img):
        os.unlink(work_img)
    rc = os.system(f"cp --sparse=always {shlex.quote(rootfs)} {shlex.quote(work_img)}")
    if rc != 0:
        raise GuestError(f"cannot copy {rootfs} to {work_img}")


def install_steps(g: SystemGuest, inst: dict, res: dict, p: Problems, deb_name: str, opts: dict[str, Any]) -> None:
    """apt-get install of the .deb on the running guest, the unit's state with
    no balloon, then hotplug."""
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
        p.append(inst["error"])
        return
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
    st = wait_state(g, lambda st: state_hold(st) is not None, 30, "the daemon sees the balloon")
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
    wait_state(g, lambda st: state_hold(st) is not None and driver_bound(g), 30, "the new device bound and seen")
    limit = (read_state(g) or st)["limit_bytes"]
    ask_balloon(g, limit + 64 * MiB)
    try:
        st3 = wait_state(g, is_held, 30, "a hold of the new device")
        res["held_new_device"] = (state_hold(st3) or {}).get("name")
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
        wait_state(g, lambda st: not is_held(st), 30, "re-admit")
        res["readmitted"] = driver_bound(g)
    except GuestTimeout as e:
        res["readmitted"] = False
        p.append(str(e))


def describe_hotplug(r: dict) -> list[str]:
    if r.get("hotplug_s") is None:
        return []
    return [f"active {r['hotplug_s']} s after device_add, new device held={r.get('held_new_device')}"]


SUMMARIES = {"hotplug": describe_hotplug, "guest_agent": describe_guest_agent}
