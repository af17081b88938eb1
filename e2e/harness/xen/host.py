"""The xen tier's host: Xen 4.17 under QEMU TCG with a busybox PV dom0 that
plays the hypervisor's toolstack, and the PV domUs it starts.

QEMU's first serial port carries Xen's console (dom0's hvc0 on it) and the
second dom0's read/eval command channel (e2e/xen/dom0-init, the same framing
as e2e/init). Commands reach a domU through dom0: ``domu-exec run`` writes
them to the domU's console pty and reads the answer from xenconsoled's log
(e2e/xen/domu-init, e2e/xen/domu-exec).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
from dataclasses import dataclass
from typing import Optional

from ..errors import GuestError
from ..guest import Guest, GuestConfig, Kernel, QEMU, read_env

DOM0_MIB = 1024


@dataclass
class XenImages:
    """What e2e/fetch-xen.sh and e2e/xen/build-images.sh made."""

    xen: str
    xen_version: str
    dom0_kver: str
    dom0_vmlinuz: str
    dom0_initrd: str
    domu_kernels: dict[str, dict[str, str]]

    @classmethod
    def load(cls, work: str, labels: list[str]) -> "XenImages":
        env = read_env(os.path.join(work, "xen", "xen.env"))
        initrd = os.path.join(work, "xen", "img", "dom0.cpio.gz")
        for p in (env["XEN"], env["DOM0_VMLINUZ"], initrd):
            if not os.path.isfile(p):
                raise FileNotFoundError(p)
        kernels = {l: read_env(os.path.join(work, "kernels", l, "kernel.env")) for l in labels}
        return cls(env["XEN"], env.get("XEN_VERSION", ""), env["DOM0_KVER"], env["DOM0_VMLINUZ"],
                   initrd, kernels)


class XenHost(Guest):
    """Xen + dom0 under QEMU TCG (one boot per tier)."""

    def __init__(self, images: XenImages, logdir: str, ram_mib: int = 3072, watchdog: float = 3600.0):
        kernel = Kernel("xen", images.dom0_kver, "xen-hypervisor-4.17-amd64", images.xen_version,
                        images.xen, images.dom0_initrd)
        super().__init__(kernel, GuestConfig(mem_mib=ram_mib, balloon=False, boot_timeout=240.0,
                                             watchdog=watchdog), logdir, name="xen")
        self.images = images
        self._ids = itertools.count(1)

    def argv(self) -> list[str]:
        # -cpu qemu64: -cpu max crashes a PV dom0 at its first exception
        # bounce under TCG (e2e/README.md, "xen tier").
        xen_args = (f"dom0_mem={DOM0_MIB}M,max:{DOM0_MIB}M console=com1 com1=115200,8n1 "
                    "loglvl=all guest_loglvl=all noreboot")
        modules = f"{self.images.dom0_vmlinuz} console=hvc0 earlyprintk=xen rdinit=/init,{self.images.dom0_initrd}"
        return [
            QEMU, "-accel", "tcg", "-cpu", "qemu64", "-machine", "pc", "-m", str(self.cfg.mem_mib), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", self.images.xen, "-append", xen_args, "-initrd", modules,
        ] + self.io_argv()

    def dom0(self, cmd: str, timeout: float = 60.0) -> tuple[int, str]:
        assert self.chan is not None
        return self.chan.run(cmd, timeout=timeout)

    def dom0_ok(self, cmd: str, timeout: float = 60.0) -> str:
        rc, out = self.dom0(cmd, timeout)
        if rc != 0:
            raise GuestError(f"dom0: `{cmd}` exited {rc}: {out.strip()[-400:]}")
        return out


class DomU:
    """A PV domU started by dom0; commands run over its console."""

    def __init__(self, host: XenHost, name: str, label: str, memory_mib: int, maxmem_mib: int):
        self.host, self.name, self.label = host, name, label
        self.memory_mib, self.maxmem_mib = memory_mib, maxmem_mib
        self.domid: Optional[int] = None
        self.boot_s: Optional[float] = None

    def __enter__(self) -> "DomU":
        t0 = self.host.now()
        out = self.host.dom0_ok(
            f"domu-exec create {self.name} {self.label} {self.memory_mib} {self.maxmem_mib} 150", timeout=180)
        self.domid = int(out.strip().splitlines()[-1])
        self.boot_s = round(self.host.now() - t0, 1)
        self.host.log(f"domU {self.name} ({self.label}) domid {self.domid} ready in {self.boot_s}s")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.host.dom0(f"domu-exec destroy {self.name}", timeout=30)
        except Exception:  # noqa: BLE001 - the host may be gone
            pass

    def run(self, cmd: str, timeout: float = 60.0) -> tuple[int, str]:
        n = next(self.host._ids)
        b64 = base64.b64encode(cmd.encode()).decode()
        rc, out = self.host.dom0(f"domu-exec run {self.name} {n} {b64} {int(timeout)}", timeout=timeout + 15)
        return rc, out

    def ok(self, cmd: str, timeout: float = 60.0) -> str:
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise GuestError(f"domU {self.name}: `{cmd}` exited {rc}: {out.strip()[-400:]}")
        return out

    def status_json(self) -> dict:
        return json.loads(self.ok("balloonctl status --json"))

    # dom0's view
    def mem_set(self, mib: int) -> None:
        self.host.dom0_ok(f"xl mem-set {self.name} {mib}m")

    def xs(self, key: str) -> int:
        return int(self.host.dom0_ok(f"xenstore-read /local/domain/{self.domid}/{key}").strip())

    def dom0_view(self) -> tuple[int, int]:
        """xenstore `memory/target` (KiB) and `xl list`'s Mem (MiB), one dom0 command."""
        out = self.host.dom0_ok(f"xenstore-read /local/domain/{self.domid}/memory/target; xl list {self.name}")
        m = re.search(rf"^(\d+)\s*$.*^{re.escape(self.name)}\s+\d+\s+(\d+)", out, re.M | re.S)
        if not m:
            raise GuestError(f"xenstore-read / xl list for {self.name}: {out}")
        return int(m.group(1)), int(m.group(2))

    def xl_list_mib(self) -> int:
        out = self.host.dom0_ok(f"xl list {self.name}")
        m = re.search(rf"^{re.escape(self.name)}\s+\d+\s+(\d+)", out, re.M)
        if not m:
            raise GuestError(f"xl list: no line for {self.name}: {out}")
        return int(m.group(1))

    def sysfs_kib(self) -> dict[str, int]:
        out = self.ok("x=/sys/devices/system/xen_memory/xen_memory0; for f in target_kb info/current_kb "
                      "info/low_kb info/high_kb; do echo \"$f $(cat $x/$f)\"; done; "
                      "awk '/^MemTotal:/{print \"MemTotal \" $2}' /proc/meminfo")
        return {k.split("/")[-1]: int(v) for k, v in (l.split() for l in out.strip().splitlines())}
