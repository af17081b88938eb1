import BalloonKit
import InMemoryLogging
import Logging
import SystemPackage
import Testing

private let MiB: UInt64 = 1 << 20

extension SimulatedGuest {
  /// Drops every line of a `key<sep>value` file whose key is one of `keys`.
  func removeLines(_ kernelPath: String, keys: [String]) throws {
    let kept = try text(kernelPath).split(separator: "\n", omittingEmptySubsequences: false)
      .filter { line in !keys.contains { line.hasPrefix($0 + " ") || line.hasPrefix($0 + ":") } }
    try tree.write(kernelPath, kept.joined(separator: "\n"))
  }

  /// virtio-6.18 sized only by the balloon events, and those inverted: the
  /// virtio reader fails on /proc/vmstat (a counter file the kernel never
  /// writes that way), the rest of the guest still reads.
  func breakVirtioCounters() throws {
    try removeLines("/proc/vmstat", keys: ["nr_balloon_pages"])
    try removeLines("/proc/meminfo", keys: ["Balloon"])
    try set("/proc/vmstat", key: "balloon_inflate", to: "100")
    try set("/proc/vmstat", key: "balloon_deflate", to: "200")
  }

  func restoreVirtioCounters(bytes: UInt64) throws {
    try tree.write(
      "/proc/vmstat", try text("/proc/vmstat") + "\nnr_balloon_pages \(bytes / 4096)\n")
    try set("/proc/vmstat", key: "balloon_inflate", to: "\(bytes / 4096)")
    try set("/proc/vmstat", key: "balloon_deflate", to: "0")
  }
}

/// One malformed balloon file per kind, as a guest could present it.
struct BrokenBalloon: CustomTestStringConvertible, Sendable {
  var fixture: String
  var file: String
  var testDescription: String { "\(fixture): \(file)" }

  func breakIt(_ guest: SimulatedGuest) throws {
    if fixture == "virtio-6.18" {
      try guest.breakVirtioCounters()
    } else {
      try guest.tree.write(file, "zz\n")
    }
  }

  static let all = [
    BrokenBalloon(fixture: "vmw-6.x", file: "/sys/kernel/debug/vmmemctl"),
    BrokenBalloon(fixture: "xen", file: "/sys/devices/system/xen_memory/xen_memory0/info/low_kb"),
    BrokenBalloon(fixture: "hyperv", file: "/sys/kernel/debug/hv-balloon"),
    BrokenBalloon(fixture: "virtio-6.18", file: "/proc/vmstat"),
  ]
}

@Suite("Fail safe: unreadable balloons and processes never quietly stop the guard")
struct FailSafeTests {
  @Test(
    "a discovered balloon that cannot be read: status and run --once fail alike, naming the file",
    arguments: BrokenBalloon.all)
  func onceFailsLikeStatus(_ broken: BrokenBalloon) throws {
    let h = try Harness(broken.fixture)
    try broken.breakIt(h.guest)
    let devices = try Discovery.discover(root: h.guest.root)
    #expect(devices.count == 1)
    let status = sourceError { () throws(SourceError) in
      _ = try GuestSnapshotReader.read(
        root: h.guest.root, devices: devices, options: SnapshotOptions())
    }
    let once = sourceError { () throws(SourceError) in
      _ = try h.controller(mode: .report).tickOnce(now: 0, wall: 0)
    }
    let error = try #require(once)
    #expect(error == status)
    #expect(error.path == h.guest.root.path(broken.file).string)

    // The daemon keeps going, and says which balloon it cannot see.
    let daemon = try h.controller(mode: .report).tick(now: 0, wall: 0)
    #expect(daemon.unreadable.map(\.device) == devices)
    #expect(daemon.unreadable.first?.error == error)
    #expect(daemon.decisions.map(\.action) == [.none])
    #expect(daemon.decisions.first?.why == .unreadable(error, held: false))
  }

