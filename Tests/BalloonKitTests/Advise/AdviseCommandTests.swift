import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

private let mib: UInt64 = 1 << 20
/// virtio-6.18's firmware memory map: 0x9fc00 + (0xbffe0000 − 0x100000) +
/// 0x140000000 bytes of System RAM (its README), 8192 MiB rounded up.
private let qemuRAM: UInt64 = 0x9fc00 + (0xbffe_0000 - 0x100000) + 0x1_4000_0000
private let qemuRAMMiB: UInt64 = 8192

/// The built `balloonctl advise` on the fixture trees: for every hypervisor
/// the exact line, with the numbers derived from the tree's own files and
/// the limit `status` shows for the same tree.
@Suite("balloonctl advise")
struct AdviseCommandTests {
  func json(_ arguments: [String]) throws -> JSONValue {
    let result = try Balloonctl.run(arguments)
    #expect(result.status == 0, "\(arguments): \(result.stderr)")
    return try JSONParser.parse(result.stdout)
  }

  func statusLimit(_ root: String) throws -> UInt64 {
    try #require(try json(["status", "--json", "--root", root])["limit"]?["bytes"]?.uint64)
  }

  func advice(_ doc: JSONValue, _ name: String) throws -> JSONValue {
    try #require(doc["advice"]?.array?.first { $0["hypervisor"]?.string == name })
  }

  @Test("the KB example: sched.mem.maxmemctl = \"1331\", found as VMware, the whole text")
  func kbExample() throws {
    let root = Fixtures.directory("kb-example").string
    let result = try Balloonctl.run(["advise", "--root", root])
    #expect(result.status == 0, "\(result.stderr)")
    // 0.65 × (4096 − 2048) MiB = 1331.2 MiB = 1395864371 bytes (its README).
    let expected = """
      Detected  VMware
                - DMI sys_vendor "VMware, Inc." (VMware)
                - DMI product_name "VMware7,1" (VMware)
                - a vmware balloon
      Limit     1.3 GiB (1395864371 bytes): the most the balloon may hold
                0.65 × (guest 4.0 GiB − pinned 2.0 GiB)
      Margin    none: no daemon state records pinned memory's peak since boot

      VMware  largest balloon, sched.mem.maxmemctl
        sched.mem.maxmemctl = "1331"
        govc vm.change -vm <vm> -e sched.mem.maxmemctl=1331
          the .vmx line takes effect at the next power-on; KB 340369

      """
    #expect(result.stdout == expected)
    let doc = try json(["advise", "--root", root, "--json"])
    #expect(doc["detected"]?["found"]?.string == "VMware")
    #expect(doc["limit"]?["bytes"]?.uint64 == 1_395_864_371)
    let vmware = try advice(doc, "vmware")
    #expect(vmware["value"]?.uint64 == 1331)
    #expect(vmware["unit"]?.string == "MB")
    #expect(vmware["bytes"]?.uint64 == 1331 * mib)
    #expect(vmware["setting"]?.string == "maximum_balloon")
  }

