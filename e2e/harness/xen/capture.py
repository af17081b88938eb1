"""Captures the Xen fixtures (Tests/Fixtures/xen-domu/): python e2e/harness/xen/capture.py <e2e work> <out dir>.
The raw capture is <out>/<label>-<step>-<MiB>/ with dom0.json; Tests/Fixtures/xen-domu/README.md has the layout it is converted to."""
import sys, time, os, json
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from harness.xen.host import XenHost, XenImages, DomU
work = sys.argv[1]
img = XenImages.load(work, ["bookworm", "backports"])
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
files = "target_kb target info/current_kb info/low_kb info/high_kb"
with XenHost(img, os.path.join(out, "logs")) as h:
    h.boot()
    for label in ["bookworm", "backports"]:
        with DomU(h, "c" + label, label, 512, 1024) as d:
            kver = d.ok("uname -r").strip()
            for step, mib in enumerate([None, 768, 384, 1024, 512]):
                if mib:
                    d.mem_set(mib)
                    # wait until current_kb reaches target (or 20 s)
                    for _ in range(40):
                        s = d.sysfs_kib()
                        if abs(s["current_kb"] - s["target_kb"]) <= 4096 and s["target_kb"] == mib * 1024: break
                        time.sleep(0.5)
                name = f"{label}-{step}-{mib or 512}"
                dd = os.path.join(out, name)
                os.makedirs(dd, exist_ok=True)
                x = "/sys/devices/system/xen_memory/xen_memory0"
                for f in files.split():
                    p = os.path.join(dd, "sys/devices/system/xen_memory/xen_memory0", f)
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    open(p, "w").write(d.ok(f"cat {x}/{f}"))
                os.makedirs(os.path.join(dd, "proc"), exist_ok=True)
                open(os.path.join(dd, "proc/meminfo"), "w").write(d.ok("cat /proc/meminfo"))
                xs = {k: d.xs(k) for k in ("memory/target", "memory/static-max")}
                xs["xl_list_mib"] = d.xl_list_mib()
                xs["kernel"] = kver
                json.dump(xs, open(os.path.join(dd, "dom0.json"), "w"))
                print(name, xs, flush=True)
