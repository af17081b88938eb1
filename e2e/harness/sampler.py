"""The balloon sampler: query-balloon every <= 100 ms in a background thread."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from .errors import GuestError

if TYPE_CHECKING:
    from .guest import Guest


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
