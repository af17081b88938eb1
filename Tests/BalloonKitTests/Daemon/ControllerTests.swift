import BalloonKit
import InMemoryLogging
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A writable copy of a fixture tree that tests change the way the kernel
/// would (unbind removes the driver link and empties the balloon, …). Every
/// write the controller makes lands in this copy: no test reaches a real device.
final class SimulatedGuest {
  let tree: TemporaryTree
  var root: Root { tree.root }

  init(_ fixture: String) throws { tree = try Fixtures.copy(fixture) }

  func text(_ kernelPath: String) throws -> String {
    String(decoding: try SystemFile.readRequired(root.path(kernelPath)), as: UTF8.self)
  }

  /// Replaces the value of `key` in a `key<sep>value` file, keeping the line's shape.
  func set(_ kernelPath: String, key: String, to value: String) throws {
    var lines = try text(kernelPath).split(separator: "\n", omittingEmptySubsequences: false).map(
      String.init)
    guard
      let index = lines.firstIndex(where: { $0.hasPrefix(key + " ") || $0.hasPrefix(key + ":") })
    else {
      throw FixtureError("no \(key) in", kernelPath)
    }
    // "key   : value" and "key: value" keep everything through the colon;
    // vmstat's "key value" has none.
    if let colon = lines[index].firstIndex(of: ":") {
      lines[index] = String(lines[index][...colon]) + value
    } else {
      lines[index] = "\(key) \(value)"
    }
    try tree.write(kernelPath, lines.joined(separator: "\n"))
  }

  // virtio, as the kernel does it.
  static let device = "/sys/devices/pci0000:00/0000:00:01.0/virtio0"
  static let driverDirectory = "/sys/bus/virtio/drivers/virtio_balloon"

  func addDriverControlFiles() throws {
    try tree.write(Self.driverDirectory + "/bind", "")
    try tree.write(Self.driverDirectory + "/unbind", "")
  }

  func setVirtioBalloon(bytes: UInt64) throws {
    try set("/proc/vmstat", key: "nr_balloon_pages", to: "\(bytes / 4096)")
    try set("/proc/meminfo", key: "Balloon", to: " \(bytes / 1024) kB")
  }

  /// What `echo virtio0 > unbind` does: the driver goes, the balloon deflates.
  func kernelUnbinds() throws {
    tree.remove(Self.device + "/driver")
    tree.remove(Self.driverDirectory + "/virtio0")
    try setVirtioBalloon(bytes: 0)
  }

  func kernelBinds() throws {
    try tree.symlink(Self.device + "/driver", to: "../../../../bus/virtio/drivers/virtio_balloon")
    try tree.symlink(
      Self.driverDirectory + "/virtio0", to: "../../../../devices/pci0000:00/0000:00:01.0/virtio0")
  }

  func clear(_ kernelPath: String) throws { try tree.write(kernelPath, "") }
}

/// The host's side of the virtio config space, settable by the test.
final class HostConfigProbe: VirtioConfigProbe, @unchecked Sendable {
  var targetBytes: UInt64
  var actualBytes: UInt64
  var reads = 0
  init(targetBytes: UInt64 = 0, actualBytes: UInt64 = 0) {
    self.targetBytes = targetBytes
    self.actualBytes = actualBytes
  }
  func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig {
    reads += 1
    return VirtioBalloonConfig(
      numPages: UInt32(targetBytes / 4096), actual: UInt32(actualBytes / 4096))
  }
}

/// Records modprobe calls instead of running them.
final class RecordingRunner: CommandRunner, @unchecked Sendable {
  var calls: [[String]] = []
  var status: Int32 = 0
  func run(_ arguments: [String]) throws(ActuatorError) -> Int32 {
    calls.append(arguments)
    return status
  }
}

struct Harness {
  var guest: SimulatedGuest
  var logs = InMemoryLogHandler()
  var logger: Logger
  let stateDirectory: TemporaryTree
  var store: StateStore { StateStore(directory: stateDirectory.base) }

