import Testing

@testable import BalloonKit

/// One snapshot of absurd but representable numbers.
struct ExtremeSnapshot: Sendable, CustomTestStringConvertible {
  var name: String
  var memTotal: UInt64
  var swapTotal: UInt64
  var mlocked: UInt64
  var balloon: UInt64
  var target: UInt64
  var configuredRAM: UInt64?
  var testDescription: String { name }
}

@Suite("Text output is safe for any UInt64: no trap in percent, bar or units")
struct ExtremeValuesTests {
  static let max = UInt64.max
  static let snapshots: [ExtremeSnapshot] = [
    .init(name: "all zero", memTotal: 0, swapTotal: 0, mlocked: 0, balloon: 0, target: 0),
    .init(name: "guest 1 byte", memTotal: 1, swapTotal: 0, mlocked: 0, balloon: 0, target: 0),
    .init(
      name: "guest 0, pinned max", memTotal: 0, swapTotal: 0, mlocked: max, balloon: 0, target: 0),
    .init(
      name: "guest 1 KiB, pinned max", memTotal: 1024, swapTotal: 1, mlocked: max, balloon: 0,
      target: 0),
    .init(
      name: "guest 1 KiB, balloon max", memTotal: 1024, swapTotal: 0, mlocked: 0, balloon: max,
      target: max),
    .init(
      name: "pinned > guest, balloon > guest", memTotal: 4096, swapTotal: 0, mlocked: 1 << 40,
      balloon: 1 << 50, target: 1 << 50),
    .init(
      name: "everything max", memTotal: max, swapTotal: max, mlocked: max, balloon: max,
      target: max, configuredRAM: max),
    .init(
      name: "guest max, nothing else", memTotal: max, swapTotal: 0, mlocked: 0, balloon: 1,
      target: 0, configuredRAM: 1),
    .init(
      name: "configured RAM max", memTotal: 8 << 30, swapTotal: 0, mlocked: 0, balloon: 0,
      target: 0, configuredRAM: max),
  ]

  static func snapshot(_ e: ExtremeSnapshot, removesFromMemTotal: Bool) -> GuestSnapshot {
    var meminfo = Meminfo(memTotal: e.memTotal, swapTotal: e.swapTotal)
    meminfo.mlocked = e.mlocked
    meminfo.unevictable = e.mlocked
    meminfo.anonPages = e.mlocked
    meminfo.shmem = e.mlocked
    // virtio without DEFLATE_ON_OOM takes ballooned pages out of MemTotal.
    let device = BalloonDevice(
      kind: .virtio, name: "virtio0", sysPath: "/sys/devices/virtio0", driver: "virtio_balloon",
      featureBits: removesFromMemTotal ? [] : [VirtioFeature.deflateOnOOM])
    let reading = BalloonReading(
      device: device, current: .known(bytes: e.balloon, source: "test"),
      target: .known(bytes: e.target, source: "test"), deviceActualBytes: e.balloon / 2)
    return GuestSnapshot.assemble(
      balloons: [reading], meminfo: meminfo, vmstat: Vmstat(), vmPinSumBytes: e.mlocked,
      processes: [ProcessPins(pid: 1, name: "x", lockedBytes: max, pinnedBytes: max)],
      fraction: 0.65)
  }

  @Test("status and limit render", arguments: snapshots, [false, true])
  func renders(_ e: ExtremeSnapshot, removesFromMemTotal: Bool) {
    let snapshot = Self.snapshot(e, removesFromMemTotal: removesFromMemTotal)
    let status = StatusText(snapshot: snapshot, processes: 5).render()
    #expect(status.contains("Limit"))
    let ram = e.configuredRAM.map { (bytes: $0, source: "test") }
    let host = HostSettings.compute(limit: snapshot.limit, configuredRAM: ram)
    let limit = LimitText(snapshot: snapshot, host: host)
    #expect(limit.render(explain: true).contains("Limit"))
    #expect(limit.render(explain: false).contains("Limit"))
  }

