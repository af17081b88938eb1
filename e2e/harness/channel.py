"""The command channel: the guest's read/eval loop on ttyS1 (a unix socket
on the host), as (exit status, output) commands. The busybox init and the
system tier's e2e-channel.service speak the same framing."""

from __future__ import annotations

import base64
import itertools
import re
import socket
import threading
import time
from typing import Callable, Optional

from .errors import GuestDied, GuestTimeout


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
        try:
            self._sock.sendall(line.encode() + b"\n")
        except OSError as e:
            # QEMU closed its end of ttyS1: it exited (or is exiting).
            raise GuestDied(f"command channel lost (QEMU exited?): {e!r}") from e

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

    def send_unanswered(self, cmd: str) -> None:
        """Sends `cmd` and waits for nothing: for a command whose answer never
        comes (poweroff). The channel re-syncs before the next run()."""
        with self._lock:
            self._log.write(f"\n[harness t={self._clock():.3f}] $ {cmd} (no answer awaited)\n")
            self._send(cmd)
            self.synced = False

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._log.close()
