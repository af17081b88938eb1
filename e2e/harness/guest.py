"""A QEMU (TCG) test guest with a real virtio-balloon-pci device.

The Guest class starts ``qemu-system-x86_64 -accel tcg`` with the test kernel
and initramfs (e2e/init), and gives the scenarios:

* the console (ttyS0): every line timestamped (seconds since QEMU started,
  host monotonic clock), kept in memory and written to ``console.log``;
  ``wait_for(pattern, timeout, since)``;
* a command channel (ttyS1, a unix socket): ``run(cmd, timeout) -> (rc, output)``
  after a ping/sync handshake;
* QMP (the official ``qemu.qmp`` library, its asyncio client driven from a
  private event-loop thread): ``balloon``, ``query_balloon``, ``device_del``,
  ``device_add``, events;
* a background ``Sampler`` thread that polls ``query-balloon`` every <=100 ms.

Every wait has a timeout, an optional watchdog kills QEMU when a scenario runs
too long, and QEMU is killed on every exit path: the context manager, an
atexit hook, and PR_SET_PDEATHSIG (QEMU dies with the harness process even on
SIGKILL). QEMU runs in its own session, so a Ctrl-C reaches only the harness,
which then cleans up.

Host safety: nothing here touches the host's /sys, drivers or PCI devices;
every actuation happens inside the guest or through QEMU's QMP.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import ctypes
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from qemu.qmp import ExecInterruptedError, ExecuteError, QMPClient, StateError

MiB = 1 << 20
PAGE = 4096

QEMU = os.environ.get("E2E_QEMU", "qemu-system-x86_64")


class GuestError(Exception):
    """A guest operation failed."""


class GuestTimeout(GuestError):
    """A wait ran out of time."""


class GuestDied(GuestError):
    """QEMU exited (guest panic, watchdog, crash) while we were waiting."""


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
        env_path = os.path.join(work, "kernels", label, "kernel.env")
        values: dict[str, str] = {}
        with open(env_path) as f:
            for line in f:
                line = line.strip()
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    values[k] = v.strip("'\"")
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


# --------------------------------------------------------------------------
# QMP


class QMP:
    """Synchronous facade over qemu.qmp's asyncio QMPClient.

    The client lives on a private event loop in a daemon thread, so several
    threads (the scenario, the sampler) can issue commands concurrently, each
    with its own timeout. Events are recorded with host timestamps.
    """

    def __init__(self, clock: Callable[[], float], log: Callable[[str], None]):
        self._clock = clock
        self._log = log
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qmp-loop", daemon=True)
        self._thread.start()
        self._client: Optional[QMPClient] = None
        self._events_task: Optional[asyncio.Future] = None
        self.events: list[tuple[float, dict]] = []
        self._events_cond = threading.Condition()

    def _call(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError on 3.11
            fut.cancel()
            raise GuestTimeout(f"QMP call timed out after {timeout:.1f}s")
        except ExecuteError as e:  # QEMU answered with an error
            raise GuestError(f"QMP error: {e}") from e
        except (ExecInterruptedError, StateError, EOFError, ConnectionError) as e:
            raise GuestDied(f"QMP connection lost (QEMU exited?): {e!r}") from e

    def connect(self, path: str, timeout: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            if not alive():
                raise GuestDied("QEMU exited before QMP was up")
            if os.path.exists(path):
                client = QMPClient("e2e")
                try:
                    self._call(client.connect(path), timeout=5)
                    self._client = client
                    self._events_task = asyncio.run_coroutine_threadsafe(self._watch_events(), self._loop)
                    return
                except Exception as e:  # noqa: BLE001 - retried until the deadline
                    last = e
            time.sleep(0.05)
        raise GuestTimeout(f"QMP socket {path} not connectable within {timeout}s ({last!r})")

    async def _watch_events(self) -> None:
        assert self._client is not None
        try:
            async for event in self._client.events:
                t = self._clock()
                ev = dict(event)
                with self._events_cond:
                    self.events.append((t, ev))
                    self._events_cond.notify_all()
                self._log(f"QMP event {ev.get('event')} {ev.get('data', {})}")
        except asyncio.CancelledError:
            return

    def execute(self, cmd: str, args: Optional[dict] = None, timeout: float = 10.0) -> Any:
        if self._client is None:
            raise GuestError("QMP not connected")
        return self._call(self._client.execute(cmd, args), timeout)

    def wait_event(self, name: str, timeout: float, since: float = 0.0,
                   match: Optional[Callable[[dict], bool]] = None) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self._events_cond:
            while True:
                for t, ev in self.events:
                    if t >= since and ev.get("event") == name and (match is None or match(ev)):
                        return t, ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestTimeout(f"no QMP event {name} within {timeout}s")
                self._events_cond.wait(min(left, 0.2))

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.disconnect(), 3)
            except Exception:  # noqa: BLE001 - best effort on teardown
                pass
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        try:
            self._call(self._shutdown(), timeout=5)
        except Exception:  # noqa: BLE001 - best effort on teardown
            pass
        finally:
            self._client = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=3)


# --------------------------------------------------------------------------
# Command channel on ttyS1


class CommandChannel:
    """The guest's ttyS1 read/eval loop, as (rc, output) commands.

    Commands are sent base64-encoded (so any quoting or newlines survive the
    line-based loop) with stdin from /dev/null, and framed by a unique tag:
    ``{ ( echo 0 >/proc/self/oom_score_adj; eval "$(echo B64 | base64 -d)" ) ; }
    </dev/null 2>&1; echo TAG$?``.
    """

    def __init__(self, path: str, log_path: str, clock: Callable[[], float]):
        self._path = path
        self._clock = clock
        self._sock: Optional[socket.socket] = None
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._ids = itertools.count(1)
        self._log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
        self._lock = threading.Lock()  # one command at a time
        self._reader: Optional[threading.Thread] = None
        self.synced = False

    def connect(self, timeout: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not alive():
                raise GuestDied("QEMU exited before the command socket was up")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self._path)
                self._sock = s
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise GuestTimeout(f"command socket {self._path} not connectable within {timeout}s")
                time.sleep(0.05)
        self._reader = threading.Thread(target=self._read_loop, name="ttyS1-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += data
                self._cond.notify_all()
            self._log.write(data.decode("utf-8", "replace"))

    def _send(self, line: str) -> None:
        assert self._sock is not None
        self._sock.sendall(line.encode() + b"\n")

    def _wait_bytes(self, pattern: re.Pattern, deadline: float) -> re.Match:
        with self._cond:
            while True:
                m = pattern.search(self._buf)
                if m:
                    return m
                if self._eof:
                    raise GuestDied("command channel closed (QEMU exited?)")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestTimeout("command channel: no answer")
                self._cond.wait(min(left, 0.2))

    def sync(self, timeout: float = 60.0) -> float:
        """Ping until the guest loop answers, then drain: returns seconds taken.

        Bytes sent before the guest opens ttyS1 are lost, so a ping goes out
        every 0.5 s; a final unique marker makes sure every queued ping has
        been answered before the buffer is cleared.
        """
        with self._lock:
            return self._sync_locked(timeout)

    def _sync_locked(self, timeout: float) -> float:
        t0 = time.monotonic()
        deadline = t0 + timeout
        ping = re.compile(rb"__E2E_PING_(\d+)__\n")
        answered = False
        while not answered:
            n = next(self._ids)
            self._send(f"echo __E2E_PING_{n}__")
            try:
                self._wait_bytes(ping, min(deadline, time.monotonic() + 0.5))
                answered = True
            except GuestTimeout:
                if time.monotonic() >= deadline:
                    raise GuestTimeout(f"command channel: no answer to pings within {timeout}s")
        n = next(self._ids)
        marker = f"__E2E_SYNC_{n}__".encode()
        self._send(f"echo {marker.decode()}")
        self._wait_bytes(re.compile(re.escape(marker) + rb"\n"), deadline)
        with self._cond:
            self._buf.clear()
        self.synced = True
        self._log.write(f"\n[harness] synced in {time.monotonic() - t0:.2f}s\n")
        return time.monotonic() - t0

    def run(self, cmd: str, timeout: float = 30.0, guest_timeout: Optional[float] = None) -> tuple[int, str]:
        """Runs `cmd` in the guest; returns (exit status, stdout+stderr).

        `guest_timeout` additionally wraps the command in busybox `timeout -s
        KILL` inside the guest, so that a runaway command frees the channel.
        Raises GuestTimeout if no status arrives within `timeout` (the channel
        then re-syncs before the next command).
        """
        with self._lock:
            if not self.synced:
                self._sync_locked(60.0)
            n = next(self._ids)
            tag = f"__E2E_RC_{n}_"
            b64 = base64.b64encode(cmd.encode()).decode()
            # The guest's loop shell and the subshell that prints the tag are
            # immune to the OOM killer; the command runs in an inner subshell
            # with oom_score_adj 0 (inherited by what it starts).
            if guest_timeout:
                body = f'timeout -s KILL {int(guest_timeout)} sh -c "$(echo {b64} | base64 -d)"'
            else:
                body = f'eval "$(echo {b64} | base64 -d)"'
            inner = f"( echo 0 >/proc/self/oom_score_adj; {body} )"
            with self._cond:
                self._buf.clear()
            self._log.write(f"\n[harness t={self._clock():.3f}] $ {cmd}\n")
            self._send(f"{{ {inner} ; }} </dev/null 2>&1; echo {tag}$?")
            try:
                m = self._wait_bytes(re.compile(re.escape(tag.encode()) + rb"(\d+)\n"), time.monotonic() + timeout)
            except GuestTimeout:
                self.synced = False
                raise GuestTimeout(f"guest command timed out after {timeout}s: {cmd}")
            with self._cond:
                rc = int(m.group(1))
                out = bytes(self._buf[: m.start()])
                del self._buf[: m.end()]
            return rc, out.decode("utf-8", "replace")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._log.close()


# --------------------------------------------------------------------------
# Sampler


class Sampler:
    """Polls query-balloon every `period` s in a background thread.

    Records (t, actual_bytes) with t on the guest's clock (seconds since QEMU
    started). QMP's `actual` is the guest's RAM as the host sees it; the
    balloon is `ram_bytes - actual`.
    """

    def __init__(self, guest: "Guest", period: float = 0.05):
        if period > 0.1:
            raise ValueError("sampling period must be <= 100 ms")
        self.guest = guest
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._loop, name="balloon-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                actual = self.guest.query_balloon(timeout=2)
                with self._lock:
                    self.samples.append((self.guest.now(), actual))
            except GuestError:
                self.errors += 1
                if not self.guest.alive():
                    return
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- analysis (balloon sizes, in bytes) ---

    def balloon_series(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, int]]:
        ram = self.guest.ram_bytes
        with self._lock:
            return [(t, ram - a) for t, a in self.samples if since <= t <= until]

    def max_balloon(self, since: float = 0.0, until: float = float("inf")) -> Optional[int]:
        s = self.balloon_series(since, until)
        return max((b for _, b in s), default=None)

    def time_above(self, limit_bytes: int, since: float = 0.0, until: float = float("inf")) -> float:
        """Seconds the balloon spent above `limit_bytes` (sample-and-hold)."""
        s = self.balloon_series(since, until)
        total = 0.0
        for (t0, b0), (t1, _) in zip(s, s[1:]):
            if b0 > limit_bytes:
                total += t1 - t0
        return total

    def first_time(self, pred: Callable[[int], bool], since: float = 0.0) -> Optional[float]:
        """The first sample time >= since whose balloon size satisfies pred."""
        for t, b in self.balloon_series(since):
            if pred(b):
                return t
        return None

    def write_csv(self, path: str) -> None:
        ram = self.guest.ram_bytes
        with self._lock, open(path, "w") as f:
            f.write("t_s,actual_bytes,balloon_bytes\n")
            for t, a in self.samples:
                f.write(f"{t:.3f},{a},{ram - a}\n")


# --------------------------------------------------------------------------
# Guest


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
            "-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0",
            "-chardev", f"socket,id=s1,path={self._tmp}/cmd.sock,server=on,wait=off", "-serial", "chardev:s1",
            "-qmp", f"unix:{self._tmp}/qmp.sock,server=on,wait=off",
        ]
        if c.balloon:
            argv += ["-device", self.balloon_device_spec()]
        if c.swap_mib > 0:
            img = os.path.join(self._tmp, "swap.img")
            with open(img, "wb") as f:
                f.truncate(c.swap_mib * MiB)
            argv += ["-drive", f"file={img},if=none,id=swap0,format=raw,cache=unsafe",
                     "-device", "virtio-blk-pci,drive=swap0,id=swapdisk"]
        return argv

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