  @Test("virtio: a held balloon that turns unreadable keeps its hold; no lever until it reads")
  func heldVirtioUnreadable() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let probe = HostConfigProbe(targetBytes: limit * 2)
    let controller = h.controller(probe: probe)
    #expect(try controller.tick(now: 0, wall: 0).decisions.map(\.action) == [.release])
    try h.guest.kernelUnbinds()
    try h.guest.clear(SimulatedGuest.driverDirectory + "/unbind")

    // The counters go bad; the host lowers its target far enough to re-admit.
    try h.guest.breakVirtioCounters()
    probe.targetBytes = limit / 4
    for tick in 1...5 {
      let report = try controller.tick(now: Double(tick), wall: Int64(tick))
      #expect(report.decisions.map(\.action) == [.none])
      #expect(report.decisions.first?.why.isUnreadable == true)
      #expect(report.decisions.first?.reason.contains("hold kept") == true)
      #expect(report.performed.isEmpty)
      #expect(controller.state.record(forKey: "virtio:virtio0")?.hold.held == true)
    }
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "")
    // Logged at error level once, not every tick; recorded for `status`.
    let errors = h.logs.entries.filter { $0.level == .error }
    #expect(errors.count == 1)
    #expect(errors.first?.metadata["error"]?.description.contains("/proc/vmstat") == true)
    let saved = try #require(try h.store.load()?.record(forKey: "virtio:virtio0"))
    #expect(saved.hold.held)
    #expect(saved.lastDecision?.reason.contains("cannot read the balloon") == true)

    // Readable again: the held balloon is re-admitted as usual.
    try h.guest.restoreVirtioCounters(bytes: 0)
    let readmit = try controller.tick(now: 10, wall: 10)
    #expect(readmit.decisions.map(\.action) == [.readmit])
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "virtio0")
  }

  @Test("a new read error is logged again; the same one is not")
  func errorLoggedPerChange() throws {
    let h = try Harness("vmw-6.x")
    let controller = h.controller(mode: .report)
    try h.guest.tree.write("/sys/kernel/debug/vmmemctl", "zz\n")
    _ = try controller.tick(now: 0, wall: 0)
    _ = try controller.tick(now: 1, wall: 1)
    try h.guest.tree.write("/sys/kernel/debug/vmmemctl", "yy\n")
    _ = try controller.tick(now: 2, wall: 2)
    _ = try controller.tick(now: 3, wall: 3)
    #expect(h.logs.entries.filter { $0.level == .error }.count == 2)
  }

  @Test("virtio: a balloon that is not held and cannot be read gets no action, even over the limit")
  func unheldUnreadable() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    try h.guest.breakVirtioCounters()
    let report = try h.controller(probe: HostConfigProbe(targetBytes: limit * 2)).tick(
      now: 0, wall: 0)
    #expect(report.decisions.map(\.action) == [.none])
    #expect(report.decisions.first?.why.isUnreadable == true)
    #expect(report.performed.isEmpty)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "")
  }

  @Test(
    "virtio: a held device discovery no longer lists is gone: the hold is dropped, nothing written")
  func heldVirtioGone() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let controller = h.controller(probe: HostConfigProbe(targetBytes: limit * 2))
    #expect(try controller.tick(now: 0, wall: 0).decisions.map(\.action) == [.release])
    try h.guest.kernelUnbinds()
    try h.guest.clear(SimulatedGuest.driverDirectory + "/unbind")
    h.guest.tree.remove("/sys/bus/virtio/devices/virtio0")  // hot-unplugged
    controller.invalidateDevices()
    let gone = try controller.tick(now: 1, wall: 1)
    #expect(gone.decisions.map(\.why) == [.deviceGone])
    #expect(controller.state.record(forKey: "virtio:virtio0")?.hold.held == false)
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "")
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/unbind") == "")
  }

  // MARK: /proc/<pid>/status

  @Test("status: an unreadable process's status gives a partial, marked answer, not a failure")
  func statusPartialScan() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    try guest.tree.write("/proc/812/status", "Name:\trdma-server\nPid:\t812\nVmPin:\tlots\n")
    guest.tree.remove("/proc/1/status")
    try guest.tree.mkdir("/proc/1/status")  // a directory: cannot be read as a file
    let snapshot = try GuestSnapshotReader.read(
      root: guest.root, devices: try Discovery.discover(root: guest.root),
      options: SnapshotOptions())
    let coverage = try #require(snapshot.vmPinCoverage)
    #expect(!coverage.complete)
    #expect(coverage.unreadableProcesses == 2)
    #expect(coverage.firstError?.path == guest.root.path("/proc/1/status").string)
    #expect(snapshot.pinned.vmPinSumBytes == 16 * MiB, "uring-bench still counts")
    let note = try #require(snapshot.notes.first { $0.hasPrefix("Σ VmPin is partial") })
    #expect(note.contains("2 processes' VmPin unknown"))
    #expect(note.contains(guest.root.path("/proc/1/status").string))
    let pinned = SnapshotJSON.document(snapshot)["memory"]?["pinned"]
    #expect(pinned?["vm_pin_complete"] == .bool(false))
    #expect(pinned?["unreadable_processes"]?.uint64 == 2)

    let complete = try GuestSnapshotReader.read(
      root: Fixtures.root("virtio-6.18"), devices: [], options: SnapshotOptions())
    #expect(complete.vmPinCoverage?.complete == true)
    #expect(SnapshotJSON.document(complete)["memory"]?["pinned"]?["vm_pin_complete"] == .bool(true))
    #expect(!complete.notes.contains { $0.contains("VmPin") })
  }

  @Test("run: the first scan counts every process it can read, and says it is partial")
  func daemonFirstScanPartial() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.tree.write("/proc/812/status", "Name:\trdma-server\nPid:\t812\nVmPin:\tlots\n")
    let report = try h.controller(mode: .report).tick(now: 0, wall: 0)
    #expect(report.snapshot.pinned.vmPinSumBytes == 16 * MiB)
    #expect(report.snapshot.pinned.dmaPinnedBytes == 16 * MiB)
    #expect(report.snapshot.vmPinCoverage?.unreadableProcesses == 1)
    #expect(report.snapshot.vmPinCoverage?.lastKnownProcesses == 0)
    #expect(
      report.snapshot.notes.contains { $0.contains(h.guest.root.path("/proc/812/status").string) })
  }

  @Test("run: a status that turns unreadable keeps its last VmPin; the others are refreshed")
  func daemonKeepsLastKnown() throws {
    let h = try Harness("virtio-6.18")
    let controller = h.controller(mode: .report)
    let first = try controller.tick(now: 0, wall: 0)
    #expect(first.snapshot.pinned.vmPinSumBytes == 80 * MiB)
    #expect(first.snapshot.vmPinCoverage?.complete == true)

    // rdma-server's status turns unreadable; uring-bench pins 16 MiB more.
    try h.guest.tree.write("/proc/812/status", "garbage\n")
    try h.guest.set("/proc/1044/status", key: "VmPin", to: "\t   32768 kB")
    let second = try controller.tick(now: 601, wall: 601)  // past the scan backstop
    #expect(second.snapshot.pinned.vmPinSumBytes == (64 + 32) * MiB)
    #expect(second.snapshot.limit.bytes <= first.snapshot.limit.bytes)
    let coverage = try #require(second.snapshot.vmPinCoverage)
    #expect(coverage.unreadableProcesses == 1 && coverage.lastKnownProcesses == 1)
    #expect(second.snapshot.notes.contains { $0.contains("1 counted with their last-known VmPin") })
    #expect(
      SnapshotJSON.document(second.snapshot)["memory"]?["pinned"]?["vm_pin_complete"]
        == .bool(false))
    #expect(h.logs.entries.filter { "\($0.message)".contains("Σ VmPin is partial") }.count == 1)

    // The process exits: what it pinned is gone too.
    h.guest.tree.remove("/proc/812")
    let third = try controller.tick(now: 1202, wall: 1202)
    #expect(third.snapshot.pinned.vmPinSumBytes == 32 * MiB)
    #expect(third.snapshot.vmPinCoverage?.complete == true)
  }
}
