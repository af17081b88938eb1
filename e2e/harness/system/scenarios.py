"""The system tier's scenarios, run in three boots per kernel.

A boot costs 15-25 s under TCG before any scenario runs, so the scenarios
share boots where they allow it (one boot per scenario would be 7-12 min for
three kernels); each boot is a module with its scenarios and their summary
lines:

1. install.py: ``install`` + **hotplug** + **guest_agent** (qga.py);
2. coldplug.py: **coldplug**, **exposure**, **unprivileged**, the systemctl
   half of **lifecycle**;
3. sandbox.py: **sandbox_at_boot**, **sandboxed_kb**, the apt half of
   **lifecycle**.

Every boot leaves console.log, journal.txt (``journalctl -b``), ttyS1.log
and harness.log in its directory.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from ..errors import GuestError
from . import coldplug, install, sandbox
from .guest import SystemImage

SCENARIOS = ["coldplug", "hotplug", "sandbox_at_boot", "sandboxed_kb", "lifecycle", "exposure", "unprivileged",
             "guest_agent"]
# Keys the results JSON promises per scenario (null when unknown).
RESULT_KEYS = {"coldplug": ["coldplug_s"], "hotplug": ["hotplug_s"],
               "sandboxed_kb": ["oom_kills_with", "oom_kills_without"], "exposure": ["exposure"],
               "guest_agent": ["floor_bytes"]}
# Each scenario's summary details, from the module that runs it (none: only
# the reason when it failed).
SUMMARIES: dict[str, Callable[[dict], list[str]]] = {**install.SUMMARIES, **coldplug.SUMMARIES, **sandbox.SUMMARIES}


def describe(name: str, r: dict) -> str:
    """One line of detail per scenario for the summary: the reason first when it failed."""
    bits = list(SUMMARIES.get(name, lambda _: [])(r))
    if not r.get("passed") and r.get("reason"):
        bits.insert(0, str(r["reason"])[:600])
    return "; ".join(bits)


def run_kernel(img: SystemImage, logdir: str, work_dir: str, debs_tar: str, deb_name: str,
               opts: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {n: {"passed": False, "reason": "not run"} for n in SCENARIOS}
    timings: dict[str, float] = {}
    os.makedirs(logdir, exist_ok=True)
    disk = os.path.join(work_dir, "installed.ext4")
    t = time.monotonic()
    try:
        inst, hot = install.boot_install(img, logdir, disk, debs_tar, deb_name, opts)
    except GuestError as e:
        inst, hot = {"ok": False, "error": f"{type(e).__name__}: {e}"}, {"passed": False, "reason": f"{type(e).__name__}: {e}"}
    timings["install_boot_s"] = round(time.monotonic() - t, 1)
    results["hotplug"] = hot
    results["guest_agent"] = inst.pop("guest_agent", results["guest_agent"])
    results["install"] = inst
    if inst.get("first_boot_died"):
        progress("install: QEMU exited before multi-user, booted once more: "
                 + inst["first_boot_died"].splitlines()[0][:400])
    progress(f"install+hotplug: {'PASS' if hot.get('passed') else 'FAIL'} ({timings['install_boot_s']} s)")
    if not inst.get("ok"):
        why = f"the package was not installed: {inst.get('error') or hot.get('reason')}"
        for n in SCENARIOS:
            if n != "hotplug":
                results[n] = {"passed": False, "reason": why}
        results["timings"] = timings
        return results
    t = time.monotonic()
    try:
        cold = coldplug.boot_coldplug(img, logdir, disk, opts)
    except GuestError as e:
        cold = {"coldplug": {"passed": False, "reason": f"{type(e).__name__}: {e}"}}
    timings["coldplug_boot_s"] = round(time.monotonic() - t, 1)
    progress(f"coldplug boot ({timings['coldplug_boot_s']} s)")
    t = time.monotonic()
    try:
        sand = sandbox.boot_sandbox(img, logdir, disk, opts)
    except GuestError as e:
        sand = {"sandbox_at_boot": {"passed": False, "reason": f"{type(e).__name__}: {e}"}}
    timings["sandbox_boot_s"] = round(time.monotonic() - t, 1)
    progress(f"sandbox boot ({timings['sandbox_boot_s']} s)")
    for n in ("coldplug", "exposure", "unprivileged"):
        results[n] = cold.get(n, results[n])
    for n in ("sandbox_at_boot", "sandboxed_kb"):
        results[n] = sand.get(n, results[n])
    ls, la = cold.get("lifecycle_systemctl", {"passed": False, "reason": "not run"}), \
        sand.get("lifecycle_apt", {"passed": False, "reason": "not run"})
    life = {"passed": bool(ls.get("passed") and la.get("passed")), "systemctl": ls, "apt": la}
    reasons = [f"systemctl: {ls['reason']}" for _ in [0] if not ls.get("passed")] + \
        [f"apt: {la['reason']}" for _ in [0] if not la.get("passed")]
    if reasons:
        life["reason"] = "; ".join(reasons)
    results["lifecycle"] = life
    for n, keys in RESULT_KEYS.items():
        for k in keys:
            results[n].setdefault(k, None)
    results["timings"] = timings
    return results
