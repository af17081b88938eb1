#!/usr/bin/env python3
"""bench/guest-idle.py RESULTS_JSON: the e2e events scenario's `idle` part
(earlyoom and balloonctl side by side in a QEMU guest, with event wake-ups)
as `key value` lines for bench/results.awk, one set per kernel:

  guest.source <results dir> <commit>
  guest.<label>.<key> <value>   kernel, daemon_cpu_us_per_s, ratio, ...

Prints nothing when the file has no idle result (make e2e not run)."""

import json
import os
import sys


def main() -> int:
    path = sys.argv[1]
    try:
        with open(path) as f:
            top = json.load(f)
    except (OSError, ValueError):
        return 0
    lines = []
    for k in top.get("kernels") or []:
        idle = ((k.get("scenarios") or {}).get("events") or {}).get("idle") or {}
        if not idle.get("earlyoom"):
            continue
        label = k.get("label")
        row = {"kernel": k.get("kernel"), "passed": "PASS" if idle.get("passed") else "FAIL",
               "guest_mib": idle.get("guest_mib"), "window_s": idle.get("window_s"),
               "ratio": idle.get("ratio_to_earlyoom"), "installed_ratio": idle.get("installed_ratio_to_earlyoom")}
        for proc in ("earlyoom", "daemon", "installed"):
            for key in ("cpu_us_per_s", "wakeups_per_s", "vmrss_kib"):
                row[f"{proc}_{key}"] = (idle.get(proc) or {}).get(key)
        lines += [f"guest.{label}.{key} {'n/a' if val is None else val}" for key, val in row.items()]
    if lines:
        run = os.path.basename(os.path.dirname(os.path.realpath(path)))
        print(f"guest.source {run}, commit {(top.get('commit') or 'unknown')[:7]}")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