  @Test("virtio-6.18, auto: KVM/QEMU, and QMP, libvirt and Proxmox each get configured RAM − limit")
  func qemuAuto() throws {
    let root = Fixtures.directory("virtio-6.18").string
    let limit = try statusLimit(root)
    let doc = try json(["advise", "--root", root, "--json"])
    #expect(doc["limit"]?["bytes"]?.uint64 == limit, "the same number as status")
    #expect(doc["configured_ram_bytes"]?.uint64 == qemuRAM)
    #expect(doc["detected"]?["found"]?.string == "KVM/QEMU")
    #expect(
      doc["detected"]?["hypervisors"]?.array?.compactMap(\.string) == [
        "qemu", "libvirt", "proxmox",
      ])
    let evidence = doc["detected"]?["evidence"]?.array?.compactMap(\.string) ?? []
    #expect(evidence.contains("DMI sys_vendor \"QEMU\" (KVM/QEMU)"), "\(evidence)")
    #expect(evidence.contains("the CPU's hypervisor flag is set (/proc/cpuinfo)"), "\(evidence)")
    let floor = qemuRAMMiB - limit / mib
    let qemu = try advice(doc, "qemu")
    #expect(qemu["bytes"]?.uint64 == floor * mib)
    #expect(qemu["value"]?.uint64 == floor * mib)
    #expect(
      qemu["commands"]?.array?.first?.string
        == "{\"execute\":\"balloon\",\"arguments\":{\"value\":\(floor * mib)}}")
    let libvirt = try advice(doc, "libvirt")
    #expect(libvirt["commands"]?.array?.first?.string == "virsh setmem <domain> \(floor)M --live")
    #expect(
      libvirt["notes"]?.array?.compactMap(\.string).contains {
        $0.contains("<currentMemory>") && $0.contains("\(floor) MiB")
      } == true)
    let proxmox = try advice(doc, "proxmox")
    #expect(proxmox["commands"]?.array?.first?.string == "qm set <vmid> --balloon \(floor)")
    #expect(proxmox["value"]?.uint64 == floor)
  }

  /// Each hypervisor named explicitly on virtio-6.18: (name, bytes, command).
  static func expectations(limit: UInt64) -> [(String, UInt64, String)] {
    let limitMiB = limit / mib
    let floor = qemuRAMMiB - limitMiB
    let hyperV = (floor + floor % 2) * mib
    return [
      ("vmware", limitMiB * mib, "sched.mem.maxmemctl = \"\(limitMiB)\""),
      ("firecracker", limitMiB * mib, "\"amount_mib\": \(limitMiB)}"),
      ("cloud-hypervisor", limitMiB * mib, "resize --balloon \(limitMiB * mib)"),
      ("qemu", floor * mib, "\"value\":\(floor * mib)"),
      ("libvirt", floor * mib, "virsh setmem <domain> \(floor)M --live"),
      ("proxmox", floor * mib, "qm set <vmid> --balloon \(floor)"),
      ("xen", floor * mib, "xl mem-set <domain> \(floor)m"),
      ("hyperv", hyperV, "Set-VMMemory -VMName <vm> -MinimumBytes \(hyperV)"),
    ]
  }

  @Test("every hypervisor by name: its exact line, rounded to the safe side")
  func everyHypervisor() throws {
    let root = Fixtures.directory("virtio-6.18").string
    let limit = try statusLimit(root)
    let cases = Self.expectations(limit: limit)
    #expect(Set(cases.map(\.0)) == Set(Hypervisor.allCases.map(\.rawValue)))
    for (name, bytes, command) in cases {
      let doc = try json(["advise", "--root", root, "--hypervisor", name, "--json"])
      #expect(doc["detected"] == .null, "named, not detected")
      let item = try advice(doc, name)
      #expect(item["bytes"]?.uint64 == bytes, "\(name)")
      let commands = item["commands"]?.array?.compactMap(\.string) ?? []
      #expect(commands.contains { $0.contains(command) }, "\(name): \(commands)")
      // Safe side: a largest balloon never above the limit; a floor never
      // below configured RAM − limit.
      if item["setting"]?.string == "maximum_balloon" {
        #expect(bytes <= limit && limit - bytes < mib, "\(name)")
      } else {
        #expect(bytes >= qemuRAM - limit && bytes - (qemuRAM - limit) < 3 * mib, "\(name)")
      }
      let text = try Balloonctl.run(["advise", "--root", root, "--hypervisor", name])
      #expect(text.status == 0)
      #expect(text.stdout.contains(command), "\(name): \(text.stdout)")
    }
  }

  @Test(
    "auto on each kind's tree says what it found",
    arguments: [
      ("xen", "Xen", ["xen"], "/sys/hypervisor/type says \"xen\""),
      ("hyperv", "Hyper-V", ["hyperv"], "a hyperv balloon"),
      ("vmw-6.x", "VMware", ["vmware"], "a vmware balloon"),
      // No DMI, no cpuinfo: the balloon alone says a KVM host, not which.
      (
        "virtio-6.1", "a KVM hypervisor (virtio balloon)",
        ["qemu", "libvirt", "proxmox", "firecracker", "cloud-hypervisor"], "a virtio balloon"
      ),
    ])
  func detection(tree: String, found: String, hypervisors: [String], fact: String) throws {
    let result = try Balloonctl.run(["advise", "--root", Fixtures.directory(tree).string, "--json"])
    let doc = try JSONParser.parse(result.stdout)
    #expect(doc["detected"]?["found"]?.string == found)
    #expect(doc["detected"]?["hypervisors"]?.array?.compactMap(\.string) == hypervisors)
    #expect(doc["detected"]?["evidence"]?.array?.compactMap(\.string).contains(fact) == true)
  }

  @Test("a floor needs the configured RAM: without a memory map it is refused, and says why")
  func floorWithoutMemmap() throws {
    // The xen tree has no /sys/firmware/memmap.
    let result = try Balloonctl.run(["advise", "--root", Fixtures.directory("xen").string])
    #expect(result.status == 1)
    #expect(result.stdout.contains("unknown: no System RAM in /sys/firmware/memmap"))
    #expect(
      result.stderr
        == "balloonctl: no host setting can be computed: no System RAM in /sys/firmware/memmap: configured RAM unknown\n"
    )
    // A largest balloon needs no configured RAM.
    let vmware = try Balloonctl.run([
      "advise", "--root", Fixtures.directory("xen").string, "--hypervisor", "vmware",
    ])
    #expect(vmware.status == 0, "\(vmware.stderr)")
  }

  @Test("no limit can be computed: refused with the file that could not be read")
  func noLimit() throws {
    let tree = try Fixtures.copy("virtio-6.18")
    tree.remove("/proc/meminfo")
    let result = try Balloonctl.run(["advise", "--root", tree.base.string])
    #expect(result.status == 1)
    #expect(result.stdout.isEmpty)
    #expect(
      result.stderr.hasPrefix(
        "balloonctl: no limit can be computed, so no advice: \(tree.path("/proc/meminfo"))"),
      "\(result.stderr)")
  }

  @Test("auto with no hypervisor found refuses; an unknown name is a usage error")
  func refusals() throws {
    let none = try Balloonctl.run(["advise", "--root", Fixtures.directory("none").string])
    #expect(none.status == 1)
    #expect(none.stderr.contains("--hypervisor auto: no hypervisor with a balloon found"))
    let bad = try Balloonctl.run([
      "advise", "--root", Fixtures.directory("virtio-6.18").string, "--hypervisor", "bhyve",
    ])
    #expect(bad.status == 64)
  }

  @Test("--fraction moves the advice as it moves the limit")
  func fraction() throws {
    let root = Fixtures.directory("kb-example").string
    let doc = try json(["advise", "--root", root, "--fraction", "0.5", "--json"])
    // 0.5 × 2048 MiB.
    #expect(try advice(doc, "vmware")["value"]?.uint64 == 1024)
  }

  /// A daemon state in `<tree>/run/balloonctl` recording a pinned peak.
  func writeState(_ tree: TemporaryTree, peak: UInt64, at: Int64) throws {
    var state = DaemonState(pid: 4242, mode: "report", intervalMilliseconds: 1000, startedAt: at)
    state.maxPinnedBytes = peak
    state.maxPinnedAt = at
    try StateStore(directory: tree.root.path("/run/balloonctl")).save(state)
  }

  @Test("a pinned peak above now lowers the advice to the limit at that peak, said as such")
  func margin() throws {
    let tree = try Fixtures.copy("virtio-6.18")
    let root = tree.base.string
    let now = try json(["advise", "--root", root, "--json"])
    let limit = try #require(now["limit"])
    let guest = try #require(limit["guest_bytes"]?.uint64)
    let pinned = try #require(limit["pinned_bytes"]?.uint64)
    let peak = pinned + 512 * mib
    try writeState(tree, peak: peak, at: 1_780_000_000)
    let doc = try json(["advise", "--root", root, "--json"])
    // floor(0.65 × (guest − (peak + 1 MiB))), no swap on this tree: the
    // daemon records the peak to within a MiB, so the margin adds that MiB.
    let peakLimit = BalloonLimit.compute(
      guestBytes: guest, pinnedBytes: peak + mib, swapTotalBytes: 0
    ).bytes
    #expect(doc["limit"]?["bytes"] == limit["bytes"], "the limit now is unchanged")
    #expect(doc["peak_pinned_bytes"]?.uint64 == peak)
    #expect(doc["peak_limit_bytes"]?.uint64 == peakLimit)
    #expect(doc["advised_limit_bytes"]?.uint64 == peakLimit)
    #expect(try advice(doc, "qemu")["bytes"]?.uint64 == (qemuRAMMiB - peakLimit / mib) * mib)
    let text = try Balloonctl.run(["advise", "--root", root]).stdout
    #expect(text.contains("Margin    pinned peaked at \(ByteFormat.human(peak)) since boot"))
    #expect(
      text.contains(
        "is \(ByteFormat.human(peakLimit)) (\(peakLimit) bytes): the advice below uses it"))

    // A peak (+ its MiB) at or below now needs no margin.
    try writeState(tree, peak: pinned - mib, at: 1_780_000_000)
    let level = try json(["advise", "--root", root, "--json"])
    #expect(level["advised_limit_bytes"] == limit["bytes"])
    #expect(
      try Balloonctl.run(["advise", "--root", root]).stdout.contains(
        "Margin    none needed: pinned is above its recorded peak since boot"))
  }
}

