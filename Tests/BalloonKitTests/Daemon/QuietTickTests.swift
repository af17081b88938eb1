import BalloonKit
import InMemoryLogging
import Logging
import SystemPackage
import Testing

/// The idle daemon's quiet ticks (Controller.quietTick) against the full
/// pipeline: two controllers on two copies of the same guest, one with quiet
/// ticks and one without, see the same changes tick by tick; their reports,
/// kept state, state files and logs must be the same after every tick, and
/// the quiet path must have been taken where the inputs allowed it.
@Suite("Controller: a quiet tick does what the full pipeline does")
struct QuietTickTests {
  /// One step of the table: what changes in the guest (and the host's
  /// target), then one tick.
  struct Step: CustomStringConvertible, Sendable {
    var description: String
    var change: @Sendable (SimulatedGuest, HostConfigProbe, UInt64) throws -> Void
  }

  static func anonPages(_ kib: UInt64)
    -> @Sendable (SimulatedGuest, HostConfigProbe, UInt64) throws -> Void
  {
    { guest, _, _ in try guest.set("/proc/meminfo", key: "AnonPages", to: "   \(kib) kB") }
  }

  /// The table: steady ticks, a limit that moves a page or a MiB, a target
  /// that moves under the limit, a limit that falls under the target (release),
  /// the hold, the re-admit, a balloon the kernel grows, a file cut off.
  static let steps: [Step] = [
    Step(description: "first tick: the record is created") { _, _, _ in },
    Step(description: "same inputs") { _, _, _ in },
    Step(description: "same inputs again") { _, _, _ in },
    Step(description: "limit moves by a page", change: anonPages(1_020_908)),
    Step(description: "limit moves by 3 MiB", change: anonPages(1_023_980)),
    Step(description: "same inputs") { _, _, _ in },
    Step(description: "target moves, still under the limit") { _, probe, limit in
      probe.targetBytes = (limit / 2) / 4096 * 4096
    },
    Step(description: "same inputs") { _, _, _ in },
    Step(description: "the limit falls under the target (release)", change: anonPages(5_000_000)),
    Step(description: "held") { guest, _, _ in
      try guest.kernelUnbinds()
      try guest.clear(SimulatedGuest.driverDirectory + "/unbind")
    },
    Step(description: "held, same inputs") { _, _, _ in },
    Step(description: "limit back: re-admit", change: anonPages(1_020_904)),
    Step(description: "bound again") { guest, _, _ in
      try guest.kernelBinds()
      try guest.clear(SimulatedGuest.driverDirectory + "/bind")
    },
    Step(description: "same inputs") { _, _, _ in },
    Step(description: "same inputs again") { _, _, _ in },
    Step(description: "the balloon inflates toward the target") { guest, probe, _ in
      // The device's `actual` is the size the daemon reads first.
      probe.actualBytes = probe.targetBytes / 2 / 4096 * 4096
      try guest.setVirtioBalloon(bytes: probe.actualBytes)
    },
    Step(description: "same inputs") { _, _, _ in },
    Step(description: "same inputs again") { _, _, _ in },
    Step(description: "meminfo cut off (the tick fails)") { guest, _, _ in
      let text = try guest.text("/proc/meminfo")
      try guest.tree.write("/proc/meminfo", String(text.dropLast()))
    },
    Step(description: "meminfo whole again") { guest, _, _ in
      let text = try guest.text("/proc/meminfo")
      try guest.tree.write("/proc/meminfo", text + "\n")
    },
    Step(description: "same inputs") { _, _, _ in },
    Step(description: "the target jumps over the limit (release)") { _, probe, limit in
      probe.targetBytes = (limit / 4096 + 16384) * 4096
    },
  ]

  struct Side {
    var harness: Harness
    var probe: HostConfigProbe
    var controller: Controller

    init(mode: ControlMode, quiet: Bool, target: UInt64) throws {
      harness = try Harness("virtio-6.18")
      try harness.guest.addDriverControlFiles()
      probe = HostConfigProbe(targetBytes: target, actualBytes: 0)
      controller = harness.controller(mode: mode, probe: probe)
      controller.quietTicks = quiet
    }
  }

  static func outcome(_ controller: Controller, now: Double) -> Result<TickReport, SourceError> {
    Result { () throws(SourceError) -> TickReport in
      try controller.tick(now: now, wall: Int64(now) + 1_000_000)
    }
  }

