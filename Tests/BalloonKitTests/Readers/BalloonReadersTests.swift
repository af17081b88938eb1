import BalloonKit
import Testing

private let kib: UInt64 = 1024
private let page: UInt64 = 4096

/// A config-space probe that answers from a table, and only for the PCI
/// function it expects.
struct FakeProbe: VirtioConfigProbe {
  var pciAddress: String
  var config: VirtioBalloonConfig

  func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig {
    guard pciAddress == self.pciAddress else { throw ProbeError("unexpected device \(pciAddress)") }
    return config
  }
}

struct FailingProbe: VirtioConfigProbe {
  func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig {
    throw ProbeError("PCI config window of \(pciAddress): writes blocked by lockdown")
  }
}

/// Discovery, then the reading, as the rest of balloonctl does it.
func readAll(_ root: Root, probe: (any VirtioConfigProbe)? = nil) throws -> [BalloonReading] {
  let meminfo = try MeminfoReader.read(from: root)
  let vmstat = try VmstatReader.read(from: root)
  return try SysfsDiscovery(root: root).discover().map { device throws(SourceError) in
    try BalloonReaders.read(device, root: root, meminfo: meminfo, vmstat: vmstat, probe: probe)
  }
}

struct ReadingCase: Sendable, CustomTestStringConvertible {
  var tree: String
  var current: Sourced
  var target: Sourced
  var extraFeatures: [String] = []
  var testDescription: String { tree }
}

@Suite("BalloonReaders.read on every tree (no probe)")
struct BalloonReadersTests {
  static let notProbed = Sourced.unknown(reason: VirtioBalloonReader.notProbedReason)

  static let cases: [ReadingCase] = [
    .init(
      tree: "virtio-6.18", current: .known(bytes: 262_144 * page, source: "nr_balloon_pages"),
      target: notProbed),
    .init(
      tree: "virtio-6.1",
      current: .known(bytes: 131_072 * page, source: "balloon_inflate - balloon_deflate"),
      target: notProbed),
    .init(
      tree: "virtio-unbound", current: .known(bytes: 0, source: "nr_balloon_pages"),
      target: notProbed),
    .init(
      tree: "hugetlb-multi",
      current: .known(bytes: 65_536 * page, source: "balloon_inflate - balloon_deflate"),
      target: notProbed),
    .init(
      tree: "pre-4.16",
      current: .known(bytes: 65_536 * page, source: "balloon_inflate - balloon_deflate"),
      target: notProbed),
    .init(
      tree: "vmw-4.19", current: .known(bytes: 261_632 * page, source: "vmmemctl current"),
      target: .known(bytes: 1 << 30, source: "vmmemctl target"),
      extraFeatures: ["BASIC", "BATCHED", "BATCHED_2M", "DOORBELL"]),
    .init(
      tree: "vmw-6.x", current: .known(bytes: 261_888 * page, source: "vmmemctl current"),
      target: .known(bytes: 1 << 30, source: "vmmemctl target"),
      extraFeatures: ["BASIC", "BATCHED", "BATCHED_2M", "DOORBELL", "64BIT_TARGET"]),
    .init(
      tree: "vmw-no-debugfs",
      current: .known(bytes: 524_288 * kib, source: BalloonReaders.meminfoBalloonVMwareSource),
      target: .unknown(reason: "debugfs not mounted")),
    .init(
      tree: "kb-example", current: .known(bytes: 1 << 30, source: "vmmemctl current"),
      target: .known(bytes: 1 << 30, source: "vmmemctl target"),
      extraFeatures: ["BASIC", "BATCHED", "DOORBELL", "64BIT_TARGET"]),
    .init(
      // Against the grant a fresh process sees (the 3 GiB current
      // reservation): nothing taken yet, the 2.5 GiB target takes 512 MiB.
      tree: "xen", current: .known(bytes: 0, source: "granted - info/current_kb"),
      target: .known(bytes: 512 << 20, source: "granted - target_kb")),
    .init(
      tree: "hyperv", current: .known(bytes: 512 << 20, source: "hv-balloon pages_ballooned"),
      target: .unknown(reason: BalloonReaders.hyperVTargetReason)),
    .init(
      tree: "hyperv-committed",
      current: .known(bytes: 1 << 30, source: "hv-balloon pages_ballooned"),
      target: .unknown(reason: BalloonReaders.hyperVTargetReason)),
  ]

  @Test("every tree with a balloon has a case") func coverage() {
    #expect(Set(Self.cases.map(\.tree)) == Set(Fixtures.allTrees).subtracting(["none"]))
  }

  @Test("current and target, with their sources", arguments: cases)
  func reading(_ c: ReadingCase) throws {
    let readings = try readAll(Fixtures.root(c.tree))
    let reading = try #require(readings.first)
    #expect(readings.count == 1)
    #expect(reading.current == c.current)
    #expect(reading.target == c.target)
    #expect(reading.extraFeatures == c.extraFeatures)
    #expect(reading.deviceActualBytes == nil)
  }

  @Test("no balloon, no readings") func none() throws {
    #expect(try readAll(Fixtures.root("none")).isEmpty)
  }

  @Test("virtio features plus vmw capabilities") func features() throws {
    let virtio = try #require(try readAll(Fixtures.root("virtio-6.18")).first)
    #expect(virtio.features == ["STATS_VQ", "DEFLATE_ON_OOM", "REPORTING", "bit7", "VERSION_1"])
    let vmw = try #require(try readAll(Fixtures.root("vmw-4.19")).first)
    #expect(vmw.features == ["BASIC", "BATCHED", "BATCHED_2M", "DOORBELL"])
  }
}

@Suite("BalloonReaders.read with a config-space probe")
struct ProbedReadingTests {
  @Test(
    "a probe gives the target and the device's actual",
    arguments: [
      ("virtio-6.18", "0000:00:01.0"), ("virtio-6.1", "0000:00:04.0"),
      ("hugetlb-multi", "0000:00:04.0"), ("pre-4.16", "0000:00:06.0"),
      ("virtio-unbound", "0000:00:01.0"),
    ])
  func probed(tree: String, pciAddress: String) throws {
    let probe = FakeProbe(
      pciAddress: pciAddress, config: VirtioBalloonConfig(numPages: 327_680, actual: 262_100))
    let reading = try #require(try readAll(Fixtures.root(tree), probe: probe).first)
    #expect(reading.target == .known(bytes: 327_680 * 4096, source: "virtio config num_pages"))
    // UInt64(...): #expect(optional == untyped product) picks AnyHashable's ==,
    // through a compiler thunk that reads past the value (make test-asan).
    #expect(reading.deviceActualBytes == UInt64(262_100 * 4096))
    #expect(reading.effectiveCurrentBytes == UInt64(262_100 * 4096))
  }

  @Test("a failing probe makes the target unknown with its reason") func failing() throws {
    let reading = try #require(
      try readAll(Fixtures.root("virtio-6.18"), probe: FailingProbe()).first)
    #expect(
      reading.target
        == .unknown(reason: "PCI config window of 0000:00:01.0: writes blocked by lockdown"))
    #expect(reading.deviceActualBytes == nil)
    #expect(reading.current == .known(bytes: 1 << 30, source: "nr_balloon_pages"))
  }

  @Test("the probe is never used for other kinds", arguments: ["vmw-6.x", "xen", "hyperv"])
  func otherKinds(tree: String) throws {
    let reading = try #require(try readAll(Fixtures.root(tree), probe: FailingProbe()).first)
    #expect(reading.deviceActualBytes == nil)
    #expect(reading.target.reason?.contains("lockdown") != true)
  }
}
