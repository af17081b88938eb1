"""Runs the end-to-end scenarios on each kernel; writes results JSON + summary.

    python -m harness --work e2e/work --results DIR [--kernels bookworm,backports,trixie:events]
                      [--scenarios smoke,status,...] [--keep-going | --fail-fast]
                      [--balloonctl-note staged]
                      [--tiers busybox,system] [--system-kernels bookworm,trixie,backports]
                      [--deb PATH] [--commit SHA] [--balloonctl-version TEXT]

Two tiers: ``busybox`` (the bare binary under a busybox init, scenarios in
harness/scenarios/, one module each) and ``system`` (the .deb installed in
real Debian guests with systemd, harness/system/).

Prints progress, then the summary, and as its LAST line ``results: <path>``.
Exit status: 0 if every selected scenario passed, 1 if any failed, 130 if
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, Optional

from .guest import Kernel
from .scenarios import REGISTRY, Context
from .system.scenarios import SCENARIOS as SYSTEM_SCENARIOS
from .system.scenarios import describe as system_describe
from .system.tier import run_tier as run_system_tier
from .xen import tier as xen_tier

KERNEL_ALIASES = {
    "bookworm": "bookworm", "6.1": "bookworm", "debian12": "bookworm", "old": "bookworm",
    "backports": "backports", "bpo": "backports", "trixie-backports": "backports", "new": "backports",
    "trixie": "trixie", "6.12": "trixie", "debian13": "trixie",
}
ALL_KERNELS = ["bookworm", "trixie", "backports"]


def parse_list(value: str, allowed: list[str], aliases: Optional[dict[str, str]] = None) -> list[str]:
    out = []
    for item in [v.strip() for v in value.replace(" ", ",").split(",") if v.strip()]:
        if item == "all":
            out += [a for a in allowed if a not in out]
            continue
        name = (aliases or {}).get(item, item)
        if name not in allowed:
            raise SystemExit(f"unknown name '{item}' (choose from: {', '.join(allowed)})")
        if name not in out:
            out.append(name)
    return out


def describe(name: str, r: dict) -> str:
    """One line of detail per scenario for the summary: the reason first when
    it failed, then what the scenario's own describe() reports."""
    if r.get("skipped"):
        return r.get("reason", "")
    bits = list(REGISTRY[name].describe(r))
    if not r.get("passed"):
        bits.insert(0, r.get("reason", ""))
    return "; ".join(b for b in bits if b)


def status_word(r: dict) -> str:
    if r.get("skipped"):
        return "SKIP"
    return "PASS" if r.get("passed") else "FAIL"


def summary(results: list[dict], elapsed: float) -> str:
    lines = [f"balloonctl e2e: {len(results)} kernel(s), {elapsed:.0f} s"]
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    for k in results:
        lines.append(f"kernel {k['kernel']} ({k['label']}: {k.get('package')} {k.get('package_version')})")
        if k.get("error"):
            lines.append(f"  ERROR: {k['error']}")
        for name, r in k["scenarios"].items():
            w = status_word(r)
            counts[w] += 1
            dur = f"{r['duration_s']:6.1f}s" if isinstance(r.get("duration_s"), (int, float)) else "     - "
            lines.append(f"  {name:<15} {w}  {dur}  {describe(name, r)}")
        xenr = k.get("xen")
        if xenr:
            lines.append(f"  xen tier (Xen {xenr.get('xen_version')}, dom0 {xenr.get('dom0_kernel')}, "
                         f"{xenr.get('wall_s')} s){': ERROR ' + xenr['error'] if xenr.get('error') else ''}")
            for name in xen_tier.SCENARIOS:
                r = xenr.get(name) or {}
                if r.get("skipped"):
                    continue
                w = "PASS" if r.get("passed") else "FAIL"
                counts[w] += 1
                detail = xen_tier.describe(name, r) if r.get("passed") else r.get("reason", "")
                lines.append(f"  {name:<15} {w}  {detail}")
        sysr = k.get("system")
        if sysr:
            lines.append(f"  system tier (Debian {sysr.get('suite')} userspace, {sysr.get('deb')}, "
                         f"{sysr.get('wall_s')} s){': ERROR ' + sysr['error'] if sysr.get('error') else ''}")
            for name in SYSTEM_SCENARIOS:
                r = sysr.get(name) or {}
                w = "PASS" if r.get("passed") else "FAIL"
                counts[w] += 1
                lines.append(f"  {name:<15} {w}  {system_describe(name, r)}")
    # "TODO (not implemented) 0" stays for whatever parses this line: no
    # scenario is unwritten any more, so it is always 0.
    lines.append(f"totals: PASS {counts['PASS']}, FAIL {counts['FAIL']}, TODO (not implemented) 0, "
                 f"skipped {counts['SKIP']}")
    return "\n".join(lines)