  @Test("the table of ticks, in both modes", arguments: [ControlMode.enforce, .report])
  func table(_ mode: ControlMode) throws {
    let limit = try Harness("virtio-6.18").limit()
    let target = (limit / 4) / 4096 * 4096
    let quiet = try Side(mode: mode, quiet: true, target: target)
    let full = try Side(mode: mode, quiet: false, target: target)
    var quietTaken: [Int] = []
    for (index, step) in Self.steps.enumerated() {
      for side in [quiet, full] {
        try step.change(side.harness.guest, side.probe, limit)
      }
      let now = 100 + Double(index)
      let taken = quiet.controller.quietTicksTaken
      let a = Self.outcome(quiet.controller, now: now)
      let b = Self.outcome(full.controller, now: now)
      if quiet.controller.quietTicksTaken > taken { quietTaken.append(index) }
      switch (a, b) {
      case (.success(let a), .success(let b)):
        #expect(a.decisions == b.decisions, "\(step)")
        #expect(a.performed.map(\.decision) == b.performed.map(\.decision), "\(step)")
        #expect(
          a.performed.map { $0.error?.description } == b.performed.map { $0.error?.description },
          "\(step)")
        #expect(a.snapshot.limit == b.snapshot.limit, "\(step)")
        #expect(a.unreadable.count == b.unreadable.count, "\(step)")
        #expect(a.headline == b.headline, "\(step)")
      case (.failure(let a), .failure(let b)):
        // The same error, each naming its own copy of the guest.
        let left = a.description.replacing(quiet.harness.guest.tree.base.string, with: "<root>")
        let right = b.description.replacing(full.harness.guest.tree.base.string, with: "<root>")
        #expect(left == right, "\(step)")
        #expect(left.hasPrefix("<root>/proc/meminfo: "), "\(step)")
      default:
        Issue.record("\(step): quiet \(a), full \(b)")
      }
      var left = quiet.controller.state
      var right = full.controller.state
      left.startedAt = 0
      right.startedAt = 0
      #expect(left == right, "\(step)")
      var saved = try quiet.harness.store.load()
      var savedFull = try full.harness.store.load()
      saved?.startedAt = 0
      savedFull?.startedAt = 0
      #expect(saved == savedFull, "\(step)")
      #expect(quiet.harness.logs.entries == full.harness.logs.entries, "\(step)")
      #expect(
        try quiet.harness.guest.text(SimulatedGuest.driverDirectory + "/unbind")
          == full.harness.guest.text(SimulatedGuest.driverDirectory + "/unbind"), "\(step)")
    }
    #expect(full.controller.quietTicksTaken == 0)
    // Where the inputs repeat, or only the limit moved, the quiet path ran
    // (by step): from the second tick after a record changed (the first
    // one proves the state quiet), never on a change of a balloon, while
    // held (enforce), or on a failed read. Report mode holds nothing and
    // unbinds nothing (its device list stays as discovered): from the release
    // on it would release every tick until the limit is back (step 11, a
    // change of the recorded decision), and is quiet again from step 13.
    let expected =
      mode == .enforce
      ? [2, 3, 4, 5, 7, 14, 16, 17, 19, 20]
      : [2, 3, 4, 5, 7, 13, 14, 16, 17, 19, 20]
    #expect(quietTaken == expected)
  }
}

/// The idle daemon's steady ticks (Controller.steadyTick, the tick that
/// reads /proc/meminfo alone) against the full pipeline: as QuietTickTests,
/// two controllers on two copies of the same guest, one taking the steady
/// path wherever it is offered and one never taking the quiet or steady
/// path. After every tick their kept state, state files, logs and lever
/// writes must be the same; where the steady path ran, the full tick's
/// decisions are all `none` and its limit is the one the steady tick kept.
@Suite("Controller: a steady tick does what the full pipeline does")
struct SteadyTickTests {
  typealias Step = QuietTickTests.Step

  /// The limit of this guest with AnonPages at `kib` (without swap every
  /// anonymous page counts as pinned: the limit falls as AnonPages grows).
  static func limit(anonPagesKiB kib: UInt64) throws -> UInt64 {
    let harness = try Harness("virtio-6.18")
    try harness.guest.set("/proc/meminfo", key: "AnonPages", to: "   \(kib) kB")
    return try harness.limit()
  }

  /// AnonPages (kB) with the lowest limit still at or above `bytes`, and
  /// the next value up (its limit under `bytes`).
  static func anonPagesAtLimit(_ bytes: UInt64) throws -> (atOrAbove: UInt64, below: UInt64) {
    let base: UInt64 = 1_020_904
    let start = try limit(anonPagesKiB: base)
    // Each kB of AnonPages lowers the limit by 0.65 kB (the default fraction).
    var kib = base + (start - bytes) / 1024 * 100 / 65 - 8
    while try limit(anonPagesKiB: kib + 1) >= bytes { kib += 1 }
    return (kib, kib + 1)
  }

