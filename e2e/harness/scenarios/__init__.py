"""The busybox tier's scenarios, one module each, in the order they run.

Each module ends with its registry entry (``SCENARIO``: the run function,
the summary line's details next to it, the result keys it promises); see
base.Scenario. A new scenario is a new module added to the list below.
"""

from __future__ import annotations

from . import (advised_floor, crash_safety, deflate_on_oom, events, hold_readmit, hotplug, kb_failure,
               oom_postmortem, report_mode, smoke, status)
from .base import Context, Scenario

REGISTRY: dict[str, Scenario] = {m.SCENARIO.name: m.SCENARIO for m in (
    smoke, status, kb_failure, oom_postmortem, hold_readmit, crash_safety, report_mode, advised_floor, hotplug,
    deflate_on_oom, events)}

__all__ = ["REGISTRY", "Context", "Scenario"]
