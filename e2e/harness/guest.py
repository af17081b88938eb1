"""A QEMU (TCG) test guest with a real virtio-balloon-pci device.

The Guest class starts ``qemu-system-x86_64 -accel tcg`` with the test kernel
and initramfs (e2e/init), and gives the scenarios:

* the console (ttyS0): every line timestamped (seconds since QEMU started,
  host monotonic clock), kept in memory and written to ``console.log``;
  ``wait_for(pattern, timeout, since)``;
* the command channel (channel.py, ttyS1): ``run(cmd, timeout) -> (rc, output)``;
* QMP (qmp.py): ``balloon``, ``query_balloon``, ``device_del``,
  ``device_add``, events;
* the balloon sampler (sampler.py): ``sampler(period)``.

Every wait has a timeout, an optional watchdog kills QEMU when a scenario runs
too long, and QEMU is killed on every exit path: the context manager, an
atexit hook, and PR_SET_PDEATHSIG (QEMU dies with the harness process even on
SIGKILL). QEMU runs in its own session, so a Ctrl-C reaches only the harness,
which then cleans up.

Host safety: nothing here touches the host's /sys, drivers or PCI devices;
every actuation happens inside the guest or through QEMU's QMP.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .channel import CommandChannel
from .errors import GuestDied, GuestError, GuestTimeout
from .qmp import QMP
from .sampler import Sampler

MiB = 1 << 20
PAGE = 4096

QEMU = os.environ.get("E2E_QEMU", "qemu-system-x86_64")


def page_align(b: float) -> int:
    return int(b) // PAGE * PAGE


def read_env(path: str) -> dict[str, str]:
    """A shell-syntax KEY='value' file (kernel.env, image.env)."""
    values: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                values[k] = v.strip("'\"")
    return values


@dataclass
class Kernel:
    """A fetched guest kernel plus its initramfs (see fetch-kernels.sh)."""

    label: str
    kver: str
    package: str
    package_version: str
    vmlinuz: str
    initrd: str

    @classmethod
    def load(cls, label: str, work: str) -> "Kernel":
        values = read_env(os.path.join(work, "kernels", label, "kernel.env"))
        initrd = os.path.join(work, "initramfs", f"{label}.cpio.gz")
        for p in (values["VMLINUZ"], initrd):
            if not os.path.isfile(p):
                raise FileNotFoundError(p)
        return cls(label, values["KVER"], values.get("PKG", ""), values.get("PKG_VERSION", ""),
                   values["VMLINUZ"], initrd)


@dataclass
class GuestConfig:
    mem_mib: int = 1024
    balloon: bool = True                # a balloon device at boot
    deflate_on_oom: bool = True
    disable_legacy: bool = True         # modern-only 1af4:1045, like Firecracker
    swap_mib: int = 0                   # >0: a virtio-blk disk the guest uses as swap
    monitor_interval: float = 1.0       # E2E-MON line period (seconds)
    append: str = ""                    # extra kernel parameters
    boot_timeout: float = 120.0         # QEMU start -> E2E-READY
    watchdog: Optional[float] = 600.0   # kill QEMU after this many seconds


def _pdeathsig() -> None:
    """preexec_fn: QEMU gets SIGKILL when the harness dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_live_guests: "weakref.WeakSet[Guest]" = weakref.WeakSet()


@atexit.register
def _kill_all_guests() -> None:
    for g in list(_live_guests):
        g.kill("harness exit")


@dataclass
class ConsoleLine:
    t: float
    text: str