@Suite("advise: the pure parts")
struct HostAdviceTests {
  @Test("Hyper-V's floor is rounded up to its 2 MiB step; MiB floors round RAM up, the limit down")
  func rounding() {
    // KB example: limit 1331.2 MiB; 4096 MiB configured (+ half a MiB to round up).
    let limit = BalloonLimit.compute(
      guestBytes: 4096 * mib, pinnedBytes: 2048 * mib, swapTotalBytes: 4096 * mib)
    let inputs = AdviceInputs(limit: limit, configuredRAM: 4096 * mib + mib / 2)
    // ⌈4096.5⌉ − ⌊1331.2⌋ = 4097 − 1331 = 2766 MiB: even already.
    #expect(HostAdvice.compute(.qemu, inputs).bytes == 2766 * mib)
    #expect(HostAdvice.compute(.hyperv, inputs).bytes == 2766 * mib)
    let exact = AdviceInputs(limit: limit, configuredRAM: 4096 * mib)
    // 4096 − 1331 = 2765 MiB; Hyper-V: 2766.
    #expect(HostAdvice.compute(.xen, exact).bytes == 2765 * mib)
    #expect(HostAdvice.compute(.hyperv, exact).bytes == 2766 * mib)
    #expect(HostAdvice.compute(.vmware, exact).value == 1331)
  }

