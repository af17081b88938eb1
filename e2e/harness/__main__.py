"""Runs the end-to-end scenarios on each kernel; writes results JSON + summary.

    python -m harness --work e2e/work --results DIR [--kernels bookworm,backports]
                      [--scenarios smoke,status,...] [--keep-going | --fail-fast]
                      [--ignore-unimplemented] [--balloonctl-note staged]
                      [--tiers busybox,system] [--system-kernels bookworm,trixie,backports]
                      [--deb PATH] [--commit SHA] [--balloonctl-version TEXT]

Two tiers: ``busybox`` (the bare binary under a busybox init, scenarios in
harness/scenarios.py) and ``system`` (the .deb installed in real Debian
guests with systemd, harness/system/).

Prints progress, then the summary, and as its LAST line ``results: <path>``.
Exit status: 0 if every selected scenario passed (scenarios whose reason is
"not implemented" are ignored with --ignore-unimplemented), 1 if any failed,
130 if interrupted.
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

from .guest import MiB, Kernel
from .scenarios import NOT_IMPLEMENTED, REGISTRY, RESULT_KEYS, Context
from .system.scenarios import SCENARIOS as SYSTEM_SCENARIOS
from .system.scenarios import describe as system_describe
from .system.tier import run_tier as run_system_tier

KERNEL_ALIASES = {
    "bookworm": "bookworm", "6.1": "bookworm", "debian12": "bookworm", "old": "bookworm",
    "backports": "backports", "bpo": "backports", "trixie-backports": "backports", "new": "backports",
    "trixie": "trixie", "6.12": "trixie", "debian13": "trixie",
}
ALL_KERNELS = ["bookworm", "trixie", "backports"]
ISSUE_SCENARIOS = ["status", "kb_failure", "hold_readmit", "crash_safety", "report_mode", "hotplug", "deflate_on_oom"]


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


def fmt_ms(v: Any) -> str:
    return "n/a" if v is None else f"{v} ms"


def fmt_mib(v: Any) -> str:
    return "n/a" if v is None else f"{v / MiB:.1f} MiB"


def describe(name: str, r: dict) -> str:
    """One line of detail per scenario for the summary."""
    if r.get("skipped"):
        return r.get("reason", "")
    bits = []
    if name == "smoke" and "inflate_s" in r:
        bits.append(f"boot {r.get('boot_s')}s, inflate 324 MiB {r.get('inflate_s')}s, deflate {r.get('deflate_s')}s, "
                    f"guest pages {r.get('guest_balloon_pages')}/{r.get('expected_pages')} ({r.get('guest_source')})")
    elif name == "kb_failure":
        w = r.get("without") or {}
        if w:
            wl = "completed" if w.get("workload_completed") else \
                ("OOM-killed" if w.get("workload_oom_killed") else f"failed rc={w.get('workload_rc')}")
            bits.append(f"OOM kills without={r.get('oom_kills_without')} "
                        f"(before workload {w.get('oom_kills_before_workload')}, during {w.get('oom_kills_during_workload')}) "
                        f"with={'n/a' if r.get('oom_kills_with') is None else r.get('oom_kills_with')}; "
                        f"without: balloon asked {fmt_mib(w.get('balloon_target_bytes'))}, reached "
                        f"{fmt_mib(w.get('balloon_reached_bytes'))} (max {fmt_mib(w.get('max_balloon_bytes'))}), "
                        f"memlock {w.get('lock_mib')} MiB {'survived' if w.get('memlock_survived') else 'killed'}, "
                        f"first OOM {w.get('first_oom_after_request_s')}s after the request at balloon "
                        f"{fmt_mib(w.get('balloon_before_first_oom_bytes'))}, "
                        f"workload {w.get('workload_mib')} MiB {wl}, victims {w.get('oom_victims')}")
        wi = r.get("with") or {}
        bits.append(f"with: max balloon {fmt_mib(r.get('max_actual_bytes'))} vs limit {fmt_mib(r.get('limit_bytes'))}, "
                    f"over limit {fmt_ms(r.get('over_limit_ms'))}, reaction {fmt_ms(r.get('reaction_ms'))} "
                    f"(balloon back at 0 after {fmt_ms(wi.get('release_complete_ms'))}), "
                    f"interval {fmt_ms(r.get('interval_ms'))}, workload "
                    f"{'completed' if wi.get('workload_completed') else 'n/a' if not wi else 'FAILED'}")
        re_ = r.get("with_reactive") or {}
        if re_:
            bits.append(f"with, reactive (--no-probe-target): OOM kills {re_.get('oom_kills')}, max balloon "
                        f"{fmt_mib(re_.get('max_actual_bytes'))} vs limit {fmt_mib(re_.get('limit_bytes'))}, "
                        f"over limit {fmt_ms(re_.get('over_limit_ms'))} (bound: interval {fmt_ms(re_.get('interval_ms'))}"
                        f" + deflate {fmt_ms(re_.get('deflate_ms'))}), reaction {fmt_ms(re_.get('reaction_ms'))}, "
                        f"workload {'completed' if re_.get('workload_completed') else 'FAILED'}")
    elif name == "hold_readmit":
        bits.append(f"release {fmt_ms(r.get('release_ms'))} (balloon at 0 after {fmt_ms(r.get('release_complete_ms'))}), "
                    f"readmit {fmt_ms(r.get('readmit_ms'))} (target reached after {fmt_ms(r.get('readmit_full_ms'))}), "
                    f"interval {fmt_ms(r.get('interval_ms'))}, limit {fmt_mib(r.get('limit_bytes'))}")
        pre = r.get("precheck")
        if pre:
            bits.append(f"machinery (manual unbind/bind): release {fmt_ms(pre.get('manual_release_ms'))}, "
                        f"re-admit start {fmt_ms(pre.get('manual_readmit_start_ms'))}, "
                        f"full {fmt_ms(pre.get('manual_readmit_full_ms'))}")
    elif name == "crash_safety" and "releases_after" in r:
        bits.append(f"hold resumed={r.get('held_after_restart')}, releases {r.get('releases_before')} -> "
                    f"{r.get('releases_after')}, balloon after restart {fmt_mib(r.get('max_balloon_after_restart'))}, "
                    f"re-admitted={r.get('bound_after_readmit')}")
    elif name == "report_mode" and "bound" in r:
        bits.append(f"bound={r.get('bound')}, balloon {fmt_mib(r.get('balloon_bytes'))}, "
                    f"logged: {(r.get('would_lines') or ['-'])[0].split('] ')[-1]}")
    elif name == "hotplug" and "alive_after_add" in r:
        bits.append(f"device_del {r.get('device_del_s')}s, re-bound after {r.get('bound_after_add_s')}s, daemon alive "
                    f"{r.get('alive_after_del')}/{r.get('alive_after_add')}, new device held={r.get('held_new_device')}")
    elif name == "hotplug" and r.get("precheck"):
        p = r["precheck"]
        bits.append(f"machinery: device_del {p.get('device_del_s')}s, rebound {p.get('guest_bound_after_add')} "
                    f"after {p.get('bound_after_add_s')}s, re-inflate {p.get('reinflate_s')}s")
    elif name == "deflate_on_oom" and r.get("on"):
        on, off = r["on"], r.get("off", {})
        bits.append(f"MemTotal drop on={on.get('memtotal_drop_kb')} kB, off={off.get('memtotal_drop_kb')} kB "
                    f"({'ok' if r.get('precheck', {}).get('passed') else 'WRONG'})")
        if "status_guest_bytes_inflated" in on:
            bits.append(f"balloonctl guest size on {fmt_mib(on.get('status_guest_bytes_deflated'))} -> "
                        f"{fmt_mib(on.get('status_guest_bytes_inflated'))}, off "
                        f"{fmt_mib(off.get('status_guest_bytes_deflated'))} -> {fmt_mib(off.get('status_guest_bytes_inflated'))}")
    elif name == "status" and r.get("points"):
        bits.append(", ".join(f"{p['target_bytes'] // MiB} MiB: current={p.get('current_bytes')} "
                              f"target={p.get('target_bytes')}" for p in r["points"]))
    if not r.get("passed"):
        reason = r.get("reason", "")
        if r.get("detail"):
            reason += f" ({r['detail']})"
        bits.insert(0, reason)
    return "; ".join(b for b in bits if b)


def status_word(r: dict) -> str:
    if r.get("skipped"):
        return "SKIP"
    if r.get("passed"):
        return "PASS"
    if r.get("reason") == NOT_IMPLEMENTED:
        return "TODO"
    return "FAIL"


def summary(results: list[dict], elapsed: float) -> str:
    lines = [f"balloonctl e2e: {len(results)} kernel(s), {elapsed:.0f} s"]
    counts = {"PASS": 0, "FAIL": 0, "TODO": 0, "SKIP": 0}
    for k in results:
        lines.append(f"kernel {k['kernel']} ({k['label']}: {k.get('package')} {k.get('package_version')})")
        if k.get("error"):
            lines.append(f"  ERROR: {k['error']}")
        for name, r in k["scenarios"].items():
            w = status_word(r)
            counts[w] += 1
            dur = f"{r['duration_s']:6.1f}s" if isinstance(r.get("duration_s"), (int, float)) else "     - "
            lines.append(f"  {name:<15} {w}  {dur}  {describe(name, r)}")
        sysr = k.get("system")
        if sysr:
            lines.append(f"  system tier (Debian {sysr.get('suite')} userspace, {sysr.get('deb')}, "
                         f"{sysr.get('wall_s')} s){': ERROR ' + sysr['error'] if sysr.get('error') else ''}")
            for name in SYSTEM_SCENARIOS:
                r = sysr.get(name) or {}
                w = "PASS" if r.get("passed") else "FAIL"
                counts[w] += 1
                lines.append(f"  {name:<15} {w}  {system_describe(name, r)}")
    lines.append(f"totals: PASS {counts['PASS']}, FAIL {counts['FAIL']}, TODO (not implemented) {counts['TODO']}, "
                 f"skipped {counts['SKIP']}")
    return "\n".join(lines)


def fill_keys(name: str, r: dict) -> dict:
    for key in RESULT_KEYS.get(name, []):
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
    ap.add_argument("--ignore-unimplemented", action="store_true",
                    default=os.environ.get("E2E_IGNORE_UNIMPLEMENTED", "0") == "1",
                    help="exit 0 even if scenarios report 'not implemented' (they still count as not passed)")
    ap.add_argument("--balloonctl-note", default=os.environ.get("E2E_BALLOONCTL_NOTE", "not staged"),
                    help="'staged' when the initramfs holds /usr/local/bin/balloonctl, else why not")
    ap.add_argument("--tiers", default=os.environ.get("E2E_TIERS", "busybox,system"),
                    help="busybox, system or both (default)")
    ap.add_argument("--system-kernels", default=os.environ.get("E2E_SYSTEM_KERNELS", "bookworm,trixie,backports"))
    ap.add_argument("--deb", default=os.environ.get("E2E_DEB", ""), help="the balloonctl .deb the system tier installs")
    ap.add_argument("--commit", default="", help="the commit under test (git rev-parse HEAD)")
    ap.add_argument("--balloonctl-version", default="", help="balloonctl --version of the binary under test")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="scenario option, e.g. kb_workload_mib=256 (repeatable)")
    args = ap.parse_args(argv)
    if args.keep_going is None:
        args.keep_going = os.environ.get("E2E_KEEP_GOING", "1") != "0"

    order = ["smoke"] + ISSUE_SCENARIOS
    tiers = parse_list(args.tiers, ["busybox", "system"])
    kernels = parse_list(args.kernels, ALL_KERNELS, KERNEL_ALIASES) if "busybox" in tiers else []
    system_kernels = parse_list(args.system_kernels, ALL_KERNELS, KERNEL_ALIASES) if "system" in tiers else []
    if system_kernels and not args.deb:
        raise SystemExit("the system tier needs --deb PATH (or E2E_DEB)")
    selected = parse_list(args.scenarios, order)
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
            if stop or interrupted:
                entry["scenarios"][name] = fill_keys(name, {"passed": False if interrupted else None,
                                                            "skipped": True,
                                                            "reason": "interrupted" if interrupted else "not run (fail-fast)"})
                continue
            print(f"[{label} {kernel.kver}] {name} ...", flush=True)
            t0 = time.monotonic()
            try:
                r = REGISTRY[name].func(ctx)
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
            if not r.get("passed") and not args.keep_going and \
                    not (args.ignore_unimplemented and r.get("reason") == NOT_IMPLEMENTED):
                stop = True
    if system_kernels and not interrupted and not stop:
        try:
            run_system_tier(args.work, args.results, system_kernels, args.deb, opts, entry_for, write)
        except KeyboardInterrupt:
            interrupted = True
    write()
    text = summary(results, time.monotonic() - t_start)
    with open(os.path.join(args.results, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)

    failed = []
    for k in results:
        for name in selected if k["scenarios"] else []:
            r = k["scenarios"][name]
            if r.get("passed"):
                continue
            if args.ignore_unimplemented and r.get("reason") == NOT_IMPLEMENTED:
                continue
            failed.append(f"{k['label']}/{name}")
        for name in SYSTEM_SCENARIOS if k.get("system") else []:
            if not (k["system"].get(name) or {}).get("passed"):
                failed.append(f"{k['label']}/system/{name}")
    if failed:
        print(f"failed: {' '.join(failed)}")
    print(f"results: {results_path}", flush=True)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
