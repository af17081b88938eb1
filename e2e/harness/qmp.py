"""QMP: the official qemu.qmp asyncio client behind a synchronous facade.

The client runs on a private event loop in a daemon thread, so the scenario
and the sampler can issue commands concurrently, each with its own timeout.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Callable, Optional

from qemu.qmp import ExecInterruptedError, ExecuteError, QMPClient, StateError

from .errors import GuestDied, GuestError, GuestTimeout


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