  init(_ fixture: String) throws {
    guest = try SimulatedGuest(fixture)
    stateDirectory = try TemporaryTree()
    logs.logLevel = .debug
    logger = Logger(label: "test", factory: { [logs] _ in logs })
  }

  func controller(
    mode: ControlMode = .enforce, probe: (any VirtioConfigProbe)? = nil,
    runner: RecordingRunner = .init(),
    previous: DaemonState? = nil, levers: Set<BalloonKind> = [.virtio, .vmware, .xen]
  ) -> Controller {
    let actuators =
      mode == .enforce
      ? Actuators(
        root: guest.root, modprobe: "/sbin/modprobe", enabledLevers: levers, runner: runner) : nil
    return Controller(
      root: guest.root, config: ControllerConfig(mode: mode), actuators: actuators, probe: probe,
      store: store, previous: previous, pid: 4242, logger: logger)
  }

  /// The limit this guest has now, from a report-mode tick (nothing written).
  func limit() throws -> UInt64 {
    let controller = Controller(
      root: guest.root, config: ControllerConfig(mode: .report), actuators: nil, probe: nil,
      store: nil,
      previous: nil, pid: 1,
      logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
    return try controller.tick().snapshot.limit.bytes
  }
}

@Suite("Controller: the control loop on a simulated kernel")
struct ControllerTests {
  @Test(
    "virtio: preventive release, hold, re-admit — each write lands in the fixture's unbind/bind")
  func virtioCycle() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    // The device counts 4 KiB pages: a target 64 MiB over the limit, page-aligned.
    let target = (limit / 4096 + 16384) * 4096
    let probe = HostConfigProbe(targetBytes: target, actualBytes: 0)
    let controller = h.controller(probe: probe)

    // The host asks for more than the limit; nothing inflated yet.
    let first = try controller.tick(now: 100, wall: 1000)
    #expect(first.decisions.map(\.action) == [.release])
    #expect(first.performed.count == 1 && first.performed[0].error == nil)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "virtio0")
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "")
    #expect(controller.state.record(forKey: "virtio:virtio0")?.hold.held == true)
    // Saved at once, so a crash cannot lose the hold.
    #expect(try h.store.load()?.record(forKey: "virtio:virtio0")?.hold.held == true)

