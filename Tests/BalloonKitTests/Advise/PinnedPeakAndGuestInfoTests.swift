import BalloonKit
import InMemoryLogging
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

private let mib: UInt64 = 1 << 20

@Suite("State: pinned memory's peak since boot (max_pinned_bytes)")
struct PinnedPeakTests {
  static let path = "/run/balloonctl/state.json"

  func document(_ extra: String) -> [UInt8] {
    Array(
      """
      {"version": 1, "pid": 4242, "mode": "report", "interval_ms": 1000,
       "started_at": 1700000000, "updated_at": 1700000100, "updated_boottime": 500.5,
       "limit_bytes": 4294967296\(extra), "balloons": []}
      """.utf8)
  }

  @Test("written and read back; absent in an older file is nil")
  func roundTrip() throws {
    var state = DaemonState(pid: 7, mode: "report", intervalMilliseconds: 1000, startedAt: 1)
    state.maxPinnedBytes = 1_109_983_232
    state.maxPinnedAt = 1_780_000_000
    let text = state.json().rendered()
    #expect(text.contains("\"max_pinned_bytes\": 1109983232"))
    #expect(try DaemonState.parse(Array(text.utf8), path: Self.path) == state)
    let old = try DaemonState.parse(document(""), path: Self.path)
    #expect(old.maxPinnedBytes == nil && old.maxPinnedAt == nil)
  }

  @Test(
    "a bad peak is a one-line error naming the field",
    arguments: [
      (", \"max_pinned_bytes\": -1, \"max_pinned_at\": 1", "max_pinned_bytes"),
      (", \"max_pinned_bytes\": 2305843009213693953, \"max_pinned_at\": 1", "max_pinned_bytes"),
      (", \"max_pinned_bytes\": \"1 GiB\", \"max_pinned_at\": 1", "max_pinned_bytes"),
      (", \"max_pinned_bytes\": 1, \"max_pinned_at\": 1e300", "max_pinned_at"),
      (", \"max_pinned_bytes\": 1", "come together"),
      (", \"max_pinned_at\": 1", "come together"),
    ])
  func corrupt(extra: String, names: String) {
    let error = #expect(throws: SourceError.self) {
      try DaemonState.parse(document(extra), path: Self.path)
    }
    let text = error.map { "\($0)" } ?? ""
    #expect(text.hasPrefix(Self.path + ": ") && text.contains(names), "\(text)")
    #expect(!text.contains("\n"))
  }

  func kilobytes(_ guest: SimulatedGuest, _ key: String) throws -> UInt64 {
    let line = try #require(
      try guest.text("/proc/meminfo").split(separator: "\n").first { $0.hasPrefix(key + ":") })
    return try #require(UInt64(line.split(separator: " ")[1]))
  }

  @Test(
    "the daemon records the peak, rewrites the state only on a rise of a MiB, keeps it on resume")
  func recorded() throws {
    let h = try Harness("virtio-6.18")
    let controller = h.controller(mode: .report)
    let first = try controller.tick(now: 1, wall: 100)
    let pinned = first.snapshot.pinned.totalBytes
    #expect(controller.state.maxPinnedBytes == pinned)
    #expect(controller.state.maxPinnedAt == 100)
    #expect(try h.store.load()?.maxPinnedBytes == pinned)

    // Kernel memory (SUnreclaim) up by 512 KiB: pinned rises, below a MiB: no write.
    let unreclaim = try kilobytes(h.guest, "SUnreclaim")
    try h.guest.set("/proc/meminfo", key: "SUnreclaim", to: " \(unreclaim + 512) kB")
    let small = try controller.tick(now: 2, wall: 200)
    #expect(small.snapshot.pinned.totalBytes == pinned + 512 * 1024)
    #expect(controller.state.maxPinnedBytes == pinned)
    #expect(try h.store.load()?.maxPinnedAt == 100)

    // Up by 1.5 MiB in all: a new peak, written at the latest 300 s after
    // the last write (a busy guest's climb costs no fsync per rise).
    try h.guest.set("/proc/meminfo", key: "SUnreclaim", to: " \(unreclaim + 1536) kB")
    _ = try controller.tick(now: 3, wall: 300)
    #expect(controller.state.maxPinnedBytes == pinned + 1536 * 1024)
    #expect(controller.state.maxPinnedAt == 300)
    #expect(try h.store.load()?.maxPinnedAt == 100)
    _ = try controller.tick(now: 1 + Recorder.peakWriteSeconds - 1, wall: 350)
    #expect(try h.store.load()?.maxPinnedAt == 100)

    // Down again: the peak stays, and reaches the file once the 300 s passed.
    try h.guest.set("/proc/meminfo", key: "SUnreclaim", to: " \(unreclaim) kB")
    _ = try controller.tick(now: 1 + Recorder.peakWriteSeconds, wall: 400)
    #expect(try h.store.load()?.maxPinnedBytes == pinned + 1536 * 1024)
    #expect(try h.store.load()?.maxPinnedAt == 300)
    // Written once: the next tick writes nothing.
    let written = try h.store.load()
    _ = try controller.tick(now: 1 + 2 * Recorder.peakWriteSeconds, wall: 500)
    #expect(try h.store.load() == written)

    // A restarted daemon resumes the peak (it is since boot, not since start).
    let resumed = h.controller(mode: .report, previous: try h.store.load())
    _ = try resumed.tick(now: 5, wall: 500)
    #expect(resumed.state.maxPinnedBytes == pinned + 1536 * 1024)
    #expect(resumed.state.maxPinnedAt == 300)
  }
}

