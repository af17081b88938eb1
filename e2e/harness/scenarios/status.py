"""status: `balloonctl status --json --probe-target` against QMP."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from ..guest import Guest, MiB
from .base import BALLOONCTL, INFLATE_STEP, Context, Scenario, verdict


def status_numbers(doc: Any) -> dict[str, Any]:
    """The virtio balloon's documented sizes in `status --json` (README): the
    device's own `actual` (config space, exact), the kernel counter
    `current_bytes` (nr_balloon_pages lags up to ~1 s; balloon_inflate -
    balloon_deflate on 6.1) and `target_bytes` (config space num_pages)."""
    balloons = [b for b in (doc.get("balloons") or []) if isinstance(b, dict) and b.get("kind") == "virtio"]
    if len(balloons) != 1:
        return {"current_bytes": None, "counter_bytes": None, "target_bytes": None,
                "error": f"expected one virtio balloon, got {len(balloons)}"}
    b = balloons[0]
    return {"current_bytes": b.get("device_actual_bytes"), "counter_bytes": b.get("current_bytes"),
            "current_source": b.get("current_source"), "target_bytes": b.get("target_bytes"),
            "target_source": b.get("target_source")}


def run_status(g: Guest, timeout: float = 90.0) -> tuple[int, Optional[Any], str, str]:
    """Runs `balloonctl status --json --probe-target`; returns (rc, parsed JSON or None, stdout, stderr)."""
    rc, out = g.run(f"{BALLOONCTL} status --json --probe-target 2>/tmp/status.err", timeout=timeout)
    _, err = g.run("cat /tmp/status.err")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    return rc, doc, out, err


def run(ctx: Context) -> dict:
    """`balloonctl status --json --probe-target` matches QMP (actual) and the host's
    target within one inflate step (1 MiB), at three sizes."""
    sizes = [int(x) * MiB for x in ctx.opts.get("status_sizes_mib", (128, 324, 512))]
    res: dict[str, Any] = {"sizes_mib": [s // MiB for s in sizes], "tolerance_bytes": INFLATE_STEP, "points": []}
    with ctx.guest("status", deflate_on_oom=True) as g:
        res["boot_s"] = round(g.boot(), 2)
        rc, doc, out, err = run_status(g)
        if rc != 0 or doc is None:
            lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
            errs = [ln for ln in lines if ln.lower().startswith("error")]
            why = (errs or lines or ["no output"])[0][:200]
            return {**res, "passed": False, "stdout": out[-2000:], "stderr": err[-2000:],
                    "reason": f"balloonctl status not available (rc={rc}: {why})"}
        problems = []
        for size in sizes:
            g.set_balloon_size(size)
            g.wait_actual(lambda a: a == g.ram_bytes - size, timeout=60)
            before = g.balloon_bytes()
            rc, doc, out, err = run_status(g)
            after = g.balloon_bytes()
            pt: dict[str, Any] = {"target_bytes": size, "qmp_balloon_bytes": after, "rc": rc}
            if rc != 0 or doc is None:
                pt["stdout"], pt["stderr"] = out[-2000:], err[-2000:]
                problems.append(f"{size // MiB} MiB: status failed rc={rc}")
                res["points"].append(pt)
                continue
            nums = status_numbers(doc)
            pt.update(nums)
            if nums["current_bytes"] is None or nums["target_bytes"] is None:
                pt["json"] = doc
                problems.append(f"{size // MiB} MiB: no device_actual_bytes/target_bytes for the virtio balloon ({nums.get('error', 'null')})")
            else:
                if before != after:
                    problems.append(f"{size // MiB} MiB: balloon moved during status ({before} -> {after})")
                if abs(nums["current_bytes"] - after) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status device_actual {nums['current_bytes']} != QMP {after}")
                counter = nums["counter_bytes"]
                if counter is None or abs(counter - after) > INFLATE_STEP:
                    # nr_balloon_pages is a per-cpu batched counter that lags
                    # up to ~1 s: read once more before calling it wrong.
                    time.sleep(1.5)
                    _, again, _, _ = run_status(g)
                    counter = status_numbers(again or {}).get("counter_bytes")
                    pt["counter_bytes_reread"] = counter
                if counter is None or abs(counter - after) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status current_bytes ({nums['current_source']}) {counter} != QMP {after}")
                if abs(nums["target_bytes"] - size) > INFLATE_STEP:
                    problems.append(f"{size // MiB} MiB: status target {nums['target_bytes']} != host {size}")
            res["points"].append(pt)
        g.balloon(g.ram_bytes)
    return verdict(res, problems)


def describe(r: dict) -> list[str]:
    if not r.get("points"):
        return []
    return [", ".join(f"{p['target_bytes'] // MiB} MiB: current={p.get('current_bytes')} "
                      f"target={p.get('target_bytes')}" for p in r["points"])]


SCENARIO = Scenario("status", run, describe)
