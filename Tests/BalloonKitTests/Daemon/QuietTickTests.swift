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
