"""The host's side of the QEMU guest agent: qemu-guest-agent in the guest
listens on the virtio-serial port ``org.qemu.guest_agent.0``; QEMU exposes
that port as a unix socket on the host (SystemConfig.guest_agent). The
protocol is QMP-like JSON, one object per line. This is what
``virsh qemu-agent-command`` sends for a libvirt host.

**guest_agent** (install boot): the harness, acting as the host, runs
``balloonctl advise --json`` through ``guest-exec`` with captured output,
polls ``guest-exec-status``, base64-decodes the output and reads the QMP
floor, without the command channel or a login."""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from typing import Any

from ..errors import GuestError, GuestTimeout

PORT_NAME = "org.qemu.guest_agent.0"


def qemu_args(socket_path: str) -> list[str]:
    """A virtio-serial controller with the agent's port, backed by a host socket."""
    return ["-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=qga0,path={socket_path},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={PORT_NAME}"]


class GuestAgent:
    def __init__(self, socket_path: str):
        self.path = socket_path
        self.sock: socket.socket | None = None
        self.buf = b""
        self.last_status: dict = {}

    def __enter__(self) -> "GuestAgent":
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read_object(self, deadline: float) -> dict:
        assert self.sock is not None
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestTimeout(f"guest agent: no answer (partial: {self.buf[-200:]!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise GuestError("guest agent: socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        # A sync's 0xff delimiter, or a reply to a request sent before a reconnect.
        line = line.lstrip(b"\xff").strip()
        if not line:
            return {}
        return json.loads(line)

    def _send(self, command: str, arguments: dict | None = None) -> None:
        assert self.sock is not None
        msg: dict[str, Any] = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def sync(self, timeout: float) -> float:
        """guest-sync until the agent answers with our id (it may not run yet,
        and stale replies may be queued); returns the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            ident = random.randint(1, 2**31)
            self._send("guest-sync", {"id": ident})
            try:
                while True:
                    reply = self._read_object(min(deadline, time.monotonic() + 5))
                    if reply.get("return") == ident:
                        return time.monotonic() - t0
            except GuestTimeout:
                if time.monotonic() >= deadline:
                    raise GuestTimeout(f"guest agent: no guest-sync answer within {timeout:g} s") from None

    def execute(self, command: str, arguments: dict | None = None, timeout: float = 30.0) -> Any:
        self._send(command, arguments)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_object(deadline)
            if "error" in reply:
                raise GuestError(f"guest agent {command}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def exec_capture(self, path: str, args: list[str], timeout: float = 60.0) -> tuple[int, str, str]:
        """guest-exec with capture-output; polls guest-exec-status until it exits."""
        pid = self.execute("guest-exec", {"path": path, "arg": args, "capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.execute("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                self.last_status = st
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                return int(st.get("exitcode", -1)), out, err
            if time.monotonic() >= deadline:
                raise GuestTimeout(f"guest-exec {path}: not exited within {timeout:g} s")
            time.sleep(0.2)


def guest_agent_steps(socket_path: str, timeout: float = 120.0) -> dict[str, Any]:
    """The host reads the guest's floor through the agent: `balloonctl advise
    --json` by guest-exec, as `virsh qemu-agent-command` would."""
    # Here, not at the top: guest.py imports this module, and guestside imports guest.
    from .guestside import BIN

    res: dict[str, Any] = {"passed": False, "floor_bytes": None}
    try:
        with GuestAgent(socket_path) as qga:
            res["sync_s"] = round(qga.sync(timeout), 2)
            t = time.monotonic()
            rc, out, err = qga.exec_capture(BIN, ["advise", "--json"])
            res["exec_s"] = round(time.monotonic() - t, 2)
            res["exitcode"] = rc
            # The agent's own reply, shortened, as a host sees it (README).
            res["exec_status_reply"] = json.dumps(qga.last_status)[:160]
            if rc != 0:
                res["reason"] = f"balloonctl advise exited {rc}: {err.strip()[-400:]}"
                return res
            doc = json.loads(out)
            qemu = next((a for a in doc.get("advice", []) if a.get("hypervisor") == "qemu"), None)
            res["detected"] = (doc.get("detected") or {}).get("found")
            res["limit_bytes"] = (doc.get("limit") or {}).get("bytes")
            if qemu is None or not isinstance(qemu.get("bytes"), int):
                res["reason"] = f"no QMP floor in the advice: {out[:400]}"
                return res
            res["floor_bytes"] = qemu["bytes"]
            res["command"] = (qemu.get("commands") or [None])[0]
            res["passed"] = True
    except (GuestError, OSError, ValueError) as e:
        res["reason"] = f"{type(e).__name__}: {e}"
    return res


def describe_guest_agent(r: dict) -> list[str]:
    if r.get("floor_bytes") is None:
        return []
    return [f"advise --json by guest-exec: QMP floor {r['floor_bytes'] / (1 << 20):.0f} MiB "
            f"(found {r.get('detected')}), agent answered after {r.get('sync_s')} s"]
