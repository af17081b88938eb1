"""Runs the system tier on each kernel and fills results["system"]."""

from __future__ import annotations

import os
import tarfile
import time
import traceback
from typing import Any, Callable

from .guest import SystemImage
from .scenarios import SCENARIOS, describe, run_kernel

# Debian 12 userspace for 6.1, Debian 13 for 6.12 and the backports kernel.
SUITES = {"bookworm": "bookworm", "trixie": "trixie", "backports": "trixie"}


def debs_disk(deb: str, work: str) -> tuple[str, str]:
    """A raw tar holding the .deb, attached to the guest as /dev/vdb (the cloud
    kernels have no 9p). Returns (tar path, the .deb's name in it)."""
    out = os.path.join(work, "system", "debs.tar")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    name = os.path.basename(deb)
    with tarfile.open(out + ".tmp", "w", format=tarfile.GNU_FORMAT) as t:
        t.add(deb, arcname=name)
    os.replace(out + ".tmp", out)
    return out, name


def run_tier(work: str, resdir: str, labels: list[str], deb: str, opts: dict[str, Any],
             entry_for: Callable[[str], dict], write: Callable[[], None]) -> None:
    tar, name = debs_disk(deb, work)
    for label in labels:
        entry = entry_for(label)
        sys_res: dict[str, Any] = {"deb": os.path.basename(deb)}
        entry["system"] = sys_res
        t0 = time.monotonic()
        try:
            img = SystemImage.load(label, work)
        except (OSError, KeyError) as e:
            sys_res["error"] = f"system image not available: {e}"
            for n in SCENARIOS:
                sys_res[n] = {"passed": False, "reason": sys_res["error"]}
            write()
            continue
        entry.update(kernel=img.kver, package=img.package, package_version=img.package_version)
        sys_res["suite"] = img.suite

        def progress(msg: str) -> None:
            print(f"[system {label} {img.kver}] {msg}", flush=True)

        progress(f"Debian {img.suite} userspace, {name}")
        try:
            sys_res.update(run_kernel(img, os.path.join(resdir, "system", label), os.path.join(work, "system", label),
                                      tar, name, opts, progress))
        except KeyboardInterrupt:
            sys_res["error"] = "interrupted"
            write()
            raise
        except Exception as e:  # noqa: BLE001 - a harness error fails the kernel's scenarios
            sys_res["error"] = f"{type(e).__name__}: {e}"
            sys_res["traceback"] = traceback.format_exc()
        for n in SCENARIOS:
            sys_res.setdefault(n, {"passed": False, "reason": sys_res.get("error", "not run")})
        sys_res["wall_s"] = round(time.monotonic() - t0, 1)
        for n in SCENARIOS:
            r = sys_res[n]
            progress(f"{n:<16} {'PASS' if r.get('passed') else 'FAIL'}  {describe(n, r)}")
        progress(f"wall {sys_res['wall_s']} s")
        write()