  @Test("a limit above the configured RAM gives a floor of 0, not a wrapped number")
  func noWrap() {
    let limit = BalloonLimit.compute(guestBytes: 8192 * mib, pinnedBytes: 0, swapTotalBytes: 0)
    let inputs = AdviceInputs(limit: limit, configuredRAM: 1024 * mib)
    #expect(HostAdvice.compute(.proxmox, inputs).bytes == 0)
  }

  @Test("DMI: Microsoft Corporation is Hyper-V only with product_name Virtual Machine")
  func microsoft() {
    let vm = HypervisorDetection.decide(
      dmi: [("sys_vendor", "Microsoft Corporation"), ("product_name", "Virtual Machine")],
      hypervisorType: nil, cpuFlag: true, balloonKinds: [])
    #expect(vm.candidates == [.hyperv])
    let laptop = HypervisorDetection.decide(
      dmi: [("sys_vendor", "Microsoft Corporation"), ("product_name", "Surface Laptop 5")],
      hypervisorType: nil, cpuFlag: false, balloonKinds: [])
    #expect(laptop.candidates.isEmpty)
    let ch = HypervisorDetection.decide(
      dmi: [("sys_vendor", "Cloud Hypervisor"), ("product_name", "cloud-hypervisor")],
      hypervisorType: nil, cpuFlag: true, balloonKinds: [.virtio])
    #expect(ch.candidates == [.cloudHypervisor])
  }

  @Test("the hypervisor flag is read from the flags line only")
  func cpuFlag() {
    #expect(
      HypervisorDetection.hasHypervisorFlag(
        Array("processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n".utf8)))
    #expect(
      !HypervisorDetection.hasHypervisorFlag(
        Array("model name\t: hypervisor\nflags\t\t: fpu vme\n".utf8)))
  }
}
