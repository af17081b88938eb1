import BalloonKit
import Testing

@Suite("VirtioBalloonReader: current from the counters, target from the probe")
struct VirtioBalloonReaderTests {
  static let device = BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: "/sys/devices/pci0000:00/0000:00:01.0/virtio0",
    driver: "virtio_balloon", featureBits: [1, 2, 5, 7, 32], pciAddress: "0000:00:01.0")

  func meminfo(balloon: UInt64?) -> Meminfo {
    var info = Meminfo(memTotal: 8 << 30, swapTotal: 0)
    info.balloon = balloon
    return info
  }

  func vmstat(gauge: UInt64?, inflated: UInt64?, deflated: UInt64?) -> Vmstat {
    var stat = Vmstat()
    stat.balloonBytes = gauge
    stat.balloonInflatedBytes = inflated
    stat.balloonDeflatedBytes = deflated
    return stat
  }

  @Test("nr_balloon_pages first, even when Balloon: differs (the gauge is per-cpu batched)")
  func gaugeFirst() throws {
    let current = try VirtioBalloonReader.current(
      meminfo: meminfo(balloon: 4096), vmstat: vmstat(gauge: 8192, inflated: 1, deflated: 0),
      vmstatPath: "/proc/vmstat")
    #expect(current == .known(bytes: 8192, source: "nr_balloon_pages"))
  }

  @Test("then meminfo Balloon:") func meminfoSecond() throws {
    let current = try VirtioBalloonReader.current(
      meminfo: meminfo(balloon: 4096), vmstat: vmstat(gauge: nil, inflated: 9, deflated: 0),
      vmstatPath: "/proc/vmstat")
    #expect(current == .known(bytes: 4096, source: "meminfo Balloon"))
  }

  @Test("then inflate − deflate") func events() throws {
    let current = try VirtioBalloonReader.current(
      meminfo: meminfo(balloon: nil),
      vmstat: vmstat(gauge: nil, inflated: 3 << 30, deflated: 1 << 30), vmstatPath: "/proc/vmstat")
    #expect(current == .known(bytes: 2 << 30, source: "balloon_inflate - balloon_deflate"))
  }

  @Test("deflate > inflate is malformed, naming /proc/vmstat") func underflow() throws {
    let error = try #require(
      sourceError { () throws(SourceError) in
        _ = try VirtioBalloonReader.current(
          meminfo: meminfo(balloon: nil),
          vmstat: vmstat(gauge: nil, inflated: 4096, deflated: 8192),
          vmstatPath: "/root/proc/vmstat")
      })
    #expect(error.path == "/root/proc/vmstat")
    #expect(error.description.contains("balloon_deflate"))
  }

  @Test("underflow in a tree names the tree's vmstat") func underflowInTree() throws {
    let tree = try Fixtures.copy("virtio-6.1")
    let original = String(decoding: try Fixtures.bytes("virtio-6.1", "/proc/vmstat"), as: UTF8.self)
    try tree.write(
      "/proc/vmstat",
      original.replacingOccurrences("balloon_deflate 262144", with: "balloon_deflate 400000"))
    do {
      _ = try readAll(tree.root)
      Issue.record("deflate > inflate was accepted")
    } catch let error as SourceError {
      #expect(error.path == tree.path("/proc/vmstat"))
      #expect(error.description.contains("exceeds balloon_inflate"))
    }
  }

  @Test("no counter at all is unknown, not an error") func noCounter() throws {
    let current = try VirtioBalloonReader.current(
      meminfo: meminfo(balloon: nil), vmstat: vmstat(gauge: nil, inflated: nil, deflated: nil),
      vmstatPath: "/proc/vmstat")
    #expect(current == .unknown(reason: VirtioBalloonReader.noCounterReason))
  }

  @Test("target: not probed / not PCI / probed") func target() {
    let notProbed = VirtioBalloonReader.target(device: Self.device, probe: nil)
    #expect(notProbed.target == .unknown(reason: VirtioBalloonReader.notProbedReason))
    #expect(notProbed.actualBytes == nil)

    var mmio = Self.device
    mmio.pciAddress = nil
    let probe = FakeProbe(
      pciAddress: "0000:00:01.0", config: VirtioBalloonConfig(numPages: 1, actual: 1))
    let notPCI = VirtioBalloonReader.target(device: mmio, probe: probe)
    #expect(notPCI.target == .unknown(reason: VirtioBalloonReader.notPCIReason))

    let probed = VirtioBalloonReader.target(device: Self.device, probe: probe)
    #expect(probed.target == .known(bytes: 4096, source: "virtio config num_pages"))
    #expect(probed.actualBytes == 4096)
  }
}

extension String {
  /// Replaces every occurrence (no Foundation in the tests either).
  func replacingOccurrences(_ old: String, with new: String) -> String {
    var result = ""
    var rest = Substring(self)
    while let range = rest.firstRange(of: old) {
      result += rest[..<range.lowerBound]
      result += new
      rest = rest[range.upperBound...]
    }
    return result + rest
  }
}
