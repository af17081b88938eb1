"""A QEMU (TCG) guest booting a real Debian root filesystem with systemd.

The disks come from e2e/build-rootfs.sh (an ext4 root on /dev/vda, a busybox
stub initramfs that mounts it). The harness drives the guest through the
e2e-channel.service read/eval loop on ttyS1 (e2e/system/e2e-channel), the same
framing as the busybox tier's channel, and QMP; everything else (QEMU's
lifetime, watchdog, console capture, the command channel, QMP, the sampler)
is the busybox tier's Guest.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import GuestDied, GuestError, GuestTimeout
from ..guest import QEMU, Guest, GuestConfig, read_env
from . import qga


class BootFailed(GuestError):
    """The guest never reached multi-user.target (carries the console tail).
    `died`: QEMU exited on the way, as opposed to a boot that hung."""

    def __init__(self, msg: str, died: bool = False):
        super().__init__(msg)
        self.died = died


@dataclass
class SystemImage:
    """One kernel with its Debian root disk and stub initramfs."""

    label: str
    suite: str
    kver: str
    package: str
    package_version: str
    vmlinuz: str
    rootfs: str
    initrd: str

    @classmethod
    def load(cls, label: str, work: str) -> "SystemImage":
        k = read_env(os.path.join(work, "kernels", label, "kernel.env"))
        i = read_env(os.path.join(work, "system", label, "image.env"))
        for p in (k["VMLINUZ"], i["ROOTFS"], i["INITRD"]):
            if not os.path.isfile(p):
                raise FileNotFoundError(p)
        return cls(label, i["SUITE"], k["KVER"], k.get("PKG", ""), k.get("PKG_VERSION", ""),
                   k["VMLINUZ"], i["ROOTFS"], i["INITRD"])


@dataclass
class SystemConfig(GuestConfig):
    rootfs: str = ""
    writable: bool = False          # False: snapshot=on, the image is never modified
    extra_disk: str = ""            # a raw tar on /dev/vdb (the .deb), read-only
    boot_timeout: float = 240.0     # QEMU start -> multi-user.target
    # vCPUs. Multi-threaded TCG runs each on its own host thread: udev's coldplug
    # (~1100 events) then takes 3 s instead of 10-13 s. The OOM scenarios are
    # calibrated on one.
    smp: int = 1
    # A virtio-serial port for qemu-guest-agent, on a host socket (qga.py).
    guest_agent: bool = False


class SystemGuest(Guest):
    """Guest whose PID 1 is systemd; boot() waits for multi-user.target."""

    cfg: SystemConfig

    def balloon_device_props(self, dev_id: str = "balloon0") -> dict[str, Any]:
        # A fixed slot on the root bus: hot-plug goes through ACPI on -machine pc.
        p = super().balloon_device_props(dev_id)
        p.update({"bus": "pci.0", "addr": "0x8"})
        return p

    def argv(self) -> list[str]:
        assert self._tmp is not None
        c = self.cfg
        append = ("console=ttyS0 panic=-1 root=/dev/vda rw systemd.show_status=1 "
                  "systemd.status_unit_format=name SYSTEMD_COLORS=0 net.ifnames=0")
        if c.append:
            append += " " + c.append
        snap = "off" if c.writable else "on"
        argv = [
            QEMU, "-accel", "tcg", "-machine", "pc", "-m", str(c.mem_mib), "-smp", str(c.smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", self.kernel.vmlinuz, "-initrd", self.kernel.initrd, "-append", append,
            "-drive", f"file={c.rootfs},format=raw,if=virtio,snapshot={snap},cache=unsafe",
        ]
        if c.extra_disk:
            argv += ["-drive", f"file={c.extra_disk},format=raw,if=virtio,readonly=on"]
        argv += self.io_argv()
        if c.guest_agent:
            argv += qga.qemu_args(self.qga_socket)
        if c.balloon:
            argv += ["-device", self.balloon_device_spec()]
        return argv

    @property
    def qga_socket(self) -> str:
        assert self._tmp is not None
        return os.path.join(self._tmp, "qga.sock")

    def console_tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(f"[{ln.t:8.2f}] {ln.text}" for ln in self.lines[-n:])

    def boot(self) -> float:
        """Waits for the command channel and multi-user.target; returns the
        seconds from QEMU start to multi-user. A guest that never gets there
        fails with the console tail."""
        t0 = time.monotonic()
        try:
            assert self.chan is not None
            self.chan.sync(timeout=self.cfg.boot_timeout)
            self.channel_s = round(self.now(), 2)
            left = max(5.0, self.cfg.boot_timeout - (time.monotonic() - t0))
            try:
                t, _ = self.wait_for(r"Reached target .*multi-user\.target", timeout=left)
            except GuestTimeout:
                rc, out = self.run("systemctl is-active multi-user.target", timeout=30)
                if out.strip() != "active":
                    raise
                t = self.now()
        except GuestError as e:
            raise BootFailed(f"{self.name}: multi-user.target not reached ({type(e).__name__}: {e}; "
                             f"{self.exit_summary()}); console tail:\n{self.console_tail()}",
                             died=isinstance(e, GuestDied)) from e
        self.boot_s = t
        self.log(f"multi-user after {t:.2f}s (channel at {self.channel_s}s)")
        return t

    def save_journal(self, name: str = "journal.txt") -> Optional[str]:
        """`journalctl -b` next to console.log (best effort: the guest may be gone)."""
        path = os.path.join(self.logdir, name)
        try:
            rc, out = self.run("journalctl -b --no-pager -o short-monotonic", timeout=120)
        except GuestError as e:
            with open(path, "w") as f:
                f.write(f"(journal not available: {e})\n")
            return None
        with open(path, "w") as f:
            f.write(out)
        return path

    def poweroff(self, timeout: float = 90.0) -> bool:
        """`systemctl poweroff` without waiting for an answer; True if QEMU exited."""
        try:
            self.run("sync", timeout=60)
            assert self.chan is not None
            self.chan.send_unanswered("systemctl --no-block start poweroff.target --job-mode=replace-irreversibly")
        except GuestError:
            pass
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