class Guest:
    """One QEMU guest. Use as a context manager; QEMU is always killed."""

    def __init__(self, kernel: Kernel, cfg: GuestConfig, logdir: str, name: str = "guest"):
        self.kernel = kernel
        self.cfg = cfg
        self.name = name
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.ram_bytes = cfg.mem_mib * MiB
        self.proc: Optional[subprocess.Popen] = None
        self.lines: list[ConsoleLine] = []
        self._cond = threading.Condition()
        self._eof = False
        self._t0 = time.monotonic()
        self._tmp: Optional[str] = None
        self._reader: Optional[threading.Thread] = None
        self._watchdog: Optional[threading.Timer] = None
        self.killed_reason: Optional[str] = None
        self._closed = False
        self.qmp: Optional[QMP] = None
        self.chan: Optional[CommandChannel] = None
        self.boot_s: Optional[float] = None
        self.exit_code: Optional[int] = None
        self._harness_log = open(os.path.join(logdir, "harness.log"), "a", buffering=1)

    # --- clock / log ---

    def now(self) -> float:
        """Seconds since QEMU was started (host monotonic clock)."""
        return time.monotonic() - self._t0

    def log(self, msg: str) -> None:
        try:
            self._harness_log.write(f"[{self.now():9.3f}] {msg}\n")
        except ValueError:  # closed
            pass

    # --- lifecycle ---

    def argv(self) -> list[str]:
        assert self._tmp is not None
        c = self.cfg
        append = f"console=ttyS0 panic=-1 e2e.interval={c.monitor_interval:g}"
        if c.swap_mib > 0:
            append += " e2e.swap=1"
        if c.append:
            append += " " + c.append
        argv = [
            QEMU, "-accel", "tcg", "-machine", "pc", "-m", str(c.mem_mib), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", self.kernel.vmlinuz, "-initrd", self.kernel.initrd, "-append", append,
        ] + self.io_argv()
        if c.balloon:
            argv += ["-device", self.balloon_device_spec()]
        if c.swap_mib > 0:
            img = os.path.join(self._tmp, "swap.img")
            with open(img, "wb") as f:
                f.truncate(c.swap_mib * MiB)
            argv += ["-drive", f"file={img},if=none,id=swap0,format=raw,cache=unsafe",
                     "-device", "virtio-blk-pci,drive=swap0,id=swapdisk"]
        return argv

    def io_argv(self) -> list[str]:
        """The console on stdio (ttyS0), the command channel (ttyS1) and QMP."""
        assert self._tmp is not None
        return [
            "-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0",
            "-chardev", f"socket,id=s1,path={self._tmp}/cmd.sock,server=on,wait=off", "-serial", "chardev:s1",
            "-qmp", f"unix:{self._tmp}/qmp.sock,server=on,wait=off",
        ]

    def balloon_device_props(self, dev_id: str = "balloon0") -> dict[str, Any]:
        return {
            "driver": "virtio-balloon-pci",
            "id": dev_id,
            "disable-legacy": "on" if self.cfg.disable_legacy else "off",
            "deflate-on-oom": "on" if self.cfg.deflate_on_oom else "off",
        }

    def balloon_device_spec(self, dev_id: str = "balloon0") -> str:
        p = self.balloon_device_props(dev_id)
        return ",".join([p.pop("driver")] + [f"{k}={v}" for k, v in p.items()])

    def start(self) -> "Guest":
        self._tmp = tempfile.mkdtemp(prefix="e2e-qemu-", dir="/tmp")  # short unix socket paths
        argv = self.argv()
        self.log("start: " + " ".join(argv))
        self._stderr = open(os.path.join(self.logdir, "qemu.stderr"), "wb")
        self._console = open(os.path.join(self.logdir, "console.log"), "w", buffering=1,
                             encoding="utf-8", errors="replace")
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, start_new_session=True, preexec_fn=_pdeathsig)
        _live_guests.add(self)
        if self.cfg.watchdog:
            self._watchdog = threading.Timer(self.cfg.watchdog, self.kill,
                                             args=(f"watchdog: {self.cfg.watchdog:.0f}s elapsed",))
            self._watchdog.daemon = True
            self._watchdog.start()
        self._reader = threading.Thread(target=self._read_console, name="ttyS0-reader", daemon=True)
        self._reader.start()
        self.qmp = QMP(self.now, self.log)
        self.qmp.connect(f"{self._tmp}/qmp.sock", timeout=30, alive=self.alive)
        self.chan = CommandChannel(f"{self._tmp}/cmd.sock", os.path.join(self.logdir, "ttyS1.log"), self.now)
        self.chan.connect(timeout=30, alive=self.alive)
        return self

    def boot(self) -> float:
        """Waits for E2E-READY and syncs the command channel; returns the boot time."""
        t, _ = self.wait_for(r"E2E-READY", timeout=self.cfg.boot_timeout)
        self.boot_s = t
        assert self.chan is not None
        self.chan.sync(timeout=60)
        self.log(f"booted in {t:.2f}s, channel synced at {self.now():.2f}s")
        return t

    def _read_console(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        pending = b""
        while True:
            data = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(4096)
            if not data:
                break
            pending += data
            *complete, pending = re.split(rb"\r?\n", pending)
            if complete:
                t = self.now()
                with self._cond:
                    for raw in complete:
                        text = raw.replace(b"\r", b"").decode("utf-8", "replace")
                        self.lines.append(ConsoleLine(t, text))
                        self._console.write(f"[{t:9.3f}] {text}\n")
                    self._cond.notify_all()
        with self._cond:
            if pending:
                self.lines.append(ConsoleLine(self.now(), pending.decode("utf-8", "replace")))
            self._eof = True
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_summary(self) -> str:
        """How QEMU ended, for an error message: its exit status (or that it
        still runs), why the harness killed it, and the tail of its stderr."""
        p = self.proc
        rc = None if p is None else p.poll()
        bits = ["QEMU still running" if rc is None else f"QEMU exit status {rc}"]
        if self.killed_reason:
            bits.append(f"killed by the harness: {self.killed_reason}")
        try:
            with open(os.path.join(self.logdir, "qemu.stderr"), "rb") as f:
                tail = f.read()[-400:].decode("utf-8", "replace").strip()
        except OSError:
            tail = ""
        if tail:
            bits.append(f"stderr: {tail}")
        return "; ".join(bits)

    def kill(self, reason: str = "killed") -> None:
        """Kills QEMU now (by its process id). Safe to call from any thread, twice."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        if self.killed_reason is None:
            self.killed_reason = reason
        self.log(f"kill QEMU pid {p.pid}: {reason}")
        try:
            p.kill()
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Ends QEMU (QMP quit, then SIGKILL) and releases everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        p = self.proc
        if p is not None and p.poll() is None and self.qmp is not None:
            try:
                self.qmp.execute("quit", timeout=3)
            except Exception:  # noqa: BLE001 - falls through to kill
                pass
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        if p is not None and p.poll() is None:
            self.kill("close")
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if p is not None:
            self.exit_code = p.poll()
            self.log(f"QEMU exit code {self.exit_code}")
        if self.qmp is not None:
            self.qmp.close()
        if self.chan is not None:
            self.chan.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
        for f in (getattr(self, "_console", None), getattr(self, "_stderr", None)):
            if f is not None:
                f.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        _live_guests.discard(self)
        self._harness_log.close()

    def __enter__(self) -> "Guest":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # --- console ---

    def mark(self) -> int:
        """A position in the console; pass as `since` to wait only for later lines."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> tuple[float, re.Match]:
        """Waits for a console line matching `pattern` (re.search) at index >= since."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i].text)
                    if m:
                        return self.lines[i].t, m
                    i += 1
                if self._eof:
                    why = f" ({self.killed_reason})" if self.killed_reason else ""
                    raise GuestDied(f"QEMU exited{why} while waiting for /{pattern}/")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestTimeout(f"/{pattern}/ not seen on the console within {timeout}s")
                self._cond.wait(min(left, 0.2))

    def console_lines(self, pattern: str, since: int = 0) -> list[ConsoleLine]:
        rx = re.compile(pattern)
        with self._cond:
            return [ln for ln in self.lines[since:] if rx.search(ln.text)]

    def monitor_lines(self, since: int = 0) -> list[tuple[float, dict[str, str]]]:
        out = []
        for ln in self.console_lines(r"E2E-MON ", since):
            kv = dict(re.findall(r"(\w+)=(\S+)", ln.text))
            out.append((ln.t, kv))
        return out

    # --- command channel ---

    def run(self, cmd: str, timeout: float = 30.0, guest_timeout: Optional[float] = None) -> tuple[int, str]:
        if not self.alive():
            raise GuestDied(f"QEMU is not running ({self.killed_reason or 'exited'})")
        assert self.chan is not None
        rc, out = self.chan.run(cmd, timeout=timeout, guest_timeout=guest_timeout)
        self.log(f"run rc={rc}: {cmd}")
        return rc, out

    def check(self, cmd: str, timeout: float = 30.0) -> str:
        """run() that raises unless the command exits 0."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise GuestError(f"guest command failed (rc={rc}): {cmd}\n{out}")
        return out

    def read_kv(self, path: str, timeout: float = 20.0) -> dict[str, int]:
        """Reads a /proc file of `key value` or `Key: value kB` lines."""
        out = self.check(f"cat {path}", timeout)
        vals: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.replace(":", " ").split()
            if len(parts) >= 2 and parts[1].isdigit():
                vals[parts[0]] = int(parts[1])
        return vals

    def vmstat(self) -> dict[str, int]:
        return self.read_kv("/proc/vmstat")

    def meminfo(self) -> dict[str, int]:
        return self.read_kv("/proc/meminfo")

    def guest_balloon_pages(self) -> tuple[int, str]:
        """The balloon as the guest kernel counts it, in 4 KiB pages, and the source.

        nr_balloon_pages (>= 6.15, lags up to ~1 s), else
        balloon_inflate - balloon_deflate (6.1; exact for virtio_balloon).
        """
        vm = self.vmstat()
        if "nr_balloon_pages" in vm:
            return vm["nr_balloon_pages"], "nr_balloon_pages"
        return vm.get("balloon_inflate", 0) - vm.get("balloon_deflate", 0), "balloon_inflate-balloon_deflate"

    def wait_guest_balloon_pages(self, expected: int, timeout: float = 10.0, tolerance: int = 0) -> tuple[int, str, float]:
        """Polls the guest's counter until it equals `expected` (vmstat lags)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            pages, src = self.guest_balloon_pages()
            if abs(pages - expected) <= tolerance or time.monotonic() >= deadline:
                return pages, src, time.monotonic() - t0
            time.sleep(0.3)

    def clock_offset(self, tries: int = 5) -> tuple[float, float]:
        """(host_time - guest_uptime, round trip) in seconds: maps guest
        CLOCK_BOOTTIME instants (state.json's *_boottime) onto the harness
        clock (now()). Under TCG the guest clock follows the host's. The
        reading with the shortest command round trip is kept; the error is at
        most half of that round trip."""
        best: Optional[tuple[float, float]] = None
        for _ in range(tries):
            t0 = self.now()
            out = self.check("cat /proc/uptime")
            t1 = self.now()
            cand = ((t0 + t1) / 2 - float(out.split()[0]), t1 - t0)
            if best is None or cand[1] < best[1]:
                best = cand
        assert best is not None
        return best

    # --- QMP / balloon ---

    def _q(self) -> QMP:
        if self.qmp is None:
            raise GuestError("QMP not connected")
        return self.qmp

    def balloon(self, target_ram_bytes: int, timeout: float = 10.0) -> float:
        """QMP `balloon`: sets the guest's RAM target (balloon = RAM - value).

        Returns the host time (guest clock) at which the request was sent.
        """
        t = self.now()
        self._q().execute("balloon", {"value": int(target_ram_bytes)}, timeout=timeout)
        self.log(f"QMP balloon value={target_ram_bytes} (balloon {(self.ram_bytes - target_ram_bytes) / MiB:.1f} MiB)")
        return t

    def set_balloon_size(self, balloon_bytes: int) -> float:
        """Convenience: asks for a balloon of `balloon_bytes`."""
        return self.balloon(self.ram_bytes - balloon_bytes)

    def query_balloon(self, timeout: float = 10.0) -> int:
        """QMP `query-balloon`: the guest's RAM as the host sees it (`actual`, bytes)."""
        return int(self._q().execute("query-balloon", timeout=timeout)["actual"])

    def balloon_bytes(self) -> int:
        return self.ram_bytes - self.query_balloon()

    def wait_actual(self, pred: Callable[[int], bool], timeout: float, period: float = 0.05) -> tuple[float, int]:
        """Polls query-balloon until pred(actual); returns (seconds waited, actual)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = None
        while True:
            last = self.query_balloon()
            if pred(last):
                return time.monotonic() - t0, last
            if not self.alive():
                raise GuestDied("QEMU exited while waiting for the balloon")
            if time.monotonic() >= deadline:
                raise GuestTimeout(f"balloon: actual={last} did not reach the expected value within {timeout}s")
            time.sleep(period)

    def wait_settled(self, timeout: float, quiet: float = 2.0, period: float = 0.1) -> tuple[float, int]:
        """Waits until query-balloon stops changing for `quiet` seconds (or timeout)."""
        t0 = time.monotonic()
        last = self.query_balloon()
        changed = time.monotonic()
        while time.monotonic() - t0 < timeout:
            time.sleep(period)
            cur = self.query_balloon()
            if cur != last:
                last, changed = cur, time.monotonic()
            elif time.monotonic() - changed >= quiet:
                break
        return time.monotonic() - t0, last

    def device_del(self, dev_id: str = "balloon0", timeout: float = 30.0) -> float:
        """Hot-unplugs a device and waits for DEVICE_DELETED; returns seconds taken."""
        t0 = self.now()
        self._q().execute("device_del", {"id": dev_id})
        t, _ = self._q().wait_event("DEVICE_DELETED", timeout, since=t0,
                                    match=lambda ev: ev.get("data", {}).get("device") == dev_id)
        return t - t0

    def device_add(self, props: Optional[dict[str, Any]] = None, timeout: float = 10.0) -> float:
        """Hot-plugs a device (default: the balloon as configured); returns the request time."""
        t = self.now()
        self._q().execute("device_add", props or self.balloon_device_props(), timeout=timeout)
        return t

    def sampler(self, period: float = 0.05) -> Sampler:
        return Sampler(self, period)
