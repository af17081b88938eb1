import BalloonKit
import Testing

private let frame: UInt64 = 4096

struct VmmemctlCase: Sendable, CustomTestStringConvertible {
  var tree: String
  var targetFrames: UInt64
  var currentFrames: UInt64
  var capabilities: UInt64
  var testDescription: String { tree }
}

@Suite("VmwBalloonReader: debugfs vmmemctl, both layouts")
struct VmwBalloonReaderTests {
  static let trees: [VmmemctlCase] = [
    .init(tree: "vmw-4.19", targetFrames: 262_144, currentFrames: 261_632, capabilities: 0x1e),
    .init(tree: "vmw-6.x", targetFrames: 262_144, currentFrames: 261_888, capabilities: 0x3e),
    .init(tree: "kb-example", targetFrames: 262_144, currentFrames: 262_144, capabilities: 0x36),
  ]

  @Test("the fixture files", arguments: trees)
  func fixture(_ c: VmmemctlCase) throws {
    let stats = try #require(try VmwBalloonReader.read(root: Fixtures.root(c.tree)))
    #expect(stats.targetBytes == c.targetFrames * frame)
    #expect(stats.currentBytes == c.currentFrames * frame)
    #expect(stats.usedCapabilities == c.capabilities)
  }

  @Test("absent file is nil", arguments: ["vmw-no-debugfs", "virtio-6.18", "none"])
  func absent(tree: String) throws {
    #expect(try VmwBalloonReader.read(root: Fixtures.root(tree)) == nil)
  }

  /// The mid-series state (commit 0395be3e): classic size lines, then the
  /// new `%-22s: %16lu (%lu failed)` command lines, then classic counters.
  @Test("mid-series layout") func midSeries() throws {
    let text = """
      balloon capabilities:   0x1e
      used capabilities:      0x1e
      is resetting:           n
      target:               131072 pages
      current:              131072 pages
      start                 :                1 (0 failed)
      target                :              600 (0 failed)
      lock                  :                0 (0 failed)

      timer:                   600
      doorbell:                  1
      prim2mAlloc:             256 (   0 failed)

      """
    let stats = try VmwBalloonReader.parse(Array(text.utf8), path: "vmmemctl")
    #expect(
      stats
        == VmwBalloonStats(targetBytes: 512 << 20, currentBytes: 512 << 20, usedCapabilities: 0x1e))
  }

  /// ≤ 4.8 kernels printed no capability lines and had `rate…` lines.
  @Test("oldest layout: no capabilities") func oldest() throws {
    let text = """
      target:                 2048 pages
      current:                1024 pages
      rateNoSleepAlloc:      16384 pages/sec
      rateSleepAlloc:         2048 pages/sec
      rateFree:              16384 pages/sec

      timer:                    12
      target:                   12 (   1 failed)

      """
    let stats = try VmwBalloonReader.parse(Array(text.utf8), path: "vmmemctl")
    #expect(
      stats == VmwBalloonStats(targetBytes: 8 << 20, currentBytes: 4 << 20, usedCapabilities: nil))
  }

  @Test("a failed)-counter line before the size line is skipped") func counterFirst() throws {
    let text =
      "target                :             3601 (2 failed)\n"
      + "target                :           100000\ncurrent               :            99999\n"
    let stats = try VmwBalloonReader.parse(Array(text.utf8), path: "vmmemctl")
    #expect(stats.targetBytes == 100_000 * frame)
    #expect(stats.currentBytes == 99_999 * frame)
  }

  @Test("used capabilities 0 prints without 0x (%#x)") func zeroCapabilities() throws {
    let text =
      "used capabilities     :                0\ntarget                :                0\n"
      + "current               :                0\n"
    let stats = try VmwBalloonReader.parse(Array(text.utf8), path: "vmmemctl")
    #expect(stats == VmwBalloonStats(targetBytes: 0, currentBytes: 0, usedCapabilities: 0))
  }

  @Test(
    "capability names",
    arguments: [
      (UInt64(0x1e), ["BASIC", "BATCHED", "BATCHED_2M", "DOORBELL"]),
      (UInt64(0x3e), ["BASIC", "BATCHED", "BATCHED_2M", "DOORBELL", "64BIT_TARGET"]),
      (UInt64(0x36), ["BASIC", "BATCHED", "DOORBELL", "64BIT_TARGET"]),
      (UInt64(0x2), ["BASIC"]),
      (UInt64(0x0), [String]()),
      (UInt64(0x41), ["cap0x1", "cap0x40"]),
      (UInt64(0x8000_0000_0000_0002), ["BASIC", "cap0x8000000000000000"]),
    ] as [(UInt64, [String])])
  func capabilityNames(caps: UInt64, names: [String]) {
    #expect(VmwBalloonReader.capabilityNames(caps) == names)
  }
}