/// Records the calls instead of running them; answers with `failure`.
final class RecordingTimedRunner: TimedCommandRunner, @unchecked Sendable {
  var calls: [[String]] = []
  var failure: String?
  func run(_ arguments: [String], timeoutSeconds: Double) -> String? {
    calls.append(arguments)
    return failure
  }
}

@Suite("VMware: the limit published as guestinfo through vmware-rpctool")
struct GuestInfoPublisherTests {
  func publisher(dmi: Bool = false) -> (
    GuestInfoPublisher, RecordingTimedRunner, InMemoryLogHandler
  ) {
    let runner = RecordingTimedRunner()
    var logs = InMemoryLogHandler()
    logs.logLevel = .debug
    let logger = Logger(label: "test", factory: { [logs] _ in logs })
    let publisher = GuestInfoPublisher(
      program: "/usr/bin/vmware-rpctool", dmiSaysVMware: dmi, runner: runner, logger: logger)
    return (publisher, runner, logs)
  }

  @Test("on change, at most every 30 s, both keys, only on VMware")
  func changes() {
    let (publisher, runner, _) = publisher()
    let limit: UInt64 = 1_395_864_371  // KB 340369: 1331 MB
    publisher.tick(limitBytes: limit, kinds: [.virtio], now: 0)
    #expect(runner.calls.isEmpty, "not a VMware guest")
    publisher.tick(limitBytes: limit, kinds: [.vmware], now: 1)
    #expect(
      runner.calls == [
        ["/usr/bin/vmware-rpctool", "info-set guestinfo.balloonctl.maxmemctl 1331"],
        ["/usr/bin/vmware-rpctool", "info-set guestinfo.balloonctl.limit_bytes \(1331 * mib)"],
      ])
    publisher.tick(limitBytes: limit + 1000, kinds: [.vmware], now: 60)
    #expect(runner.calls.count == 2, "the same MB: nothing to publish")
    publisher.tick(limitBytes: limit + mib, kinds: [.vmware], now: 61)
    #expect(runner.calls.count == 4)
    #expect(runner.calls[2][1] == "info-set guestinfo.balloonctl.maxmemctl 1332")
    publisher.tick(limitBytes: limit + 2 * mib, kinds: [.vmware], now: 70)
    #expect(runner.calls.count == 4, "rate-limited")
    publisher.tick(limitBytes: limit + 2 * mib, kinds: [.vmware], now: 91)
    #expect(runner.calls.count == 6, "published once the interval passed")
    // DMI alone (the balloon not loaded) is enough.
    let (dmiOnly, dmiRunner, _) = self.publisher(dmi: true)
    dmiOnly.tick(limitBytes: limit, kinds: [], now: 0)
    #expect(dmiRunner.calls.count == 2)
  }

  @Test("a failure is logged once, retried at the interval, and the recovery said")
  func failures() {
    let (publisher, runner, logs) = publisher()
    runner.failure = "exit status 1"
    publisher.tick(limitBytes: 1331 * mib, kinds: [.vmware], now: 0)
    #expect(runner.calls.count == 1, "the second call is not made after the first fails")
    publisher.tick(limitBytes: 1331 * mib, kinds: [.vmware], now: 10)
    #expect(runner.calls.count == 1)
    publisher.tick(limitBytes: 1331 * mib, kinds: [.vmware], now: 31)
    #expect(runner.calls.count == 2)
    let warnings = logs.entries.filter { $0.level == .warning }
    #expect(warnings.count == 1)
    #expect("\(warnings.first?.metadata["error"] ?? "")" == "exit status 1")
    runner.failure = nil
    publisher.tick(limitBytes: 1331 * mib, kinds: [.vmware], now: 62)
    #expect(runner.calls.count == 4)
    #expect(logs.entries.contains { $0.level == .info && "\($0.message)".hasPrefix("published") })
  }

  @Test("the real spawner: exit status, a missing program, and a hang killed at the deadline")
  func spawner() {
    let spawn = SpawnWithTimeout()
    #expect(spawn.run(["/bin/true"], timeoutSeconds: 2) == nil)
    #expect(spawn.run(["/bin/false"], timeoutSeconds: 2) == "exit status 1")
    #expect(
      spawn.run(["/nonexistent/vmware-rpctool"], timeoutSeconds: 2)?.hasPrefix("cannot run")
        == true)
    let start = Clock.boottime()
    #expect(
      spawn.run(["/bin/sleep", "10"], timeoutSeconds: 0.3) == "no answer within 0.3 s; killed")
    #expect(Clock.boottime() - start < 2)
  }

  @Test("balloonctl run on a vmw tree publishes through a vmware-rpctool found on PATH")
  func daemon() throws {
    let tools = try TemporaryTree()
    let log = tools.base.appending("calls").string
    // A stand-in that records its one argument per line, as vmware-rpctool takes it.
    try tools.write("/vmware-rpctool", "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \(log)\n")
    #expect(chmod(tools.path("/vmware-rpctool"), 0o755) == 0)
    let root = Fixtures.directory("vmw-6.x").string
    let status = try JSONParser.parse(
      try Balloonctl.run(["status", "--json", "--root", root]).stdout)
    // The daemon publishes the limit with the pinned margin: its peak (the
    // first tick's pinned) + the MiB it records the peak to.
    let memory = try #require(status["memory"])
    let limit = BalloonLimit.compute(
      guestBytes: try #require(memory["guest_bytes"]?.uint64),
      pinnedBytes: try #require(memory["pinned_bytes"]?.uint64) + mib,
      swapTotalBytes: try #require(memory["swap_total_bytes"]?.uint64)
    ).bytes

    let daemon = try Balloonctl.start(
      ["run", "--mode", "report", "--interval", "0.2", "--root", root, "--log-level", "info"],
      path: tools.base.string + ":/usr/bin:/bin")
    var calls: [String] = []
    for _ in 0..<50 {
      usleep(100_000)
      calls = String(decoding: (try? SystemFile.read(FilePath(log))) ?? [], as: UTF8.self)
        .split(separator: "\n").map(String.init)
      if calls.count >= 2 { break }
    }
    daemon.signal(SIGTERM)
    let result = daemon.wait()
    #expect(result.status == 0, "\(result.stderr)")
    #expect(
      calls == [
        "info-set guestinfo.balloonctl.maxmemctl \(limit / mib)",
        "info-set guestinfo.balloonctl.limit_bytes \(limit / mib * mib)",
      ])
    #expect(result.stderr.contains("will publish the limit to a VMware host"))
    #expect(result.stderr.contains("published the limit to the VMware host"))

    // Without the tool on PATH: nothing said, nothing run.
    let plain = try Balloonctl.start(
      ["run", "--mode", "report", "--interval", "0.2", "--root", root, "--log-level", "info"])
    usleep(500_000)
    plain.signal(SIGTERM)
    let quiet = plain.wait()
    #expect(quiet.status == 0)
    #expect(!quiet.stderr.contains("VMware host"))
  }
}
