import BalloonKit
import InMemoryLogging
import Logging
import SystemPackage
import Testing

private let MiB: UInt64 = 1 << 20
private let xenDevice = "/sys/devices/system/xen_memory/xen_memory0"

/// A state file as an attacker (or a stale run) could leave it: one record,
/// held, with whatever identity and numbers it claims.
private func forged(
  kind: BalloonKind, name: String, sysPath: String,
  shape: (inout HoldState) -> Void = { _ in }
) -> DaemonState {
  var state = DaemonState(pid: 1, mode: "enforce", intervalMilliseconds: 1000, startedAt: 0)
  var hold = HoldState(backoffSeconds: 30)
  hold.held = true
  hold.since = 0
  hold.reason = "forged"
  hold.releases = 1
  shape(&hold)
  state.balloons = [BalloonRecord(kind: kind, name: name, sysPath: sysPath, hold: hold)]
  return state
}

@Suite("State-file trust: the controller never acts on a path or a hold it cannot confirm")
struct StateTrustTests {
  @Test("a held virtio record for a device bound to virtio_balloon is not ours: dropped, warned")
  func virtioBoundNotHeld() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let previous = forged(
      kind: .virtio, name: "virtio0", sysPath: SimulatedGuest.device)
    // Even with its counters unreadable on the first tick: bound is discovery's word.
    try h.guest.breakVirtioCounters()
    let controller = h.controller(
      probe: HostConfigProbe(targetBytes: limit / 4), previous: previous)
    let report = try controller.tick(now: 100, wall: 100)
    #expect(report.decisions.map(\.action) == [.none])
    #expect(controller.state.record(forKey: "virtio:virtio0")?.hold.held == false)
    #expect(h.logs.entries.contains { "\($0.message)".contains("resumed hold is not ours") })
    // Later unbound by someone else: never "re-admitted" by us.
    try h.guest.restoreVirtioCounters(bytes: 0)
    h.guest.tree.remove(SimulatedGuest.device + "/driver")
    h.guest.tree.remove(SimulatedGuest.driverDirectory + "/virtio0")
    controller.invalidateDevices()
    #expect(try controller.tick(now: 101, wall: 101).performed.isEmpty)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "")
  }

  @Test("a held virtio record discovery does not list: gone, and readmitAll writes nothing")
  func virtioUnlisted() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let previous = forged(kind: .virtio, name: "virtio9", sysPath: "/sys/devices/elsewhere")
    // On exit before any tick: nothing discovery lists, so nothing to write.
    let exiting = h.controller(previous: previous)
    let results = exiting.readmitAll()
    #expect(results.count == 1 && results.first?.1 != nil)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "")

    let controller = h.controller(previous: previous)
    let report = try controller.tick(now: 0, wall: 0)
    #expect(report.decisions.contains { $0.balloon == "virtio9" && $0.why == .deviceGone })
    #expect(controller.state.record(forKey: "virtio:virtio9")?.hold.held == false)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "")
  }

  @Test("a held VMware record under another name: never a modprobe, the hold is dropped")
  func vmwareForgedName() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.tree.write("/sbin/modprobe", "#!/bin/sh\n")
    let runner = RecordingRunner()
    let previous = forged(kind: .vmware, name: "vmw_other", sysPath: "/sys/module/vmw_other")
    let controller = h.controller(runner: runner, previous: previous)
    for tick in [0.0, 31, 62] {
      _ = try controller.tick(now: tick, wall: Int64(tick))
    }
    #expect(runner.calls.isEmpty)
    #expect(controller.state.record(forKey: "vmware:vmw_other")?.hold.held == false)
    #expect(controller.readmitAll().isEmpty)
    #expect(runner.calls.isEmpty)
  }

  @Test("a held Xen record pointing at another path: its target_kb is never read or written")
  func xenForgedPath() throws {
    let h = try Harness("virtio-6.18")
    // A Xen-shaped directory where the forged record points; no Xen device here.
    let elsewhere = "/var/lib/elsewhere"
    try h.guest.tree.write(elsewhere + "/target_kb", "1000\n")
    try h.guest.tree.write(elsewhere + "/info/current_kb", "1000\n")
    try h.guest.tree.write(elsewhere + "/info/low_kb", "0\n")
    try h.guest.tree.write(elsewhere + "/info/high_kb", "0\n")
    let previous = forged(kind: .xen, name: "xen_memory0", sysPath: elsewhere) {
      $0.xenWrittenTargetKiB = 1000
      $0.xenHostBalloonTargetBytes = 0
    }
    _ = h.controller(previous: previous).readmitAll()
    #expect(try h.guest.text(elsewhere + "/target_kb") == "1000\n")

    let controller = h.controller(previous: previous)
    let report = try controller.tick(now: 0, wall: 0)
    #expect(report.decisions.contains { $0.balloon == "xen_memory0" && $0.why == .deviceGone })
    #expect(controller.state.record(forKey: "xen:xen_memory0")?.hold.held == false)
    _ = controller.readmitAll()
    #expect(try h.guest.text(elsewhere + "/target_kb") == "1000\n")
  }

  @Test("a held Xen record whose target_kb is not the one written: re-evaluated from scratch")
  func xenTargetNotOurs() throws {
    let h = try Harness("xen")
    func kib(_ file: String) throws -> UInt64 {
      try #require(UInt64(try h.guest.text(xenDevice + "/" + file).trimmingSuffixNewline))
    }
    // The host wants no balloon (under any limit): re-evaluated, nothing to do.
    let current = try kib("info/current_kb") + kib("info/low_kb") + kib("info/high_kb")
    try h.guest.tree.write(xenDevice + "/target_kb", "\(current)\n")
    let before = try h.guest.text(xenDevice + "/target_kb")
    let previous = forged(kind: .xen, name: "xen_memory0", sysPath: xenDevice) {
      $0.xenWrittenTargetKiB = current + 1
      $0.xenHostBalloonTargetBytes = 0  // "restore" would deflate the balloon entirely
    }
    let controller = h.controller(previous: previous)
    let report = try controller.tick(now: 0, wall: 0)
    #expect(report.decisions.map(\.action) == [.none])
    #expect(controller.state.record(forKey: "xen:xen_memory0")?.hold.held == false)
    #expect(h.logs.entries.contains { "\($0.message)".contains("resumed hold is not ours") })
    _ = controller.readmitAll()
    #expect(try h.guest.text(xenDevice + "/target_kb") == before)
  }

  @Test("a Xen hold of ours (target_kb as written) is resumed and restored on exit")
  func xenHoldResumed() throws {
    let h = try Harness("xen")
    let limit = try h.limit()
    func kib(_ file: String) throws -> UInt64 {
      try #require(UInt64(try h.guest.text(xenDevice + "/" + file).trimmingSuffixNewline))
    }
    // The grant a fresh process sees (docs/kernel-interfaces.md §3.1).
    let reservationKiB = try kib("info/current_kb")
    let hostTargetKiB = reservationKiB - (limit / 1024 + 512 * 1024)
    try h.guest.tree.write(xenDevice + "/target_kb", "\(hostTargetKiB)\n")
    let first = h.controller()
    #expect(try first.tick(now: 0, wall: 0).decisions.map(\.action) == [.setTarget])
    let written = try kib("target_kb")

    let saved = try h.store.load()
    #expect(saved?.record(forKey: "xen:xen_memory0")?.hold.held == true)
    let restarted = h.controller(previous: saved)
    #expect(try restarted.tick(now: 1, wall: 1).decisions.map(\.action) == [.none])
    #expect(restarted.state.record(forKey: "xen:xen_memory0")?.hold.held == true)
    #expect(!h.logs.entries.contains { "\($0.message)".contains("resumed hold is not ours") })
    #expect(try kib("target_kb") == written)
    let results = restarted.readmitAll()
    #expect(results.count == 1 && results.first?.1 == nil)
    #expect(try kib("target_kb") == hostTargetKiB)
  }

  @Test(
    "a restarted daemon sizes the Xen balloon against the grant state.json kept, this boot's only")
  func xenGrantResumed() throws {
    // The fixture: target_kb 2.5 GiB, info/current_kb 3 GiB. A fresh process
    // sees a grant of 3 GiB (the present), so no balloon; the previous run saw
    // the toolstack grant 4 GiB, then take 1 GiB back.
    func run(previous grant: UInt64?, boottimeOffset: Double = 0) throws -> (UInt64?, UInt64?) {
      let h = try Harness("xen")  // a tree of its own: XenGrant is kept per path
      var previous: DaemonState?
      if let grant {
        var state = DaemonState(pid: 1, mode: "report", intervalMilliseconds: 1000, startedAt: 0)
        state.updatedAt = Clock.wall()
        state.updatedBoottime = Clock.boottime() + boottimeOffset
        var record = BalloonRecord(
          kind: .xen, name: "xen_memory0", sysPath: xenDevice, hold: HoldState(backoffSeconds: 30))
        record.xenGrantedBytes = grant
        state.balloons = [record]
        previous = state
      }
      let controller = h.controller(mode: .report, previous: previous)
      let report = try controller.tick(now: Clock.boottime(), wall: Clock.wall())
      return (
        report.snapshot.balloons.first?.effectiveCurrentBytes,
        controller.state.record(forKey: "xen:xen_memory0")?.xenGrantedBytes
      )
    }
    // No state: the present alone; the grant seen is kept for the next run.
    let fresh = try run(previous: nil)
    #expect(fresh.0 == 0)
    #expect(fresh.1 == UInt64(3 << 30))
    // This boot's state: the balloon the toolstack took back, and the grant kept.
    let resumed = try run(previous: 4 << 30)
    #expect(resumed.0 == UInt64(1 << 30))
    #expect(resumed.1 == UInt64(4 << 30))
    // A state from another boot (its uptime ahead of ours): not trusted.
    let stale = try run(previous: 4 << 30, boottimeOffset: 3600)
    #expect(stale.0 == 0)
    #expect(stale.1 == UInt64(3 << 30))
    // A kept grant below the present never lowers it.
    let lower = try run(previous: 1 << 30)
    #expect(lower.0 == 0)
    #expect(lower.1 == UInt64(3 << 30))
  }
}