    // The kernel unbinds; the target stays above: held, nothing written.
    try h.guest.kernelUnbinds()
    try h.guest.clear(SimulatedGuest.driverDirectory + "/unbind")
    let held = try controller.tick(now: 101, wall: 1001)
    #expect(held.decisions.map(\.action) == [.none])
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "")

    // Just under the limit is not enough (margin), at limit × 0.95 it is.
    probe.targetBytes = limit - 1
    #expect(try controller.tick(now: 102, wall: 1002).decisions.map(\.action) == [.none])
    probe.targetBytes = Policy.readmitThreshold(limit, .default)
    let readmit = try controller.tick(now: 103, wall: 1003)
    #expect(readmit.decisions.map(\.action) == [.readmit])
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "virtio0")
    #expect(controller.state.record(forKey: "virtio:virtio0")?.hold.held == false)

    // Every action is logged once, with the limit and the sizes; the release
    // at warning (the guard acted against the host), the re-admit at notice.
    let actions = h.logs.entries.filter { $0.level == .notice || $0.level == .warning }
    #expect(actions.count == 2)
    #expect(actions.map(\.level) == [.warning, .notice])
    #expect(actions.allSatisfy { $0.metadata["limit_bytes"] == "\(limit)" })
    #expect(actions.first?.metadata["target_bytes"] == "\(target)")
  }

  @Test("virtio: reactive release when only the current size is known")
  func virtioReactive() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    try h.guest.setVirtioBalloon(bytes: limit + (8 << 20))
    let report = try h.controller(probe: nil).tick(now: 10, wall: 10)
    #expect(report.decisions.map(\.action) == [.release])
    #expect(report.decisions[0].reason.contains("reactive"))
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "virtio0")
  }

  @Test(
    "a moved limit rewrites the state file at most once per interval, quoting the new threshold")
  func limitMoveRefreshesState() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let probe = HostConfigProbe(targetBytes: try h.limit() * 2)
    let controller = h.controller(probe: probe)
    #expect(try controller.tick(now: 100, wall: 1000).decisions.map(\.action) == [.release])
    try h.guest.kernelUnbinds()
    #expect(try controller.tick(now: 101, wall: 1001).decisions.map(\.action) == [.none])
    let before = try #require(try h.store.load())
    let savedLimit = try #require(before.limitBytes)

    // 256 MiB of huge pages are reserved: the limit, and with it the
    // re-admit threshold the held decision quotes, falls.
    try h.guest.set("/proc/meminfo", key: "Hugetlb", to: "          262144 kB")
    let moved = try h.limit()
    #expect(moved < savedLimit)

    // Within the interval (1 s) of the last write: nothing written.
    _ = try controller.tick(now: 101.5, wall: 1001)
    #expect(try h.store.load() == before)

    // Past it: one write, with this tick's limit and reason.
    _ = try controller.tick(now: 102, wall: 1002)
    let after = try #require(try h.store.load())
    #expect(after.limitBytes == moved)
    #expect(after.updatedAt == 1002)
    let record = try #require(after.record(forKey: "virtio:virtio0"))
    #expect(record.hold.held)
    #expect(record.lastDecision?.action == Decision.Action.none)
    let threshold = ByteFormat.human(Policy.readmitThreshold(moved, .default))
    let old = ByteFormat.human(Policy.readmitThreshold(savedLimit, .default))
    #expect(
      record.lastDecision?.reason.contains(threshold) == true,
      "\(record.lastDecision?.reason ?? "")")
    #expect(before.record(forKey: "virtio:virtio0")?.lastDecision?.reason.contains(old) == true)
    #expect(record.lastDecisionAt == 1002)

    // The limit stays: a steady tick writes nothing, however long after.
    _ = try controller.tick(now: 200, wall: 1100)
    #expect(try h.store.load() == after)

    // Page-level jitter of the limit (kernel memory moves every tick) is
    // not a move: 8 KiB more page tables write nothing.
    let pageTables = try h.guest.text("/proc/meminfo").split(separator: "\n")
      .first { $0.hasPrefix("PageTables:") }
    let kiB = try #require(
      pageTables?.split(separator: " ").dropFirst().first.flatMap { UInt64($0) })
    try h.guest.set("/proc/meminfo", key: "PageTables", to: "      \(kiB + 8) kB")
    #expect(try h.limit() != moved)
    _ = try controller.tick(now: 300, wall: 1200)
    #expect(try h.store.load() == after)
  }

  @Test("with nothing held, a moved limit does not rewrite the state file")
  func limitMoveWithoutHoldWritesNothing() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    // The host asks for half the limit: nothing to hold.
    let probe = HostConfigProbe(targetBytes: try h.limit() / 2)
    let controller = h.controller(probe: probe)
    #expect(try controller.tick(now: 100, wall: 1000).decisions.map(\.action) == [.none])
    let before = try #require(try h.store.load())
    #expect(before.balloons.allSatisfy { !$0.hold.held })

    // Without swap every anonymous page is pinned: 64 MiB more moves the
    // limit, on a busy guest most seconds.
    let anon = try h.guest.text("/proc/meminfo").split(separator: "\n")
      .first { $0.hasPrefix("AnonPages:") }
    let kiB = try #require(anon?.split(separator: " ").dropFirst().first.flatMap { UInt64($0) })
    try h.guest.set("/proc/meminfo", key: "AnonPages", to: "      \(kiB + 65536) kB")
    #expect(try h.limit() >> 20 != (before.limitBytes ?? 0) >> 20)
    #expect(try controller.tick(now: 200, wall: 1100).decisions.map(\.action) == [.none])
    #expect(try h.store.load() == before)
  }

  @Test("crash safety: a restarted daemon resumes the hold without a second unbind, then re-admits")
  func resumeAfterCrash() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let probe = HostConfigProbe(targetBytes: limit * 2)
    _ = try h.controller(probe: probe).tick(now: 50, wall: 500)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "virtio0")
    try h.guest.kernelUnbinds()
    try h.guest.clear(SimulatedGuest.driverDirectory + "/unbind")

    // SIGKILL: the controller is gone; a new one starts from the state file.
    let previous = try #require(try h.store.load())
    let restarted = h.controller(probe: probe, previous: previous)
    #expect(restarted.heldBalloons.map(\.name) == ["virtio0"])
    let resumed = try restarted.tick(now: 60, wall: 600)
    #expect(resumed.decisions.map(\.action) == [.none])
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "", "no double unbind")

    probe.targetBytes = limit / 2
    #expect(try restarted.tick(now: 61, wall: 601).decisions.map(\.action) == [.readmit])
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "virtio0")
  }

  @Test("report mode decides and logs but writes nothing to the guest")
  func reportMode() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let controller = h.controller(mode: .report, probe: HostConfigProbe(targetBytes: limit * 2))
    for tick in 0..<3 {
      let report = try controller.tick(now: Double(tick), wall: Int64(tick))
      #expect(report.decisions.map(\.action) == [.release])
      #expect(report.performed.isEmpty)
    }
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "")
    #expect(controller.state.record(forKey: "virtio:virtio0")?.hold.held == false)
    // "would release" once, not every tick.
    #expect(h.logs.entries.filter { "\($0.message)".hasPrefix("would release") }.count == 1)
  }

  @Test("no lever (the unbind file is missing, or the lever disabled): alert, nothing written")
  func noLever() throws {
    let h = try Harness("virtio-6.18")
    let limit = try h.limit()
    let missing = try h.controller(probe: HostConfigProbe(targetBytes: limit * 2)).tick(
      now: 1, wall: 1)
    #expect(missing.decisions.map(\.action) == [.alert])
    try h.guest.addDriverControlFiles()
    let disabled = try h.controller(probe: HostConfigProbe(targetBytes: limit * 2), levers: [])
      .tick(now: 1, wall: 1)
    #expect(disabled.decisions.map(\.action) == [.alert])
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "")
  }

  @Test(
    "VMware: unload on a target over the limit, blind back-off while unloaded, reload after 30 s")
  func vmware() throws {
    let h = try Harness("vmw-6.x")
    try h.guest.tree.write("/sbin/modprobe", "#!/bin/sh\n")  // the lever's program exists
    try h.guest.tree.write("/sys/module/vmw_balloon/initstate", "live\n")  // a loadable module
    let limit = try h.limit()
    let frames = (limit + (256 << 20)) / 4096
    try h.guest.set("/sys/kernel/debug/vmmemctl", key: "target", to: "  \(frames)")
    let runner = RecordingRunner()
    let controller = h.controller(runner: runner)
    let release = try controller.tick(now: 0, wall: 0)
    #expect(release.decisions.map(\.action) == [.release])
    #expect(runner.calls == [[h.guest.root.path("/sbin/modprobe").string, "-r", "vmw_balloon"]])

    // Unloaded: the module directory and the debugfs file are gone.
    h.guest.tree.remove("/sys/module/vmw_balloon")
    h.guest.tree.remove("/sys/kernel/debug/vmmemctl")
    controller.invalidateDevices()
    #expect(try controller.tick(now: 10, wall: 10).decisions.map(\.action) == [.none])
    #expect(try controller.tick(now: 29.9, wall: 29).decisions.map(\.action) == [.none])
    let reload = try controller.tick(now: 30, wall: 30)
    #expect(reload.decisions.map(\.action) == [.readmit])
    #expect(runner.calls.last == [h.guest.root.path("/sbin/modprobe").string, "vmw_balloon"])
  }

  @Test("Xen: set_target writes the target_kb that puts the balloon exactly at the limit")
  func xen() throws {
    let h = try Harness("xen")
    let device = "/sys/devices/system/xen_memory/xen_memory0"
    let limit = try h.limit()
    func kib(_ file: String) throws -> UInt64 {
      try #require(UInt64(try h.guest.text(device + "/" + file).trimmingSuffixNewline))
    }
    // The grant a fresh process sees: the fixture's target is below its
    // current reservation (docs/kernel-interfaces.md §3.1).
    let reservationKiB = try kib("info/current_kb")
    // The host wants the balloon 512 MiB over the limit.
    let hostTargetKiB = reservationKiB - (limit / 1024 + 512 * 1024)
    try h.guest.tree.write(device + "/target_kb", "\(hostTargetKiB)\n")
    let report = try h.controller().tick(now: 0, wall: 0)
    #expect(report.decisions.map(\.action) == [.setTarget])
    let written = try kib("target_kb")
    #expect(written == (reservationKiB * 1024 - limit + 1023) / 1024)
    #expect(reservationKiB * 1024 - written * 1024 <= limit)
    #expect(limit - (reservationKiB * 1024 - written * 1024) < 1024)
  }

  @Test(
    "/proc/vmstat: every 10th tick when only the pin counters need it, every tick when it sizes an acted-on balloon"
  )
  func vmstatCadence() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    // Report mode on ≥ 6.15 (Balloon: in meminfo): vmstat only for the pin counters.
    let report = h.controller(mode: .report)
    let first = try report.tick(now: 0, wall: 0).snapshot.vmstat.follPinAcquired
    try h.guest.set("/proc/vmstat", key: "nr_foll_pin_acquired", to: "\((first ?? 0) + 4096)")
    var seen: [UInt64?] = []
    for tick in 1...Controller.vmstatEveryTicks {
      seen.append(
        try report.tick(now: Double(tick), wall: Int64(tick)).snapshot.vmstat.follPinAcquired)
    }
    #expect(seen.dropLast().allSatisfy { $0 == first })
    #expect(seen.last == (first ?? 0) + 4096)

    // Enforce mode without the device's actual: the events are the freshest
    // size, so every tick reads them.
    let enforce = h.controller(mode: .enforce)
    let limit = try h.limit()
    _ = try enforce.tick(now: 100, wall: 100)
    let inflated = try #require(
      try enforce.tick(now: 101, wall: 101).snapshot.vmstat.balloonInflatedBytes)
    try h.guest.set("/proc/vmstat", key: "balloon_inflate", to: "\((inflated + limit) / 4096)")
    let next = try enforce.tick(now: 102, wall: 102)
    #expect(next.snapshot.balloons.first?.effectiveCurrentBytes ?? 0 > limit)
    #expect(next.decisions.map(\.action) == [.release])
  }

  @Test("Hyper-V: over the limit is an alert; nothing is ever written")
  func hyperv() throws {
    let h = try Harness("hyperv")
    // hv_balloon takes its pages out of MemTotal, so guest = MemTotal +
    // balloon and the limit grows with the balloon: 5 × the limit is over it
    // (c > 0.65 × (guest − pinned) needs c > 1.86 × (MemTotal − pinned)).
    let limit = try h.limit()
    try h.guest.set(
      "/sys/kernel/debug/hv-balloon", key: "pages_ballooned", to: " \(limit * 5 / 4096)")
    let report = try h.controller().tick(now: 0, wall: 0)
    #expect(report.decisions.map(\.action) == [.alert])
    #expect(report.performed.isEmpty)
  }
}

extension String {
  var trimmingSuffixNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