def fill_keys(name: str, r: dict) -> dict:
    for key in REGISTRY[name].result_keys:
        r.setdefault(key, None)
    r.setdefault("passed", False)
    return r


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="e2e work directory (kernels/, initramfs/)")
    ap.add_argument("--results", required=True, help="directory for results.json, summary.txt and logs")
    ap.add_argument("--kernels", default=os.environ.get("E2E_KERNELS", "bookworm,backports"))
    ap.add_argument("--scenarios", default=os.environ.get("E2E_SCENARIOS", "all"))
    kg = ap.add_mutually_exclusive_group()
    kg.add_argument("--keep-going", dest="keep_going", action="store_true", default=None,
                    help="run every scenario even after a failure (default)")
    kg.add_argument("--fail-fast", dest="keep_going", action="store_false",
                    help="stop at the first failed scenario")
    ap.add_argument("--balloonctl-note", default=os.environ.get("E2E_BALLOONCTL_NOTE", "not staged"),
                    help="'staged' when the initramfs holds /usr/local/bin/balloonctl, else why not")
    ap.add_argument("--tiers", default=os.environ.get("E2E_TIERS", "busybox,system,xen"),
                    help="busybox, system, xen (default: all three)")
    ap.add_argument("--xen-kernels", default=os.environ.get("E2E_XEN_KERNELS", "bookworm,backports"),
                    help="the xen tier's domU kernels")
    ap.add_argument("--system-kernels", default=os.environ.get("E2E_SYSTEM_KERNELS", "bookworm,trixie,backports"))
    ap.add_argument("--deb", default=os.environ.get("E2E_DEB", ""), help="the balloonctl .deb the system tier installs")
    ap.add_argument("--commit", default="", help="the commit under test (git rev-parse HEAD)")
    ap.add_argument("--balloonctl-version", default="", help="balloonctl --version of the binary under test")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="scenario option, e.g. kb_workload_mib=256 (repeatable)")
    args = ap.parse_args(argv)
    if args.keep_going is None:
        args.keep_going = os.environ.get("E2E_KEEP_GOING", "1") != "0"

    order = list(REGISTRY)
    tiers = parse_list(args.tiers, ["busybox", "system", "xen"])
    # A busybox-tier kernel may name the only scenarios it runs:
    # "trixie:events" (several joined by "+").
    kernel_only: dict[str, list[str]] = {}
    kernel_specs = [k for k in args.kernels.replace(" ", ",").split(",") if k.strip()]
    for spec in kernel_specs:
        label, _, only = spec.partition(":")
        if only:
            kernel_only[parse_list(label, ALL_KERNELS, KERNEL_ALIASES)[0]] = parse_list(only.replace("+", ","), order)
    kernels = (parse_list(",".join(k.partition(":")[0] for k in kernel_specs), ALL_KERNELS, KERNEL_ALIASES)
               if "busybox" in tiers else [])
    system_kernels = parse_list(args.system_kernels, ALL_KERNELS, KERNEL_ALIASES) if "system" in tiers else []
    if system_kernels and not args.deb:
        raise SystemExit("the system tier needs --deb PATH (or E2E_DEB)")
    xen_kernels = parse_list(args.xen_kernels, ALL_KERNELS, KERNEL_ALIASES) if "xen" in tiers else []
    # The xen tier's scenarios are named xen_* and dom0; "all" selects them
    # too, other names select only the busybox tier's.
    names = [n for n in args.scenarios.replace(" ", ",").split(",") if n.strip()]
    xen_selected = [n for n in xen_tier.SCENARIOS if "all" in names or n in names]
    selected = parse_list(",".join(n for n in names if n not in xen_tier.SCENARIOS) or
                          ("all" if not xen_selected else ""), order) if names else []
    opts: dict[str, Any] = {}
    for o in args.opt:
        k, _, v = o.partition("=")
        opts[k] = v
    os.makedirs(args.results, exist_ok=True)
    results_path = os.path.join(os.path.abspath(args.results), "results.json")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    results: list[dict] = []
    top: dict[str, Any] = {"commit": args.commit or None, "balloonctl_version": args.balloonctl_version or None,
                           "tiers": tiers, "kernels": results}

    def write() -> None:
        tmp = results_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(top, f, indent=2, default=str)
        os.replace(tmp, results_path)

    def entry_for(label: str) -> dict:
        for e in results:
            if e["label"] == label:
                return e
        e = {"kernel": label, "label": label, "scenarios": {}}
        results.append(e)
        return e

    t_start = time.monotonic()
    interrupted = False
    stop = False
    for label in kernels:
        entry = entry_for(label)
        for name in order:
            entry["scenarios"][name] = fill_keys(name, {"passed": None, "skipped": True, "reason": "not selected"})
        try:
            kernel = Kernel.load(label, args.work)
        except (OSError, KeyError) as e:
            entry["error"] = f"kernel not available: {e}"
            for name in selected:
                entry["scenarios"][name] = fill_keys(name, {"passed": False, "reason": entry["error"]})
            write()
            continue
        entry.update(kernel=kernel.kver, package=kernel.package, package_version=kernel.package_version)
        ctx = Context(kernel, os.path.join(args.results, label), args.balloonctl_note, opts)
        for name in selected:
            if label in kernel_only and name not in kernel_only[label]:
                entry["scenarios"][name] = fill_keys(name, {
                    "passed": None, "skipped": True,
                    "reason": f"not run on this kernel: --kernels {label}:{'+'.join(kernel_only[label])}"})
                continue
            if stop or interrupted:
                entry["scenarios"][name] = fill_keys(name, {"passed": False if interrupted else None,
                                                            "skipped": True,
                                                            "reason": "interrupted" if interrupted else "not run (fail-fast)"})
                continue
            print(f"[{label} {kernel.kver}] {name} ...", flush=True)
            t0 = time.monotonic()
            scenario = REGISTRY[name]
            try:
                if scenario.needs_balloonctl and not ctx.staged:
                    r = {"passed": False, "reason": f"balloonctl not available ({ctx.balloonctl_note})"}
                else:
                    r = scenario.run(ctx)
            except KeyboardInterrupt:
                interrupted = True
                r = {"passed": False, "reason": "interrupted"}
            except Exception as e:  # noqa: BLE001 - a scenario error is a failed scenario
                r = {"passed": False, "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            r["duration_s"] = round(time.monotonic() - t0, 1)
            entry["scenarios"][name] = fill_keys(name, r)
            print(f"[{label} {kernel.kver}] {name}: {status_word(r)} ({r['duration_s']} s) {describe(name, r)}",
                  flush=True)
            write()
            if not r.get("passed") and not args.keep_going:
                stop = True
    if system_kernels and not interrupted and not stop:
        try:
            run_system_tier(args.work, args.results, system_kernels, args.deb, opts, entry_for, write)
        except KeyboardInterrupt:
            interrupted = True
    if xen_kernels and xen_selected and not interrupted and not stop:
        try:
            xen_tier.run_tier(args.work, args.results, xen_kernels, xen_selected, opts, entry_for, write)
        except KeyboardInterrupt:
            interrupted = True
    write()
    text = summary(results, time.monotonic() - t_start)
    with open(os.path.join(args.results, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)

    # Each failure again with its reason, last: a CI log that keeps only
    # its tail still says why.
    failed: list[tuple[str, str]] = []
    for k in results:
        for name in selected if k["scenarios"] else []:
            if k["label"] in kernel_only and name not in kernel_only[k["label"]]:
                continue
            r = k["scenarios"][name]
            if not r.get("passed"):
                failed.append((f"{k['label']}/{name}", r.get("reason") or ""))
        for name in SYSTEM_SCENARIOS if k.get("system") else []:
            r = k["system"].get(name) or {}
            if not r.get("passed"):
                failed.append((f"{k['label']}/system/{name}", r.get("reason") or ""))
        for name in xen_selected if k.get("xen") else []:
            r = k["xen"].get(name) or {}
            if not r.get("passed"):
                failed.append((f"{k['label']}/xen/{name}", r.get("reason") or ""))
    if failed:
        print(f"failed: {' '.join(name for name, _ in failed)}")
        for name, reason in failed:
            print(f"  {name}: {reason or 'no reason recorded'}")
    print(f"results: {results_path}", flush=True)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