  static let balloonBytes: UInt64 = 1 << 30  // the fixture's Balloon: and nr_balloon_pages

  static func steps(edge: (atOrAbove: UInt64, below: UInt64)) -> [Step] {
    let anonPages = QuietTickTests.anonPages
    return [
      Step(description: "first tick: the record is created") { _, _, _ in },
      Step(description: "same inputs (quiet: arms the steady path)") { _, _, _ in },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "limit moves by a page", change: anonPages(1_020_908)),
      Step(description: "limit moves by 3 MiB", change: anonPages(1_023_980)),
      Step(description: "the balloon grows by one page") { guest, _, _ in
        try guest.setVirtioBalloon(bytes: balloonBytes + 4096)
      },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "same inputs again") { _, _, _ in },
      Step(
        description: "the limit falls to the lowest value at or above the balloon",
        change: anonPages(edge.atOrAbove)),
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "the limit falls under the balloon", change: anonPages(edge.below)),
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "the limit back above the balloon", change: anonPages(edge.atOrAbove)),
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "same inputs again") { _, _, _ in },
      Step(
        description: "the limit one page under the grown balloon", change: anonPages(edge.below)),
      Step(description: "the limit back, at the balloon's edge", change: anonPages(edge.atOrAbove)),
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "same inputs again") { _, _, _ in },
      Step(description: "the balloon shrinks by one page") { guest, _, _ in
        try guest.setVirtioBalloon(bytes: balloonBytes)
      },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "same inputs again") { _, _, _ in },
      Step(description: "meminfo cut off (the tick fails)") { guest, _, _ in
        let text = try guest.text("/proc/meminfo")
        try guest.tree.write("/proc/meminfo", String(text.dropLast()))
      },
      Step(description: "meminfo whole again") { guest, _, _ in
        let text = try guest.text("/proc/meminfo")
        try guest.tree.write("/proc/meminfo", text + "\n")
      },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "same inputs again") { _, _, _ in },
      Step(description: "a target appears, under the limit (with a probe)") { _, probe, limit in
        probe.targetBytes = (limit / 2) / 4096 * 4096
      },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "the target jumps over the limit (with a probe: release)") {
        _, probe, limit in
        probe.targetBytes = (limit / 4096 + 16384) * 4096
      },
      Step(description: "held (enforce: the release unbound it)") { guest, _, _ in
        if try !guest.text(SimulatedGuest.driverDirectory + "/unbind").isEmpty {
          try guest.kernelUnbinds()
          try guest.clear(SimulatedGuest.driverDirectory + "/unbind")
        }
      },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "the driver unbound (outside, in report mode)") { guest, _, _ in
        try guest.kernelUnbinds()
      },
      Step(description: "same inputs") { _, _, _ in },
      Step(description: "same inputs again") { _, _, _ in },
    ]
      // Ten ticks more: /proc/vmstat falls due with nothing moved (steady).
      + Array(repeating: Step(description: "same inputs, vmstat due") { _, _, _ in }, count: 10)
      + [
        Step(description: "the FOLL_PIN count moves (seen when vmstat is due)") { guest, _, _ in
          try guest.set("/proc/vmstat", key: "nr_foll_pin_acquired", to: "1600")
        }
      ]
      + Array(repeating: Step(description: "same inputs, vmstat due") { _, _, _ in }, count: 10)
  }

  struct Side {
    var harness: Harness
    var probe: HostConfigProbe
    var logs = InMemoryLogHandler()
    var controller: Controller

    init(mode: ControlMode, probed: Bool, fast: Bool, level: Logger.Level) throws {
      harness = try Harness("virtio-6.18")
      try harness.guest.addDriverControlFiles()
      probe = HostConfigProbe(targetBytes: 0, actualBytes: 0)
      logs.logLevel = level
      let logger = Logger(label: "test", factory: { [logs] _ in logs })
      let actuators =
        mode == .enforce
        ? Actuators(
          root: harness.guest.root, modprobe: "/sbin/modprobe", enabledLevers: [.virtio],
          runner: RecordingRunner()) : nil
      controller = Controller(
        root: harness.guest.root, config: ControllerConfig(mode: mode), actuators: actuators,
        probe: probed ? probe : nil, store: harness.store, previous: nil, pid: 4242,
        logger: logger)
      controller.quietTicks = fast
      controller.steadyTicks = fast
    }
  }

  struct Case: CustomStringConvertible, Sendable {
    var mode: ControlMode
    var probed: Bool
    var level: Logger.Level
    var description: String { "\(mode), \(probed ? "probed" : "no probe"), \(level) logs" }
  }

  /// The steady path is offered only in report mode, without a probe, with
  /// debug logs off (Controller.SteadyTick); the others show it never runs.
  @Test(
    "the table of ticks",
    arguments: [
      Case(mode: .report, probed: false, level: .info),
      Case(mode: .report, probed: false, level: .debug),
      Case(mode: .report, probed: true, level: .info),
      Case(mode: .enforce, probed: false, level: .info),
      Case(mode: .enforce, probed: true, level: .info),
    ])
  func table(_ setup: Case) throws {
    let edge = try Self.anonPagesAtLimit(Self.balloonBytes + 4096)
    #expect(try Self.limit(anonPagesKiB: edge.atOrAbove) >= Self.balloonBytes + 4096)
    #expect(try Self.limit(anonPagesKiB: edge.below) < Self.balloonBytes + 4096)
    let limit = try Harness("virtio-6.18").limit()
    let fast = try Side(mode: setup.mode, probed: setup.probed, fast: true, level: setup.level)
    let full = try Side(mode: setup.mode, probed: setup.probed, fast: false, level: setup.level)
    var steadyTaken: [Int] = []
    for (index, step) in Self.steps(edge: edge).enumerated() {
      for side in [fast, full] {
        try step.change(side.harness.guest, side.probe, limit)
      }
      let now = 100 + Double(index)
      let wall = Int64(now) + 1_000_000
      let steady = fast.controller.steadyTick(now: now)
      if steady { steadyTaken.append(index) }
      let a = Result { () throws(SourceError) -> TickReport? in
        steady ? nil : try fast.controller.tick(now: now, wall: wall)
      }
      let b = Result { () throws(SourceError) -> TickReport in
        try full.controller.tick(now: now, wall: wall)
      }
      switch (a, b) {
      case (.success(nil), .success(let b)):
        #expect(b.decisions.allSatisfy { $0.action == .none }, "\(step)")
        #expect(b.performed.isEmpty, "\(step)")
        #expect(fast.controller.state.limitBytes == b.snapshot.limit.bytes, "\(step)")
      case (.success(let a?), .success(let b)):
        #expect(a.decisions == b.decisions, "\(step)")
        #expect(a.performed.map(\.decision) == b.performed.map(\.decision), "\(step)")
        #expect(a.snapshot.limit == b.snapshot.limit, "\(step)")
        #expect(a.unreadable.count == b.unreadable.count, "\(step)")
      case (.failure(let a), .failure(let b)):
        let left = a.description.replacing(fast.harness.guest.tree.base.string, with: "<root>")
        let right = b.description.replacing(full.harness.guest.tree.base.string, with: "<root>")
        #expect(left == right, "\(step)")
      default:
        Issue.record("\(step): steady \(a), full \(b)")
      }
      var left = fast.controller.state
      var right = full.controller.state
      left.startedAt = 0
      right.startedAt = 0
      #expect(left == right, "\(step)")
      var saved = try fast.harness.store.load()
      var savedFull = try full.harness.store.load()
      saved?.startedAt = 0
      savedFull?.startedAt = 0
      #expect(saved == savedFull, "\(step)")
      #expect(fast.logs.entries == full.logs.entries, "\(step)")
      #expect(
        try fast.harness.guest.text(SimulatedGuest.driverDirectory + "/unbind")
          == full.harness.guest.text(SimulatedGuest.driverDirectory + "/unbind"), "\(step)")
    }
    #expect(full.controller.steadyTicksTaken == 0)
    #expect(fast.controller.steadyTicksTaken == steadyTaken.count)
    let offered = setup.mode == .report && !setup.probed && setup.level > .debug
    // By step: from the tick after a quiet one (1, 17, 23 arm it); never on
    // a change of the balloon's `Balloon:` line (5, 19, 31), with the limit
    // under the balloon or the decision changing (10-13, 15, 16), on a failed
    // read (22) or when /proc/vmstat is due with a balloon counter moved
    // (10, 20, 31: every Controller.vmstatEveryTicks ticks that read). Step 18 is the limit at
    // the lowest value at or above the balloon. Without a probe a target
    // never shows (24, 26 stay steady); report mode holds nothing (27).
    // vmstat due with its counters unmoved stays steady (41); due after the
    // FOLL_PIN count moved (44), it is the full tick with its process scan (51).
    // Pinned memory rising a MiB or more past its peak (4: AnonPages +3 MiB;
    // 8: up to the balloon's edge) is the full tick's to record (Recorder.notePinnedPeak).
    let expected =
      [2, 3, 6, 7, 9, 14, 18, 21, 24, 25, 26, 27, 28, 29, 30, 32, 33]
      + Array(34...50) + [52, 53, 54]
    #expect(steadyTaken == (offered ? expected : []), "\(steadyTaken)")
  }
}