  @Test("the bar has its width for any parts, and any width")
  func bar() {
    let snapshot = Self.snapshot(Self.snapshots[0], removesFromMemTotal: false)
    for width in [-1, 0, 1, 2, 48] {
      var text = StatusText(snapshot: snapshot)
      text.barWidth = width
      for (pinned, balloon, whole) in [
        (Self.max, Self.max, 1), (Self.max, 0, 1), (0, Self.max, 1), (1, 1, Self.max),
        (Self.max, Self.max, Self.max), (0, 0, 0), (5, 5, 0),
      ] as [(UInt64, UInt64, UInt64)] {
        let bar = text.bar(pinned: pinned, balloon: balloon, whole: whole)
        let cells = bar.filter { "█▒░".contains($0) }.count
        #expect(cells == Swift.max(0, width), "\(bar)")
      }
    }
  }

  @Test("percent for any two values")
  func percent() {
    let max = UInt64.max
    let cases: [(UInt64, UInt64, String)] = [
      (0, 0, "0%"), (1, 0, "0%"), (0, 1, "0%"), (1, 1, "100%"), (1, 2, "50%"), (1, 3, "33%"),
      (2, 3, "67%"), (1, 100, "1%"), (1, 101, "<1%"), (1, 200, "<1%"), (99, 100, "99%"),
      (4, 1, "400%"), (max, 1, "\(max)%"), (max, max, "100%"), (1, max, "<1%"),
      (max / 2, max, "50%"), (max, 2, "\(max)%"), (max, 1000, "\(max / 1000 * 100 + 62)%"),
    ]
    for (part, whole, expected) in cases {
      #expect(ByteFormat.percent(part, of: whole) == expected, "\(part) of \(whole)")
    }
  }

  @Test("human units for the extremes")
  func human() {
    #expect(ByteFormat.human(0) == "0 B")
    #expect(ByteFormat.human(1023) == "1023 B")
    #expect(ByteFormat.human(1024) == "1.0 KiB")
    #expect(ByteFormat.human(UInt64.max) == "16.0 EiB")
  }

  // MARK: The PCI capability walk on arbitrary config spaces

  /// A deterministic generator (SplitMix64), so a failure reproduces.
  struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
  }

  @Test("the walk ends on any 256- or 4096-byte config space")
  func walkEnds() {
    var random = SplitMix(state: 42)
    for round in 0..<4000 {
      let size = round % 2 == 0 ? 256 : 4096
      var config = (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
      config[0x06] |= 0x10  // a capability list
      if round % 3 == 0 {
        // Every capability a vendor one whose next points to another
        // position: long chains and cycles of every length.
        for position in stride(from: 0x40, to: 0x100, by: 4) {
          config[position] = 0x09
          config[position + 1] = UInt8.random(in: 0x40...0xff, using: &random)
          config[position + 2] = 16
        }
      }
      do {
        let capabilities = try VirtioPCICapabilities.parse(config: config)
        #expect(capabilities.count <= VirtioPCICapabilities.maxCapabilities)
      } catch {
        #expect(!error.reason.isEmpty)
      }
    }
  }

  @Test("a cycle through every position ends with 'loops back'")
  func longestCycle() {
    var config = [UInt8](repeating: 0, count: 256)
    config[0x06] = 0x10
    config[0x34] = 0x40
    // 0x40 → 0x44 → … → 0xfc → 0x40: 48 capabilities, then the loop.
    for position in stride(from: 0x40, to: 0x100, by: 4) {
      config[position] = 0x05  // MSI: 4 bytes are enough
      config[position + 1] = UInt8(position == 0xfc ? 0x40 : position + 4)
    }
    #expect(throws: ProbeError.self) { try VirtioPCICapabilities.parse(config: config) }
    var selfLoop = [UInt8](repeating: 0, count: 4096)
    selfLoop[0x06] = 0x10
    selfLoop[0x34] = 0x80
    selfLoop[0x80] = 0x09
    selfLoop[0x81] = 0x80
    selfLoop[0x82] = 16
    do {
      _ = try VirtioPCICapabilities.parse(config: selfLoop)
      Issue.record("a self-loop parsed")
    } catch {
      #expect(error.reason == "capability list loops back to 0x80")
    }
  }
}
