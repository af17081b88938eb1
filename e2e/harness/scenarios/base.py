"""What every busybox-tier scenario module uses: the registry entry, the
context a scenario gets, units and the verdict."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..guest import PAGE, Guest, GuestConfig, Kernel, MiB

BALLOONCTL = "/usr/local/bin/balloonctl"
# One virtio inflate/deflate step: 256 4-KiB pages (VIRTIO_BALLOON_ARRAY_PFNS_MAX).
INFLATE_STEP = 256 * PAGE
# Timing tolerance added to every "within N intervals" assertion: the sampler
# period (50 ms), the host<->guest clock mapping and QMP/TCG latency.
TOL_MS = 150


@dataclass
class Context:
    """What a scenario gets: the kernel, where to log, options, balloonctl."""

    kernel: Kernel
    logdir: str
    balloonctl_note: str                      # "staged" or why not (build failed, ...)
    opts: dict[str, Any] = field(default_factory=dict)
    # Results one scenario leaves for a later one that shares its guest
    # (kb_failure's "without" guest gives oom_postmortem's result).
    shared: dict[str, Any] = field(default_factory=dict)

    def guest(self, name: str, **cfg: Any) -> Guest:
        cfg.setdefault("watchdog", float(self.opts.get("guest_watchdog_s", 420)))
        return Guest(self.kernel, GuestConfig(**cfg), os.path.join(self.logdir, name), name)

    @property
    def staged(self) -> bool:
        return self.balloonctl_note == "staged"


@dataclass
class Scenario:
    """A registry entry: ``run(ctx)`` boots its own guest(s) and returns the
    result dict (at least ``passed``, and ``reason`` when it failed; raising
    is a failure too); ``describe(result)`` gives the summary line's details
    (the runner puts the reason first when it failed); ``result_keys`` are
    the keys the results JSON promises (null when unknown)."""

    name: str
    run: Callable[[Context], dict]
    describe: Callable[[dict], list[str]]
    needs_balloonctl: bool = True
    result_keys: list[str] = field(default_factory=list)


def ms(s: Optional[float]) -> Optional[int]:
    return None if s is None else int(round(s * 1000))


def fmt_ms(v: Any) -> str:
    return "n/a" if v is None else f"{v} ms"


def fmt_mib(v: Any) -> str:
    return "n/a" if v is None else f"{v / MiB:.1f} MiB"


def verdict(res: dict, problems: list[str]) -> dict:
    """A scenario's result: passed when no problem was found, else the reasons."""
    res["passed"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res
