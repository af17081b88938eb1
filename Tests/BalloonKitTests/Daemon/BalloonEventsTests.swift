import SystemPackage
import Testing

@testable import BalloonKit

/// The kprobe wake-up's parsers, on fixtures only: nothing here opens a
/// perf event (probes attach inside QEMU guests only, e2e/README.md).
@Suite("Balloon driver events: kallsyms, the perf ring, the fallbacks")
struct BalloonEventsTests {
  static let kallsyms = Fixtures.roots.removingLastComponent().appending("kallsyms")

  static func list(_ name: String) throws -> [UInt8] {
    try SystemFile.readRequired(kallsyms.appending(name))
  }

  /// Scans `bytes` fed in pieces of `chunk` bytes.
  static func scan(_ bytes: [UInt8], chunk: Int, wanted: Set<String>) throws(SourceError)
    -> [KernelSymbol]
  {
    var scanner = KallsymsScanner(wanted: wanted, path: "/proc/kallsyms")
    var start = 0
    while start < bytes.count {
      let end = min(bytes.count, start + chunk)
      try bytes[start..<end].withUnsafeBufferPointer { piece throws(SourceError) in
        try scanner.feed(piece)
      }
      start = end
    }
    try scanner.finish()
    return scanner.found
  }

  static let allEventNames = Set(BalloonDrivers.all.flatMap(\.eventSymbols).map(\.name))

  // MARK: each driver's functions, on the kernels' own symbol lists

  @Test(
    "each driver's event function is found exactly once, not its .cold part or __pfx_ padding",
    arguments: [
      ("virtio-6.1", BalloonKind.virtio, "virtballoon_changed [virtio_balloon]"),
      ("virtio-7.3", .virtio, "virtballoon_changed [virtio_balloon]"),
      ("virtio-6.18-builtin", .virtio, "virtballoon_changed"),
      ("vmware-6.1", .vmware, "vmballoon_work [vmw_balloon]"),
      ("vmware-7.3", .vmware, "vmballoon_work [vmw_balloon]"),
      ("hyperv-6.1", .hyperv, "balloon_up [hv_balloon]"),
      ("hyperv-7.3", .hyperv, "balloon_up [hv_balloon]"),
      ("xen-6.1", .xen, "watch_target"),
    ])
  func driverSymbols(list: String, kind: BalloonKind, expected: String) throws {
    let found = try Self.scan(Self.list(list), chunk: 4096, wanted: Self.allEventNames)
    let chosen = BalloonEvents.choose(found, drivers: [kind.driver])
    #expect(try chosen.get().map(\.description) == [expected])
    // The other kinds' functions are not in this list.
    for other in BalloonDrivers.all where other.kind != kind {
      #expect(throws: BalloonEvents.Unavailable.self) {
        try BalloonEvents.choose(found, drivers: [other]).get()
      }
    }
  }

  @Test("any split of the file gives the same symbols", arguments: [1, 7, 64, 1 << 16])
  func chunking(chunk: Int) throws {
    let bytes = try Self.list("virtio-7.3")
    let names: Set<String> = ["virtballoon_changed", "update_balloon_size_func", "leak_balloon"]
    let found = try Self.scan(bytes, chunk: chunk, wanted: names)
    // In the file's order.
    #expect(
      found == [
        KernelSymbol("leak_balloon", module: "virtio_balloon"),
        KernelSymbol("update_balloon_size_func", module: "virtio_balloon"),
        KernelSymbol("virtballoon_changed", module: "virtio_balloon"),
      ])
  }

  @Test(
    "a renamed function (a kernel without it) falls back to the tick, saying what was looked for")
  func renamed() throws {
    let text = String(decoding: try Self.list("virtio-6.1"), as: UTF8.self)
      .replacing(" virtballoon_changed\t", with: " virtballoon_config_changed\t")
    let found = try Self.scan(Array(text.utf8), chunk: 512, wanted: Self.allEventNames)
    let result = BalloonEvents.choose(found, drivers: [VirtioDriver()])
    #expect(throws: BalloonEvents.Unavailable.self) { try result.get() }
    if case .failure(let unavailable) = result {
      #expect(
        unavailable.reason
          == "no balloon driver event function to probe in /proc/kallsyms (looked for virtballoon_changed [virtio_balloon])"
      )
    }
  }

  @Test(
    "a name listed twice cannot be probed by name; another module's function of that name is not the driver's"
  )
  func ambiguous() throws {
    let line = "ffffffffc0a3c890 t virtballoon_changed\t[virtio_balloon]\n"
    let twice = try Self.list("virtio-6.18-builtin") + Array(line.utf8)
    let found = try Self.scan(twice, chunk: 100, wanted: Self.allEventNames)
    let result = BalloonEvents.choose(found, drivers: [VirtioDriver()])
    if case .failure(let unavailable) = result {
      #expect(unavailable.reason.hasSuffix("(virtballoon_changed is listed 2 times)"))
    } else {
      Issue.record("chose \(result)")
    }
    let elsewhere = Array("ffffffffc0a3c890 t balloon_up\t[other_module]\n".utf8)
    let other = try Self.scan(elsewhere, chunk: 100, wanted: Self.allEventNames)
    #expect(throws: BalloonEvents.Unavailable.self) {
      try BalloonEvents.choose(other, drivers: [HyperVDriver()]).get()
    }
  }

  @Test(
    "a line not in kallsyms' format is an error naming the line",
    arguments: [
      ("ffffffff81000000 T _text\nzz T x\n", "/proc/kallsyms: line 2: no hexadecimal address"),
      ("ffffffff81000000 TT _text\n", "/proc/kallsyms: line 1: no one-letter symbol type"),
      ("ffffffff81000000 T \n", "/proc/kallsyms: line 1: no symbol name"),
      ("ffffffff81000000 T a b\n", "/proc/kallsyms: line 1: unexpected text after the name"),
      ("ffffffff81000000 t a\t[mod\n", "/proc/kallsyms: line 1: unexpected text after the name"),
      ("ffffffff81000000 t a\t[m d]\n", "/proc/kallsyms: line 1: module name is not one word"),
      ("ffffffff81000000 T _text", "/proc/kallsyms: line 1: last line has no newline"),
      ("", "/proc/kallsyms: lists no symbols"),
    ])
  func malformed(text: String, problem: String) {
    #expect {
      _ = try Self.scan(Array(text.utf8), chunk: 3, wanted: ["a"])
    } throws: { error in
      "\(error)".hasPrefix(problem)
    }
  }

  @Test(
    "the watch after an event reads sparsely far below the limit and every 5 ms near it",
    arguments: [
      (nil, 5),  // the limit unknown: the shortest step
      (0, 5),  // at or over the limit
      (10 << 20, 5),  // 10 MiB left: 2.4 ms at 2 GiB/s for half of it, so 5
      (40 << 20, 9),  // 20 MiB at 2 GiB/s: 9.8 ms
      (200 << 20, 48),
      (409 << 20, 99),
      (410 << 20, 100),  // from about 410 MiB left: the longest step
      (UInt64.max, 100),
    ] as [(UInt64?, Int32)])
  func burstStep(headroom: UInt64?, milliseconds: Int32) {
    #expect(EventBurst().step(headroomBytes: headroom) == milliseconds)
  }

  @Test(
    "a balloon twice as fast as the step assumes reaches the limit no sooner than the next read")
  func burstStepBound() {
    let burst = EventBurst()
    for mebibytes in stride(from: 0, through: 2048, by: 7) {
      let headroom = UInt64(mebibytes) << 20
      let step = Double(burst.step(headroomBytes: headroom)) / 1000
      let eaten = 2 * burst.fastestInflateBytesPerSecond * step
      // Within the shortest step's reach, or not past the limit by the next read.
      #expect(
        Int32(step * 1000) == burst.stepMilliseconds || eaten <= Double(headroom),
        "\(mebibytes) MiB left, step \(step) s")
    }
  }

  @Test(
    "the lock is renewed after the 12th tick, or after 30 s once the steady path has run",
    arguments: [
      (1, 0.0, false), (11, 11.0, false), (12, 12.0, true),  // the 1 s tick
      (2, 20.0, false), (3, 30.0, true),  // the 10 s tick with events
      (2, 120.0, false),  // a 60 s interval: not before the third tick
      (3, 29.9, false), (12, 1.2, true),
    ] as [(Int, Double, Bool)])
  func relockDue(ticks: Int, seconds: Double, due: Bool) {
    #expect(DaemonLoop.relockDue(ticks: ticks, secondsSinceStart: seconds) == due)
  }

  @Test("a line longer than any symbol line is refused before it is buffered")
  func longLine() {
    let long = Array(repeating: UInt8(ascii: "a"), count: 5000)
    #expect(throws: SourceError.self) { _ = try Self.scan(long, chunk: 1000, wanted: []) }
  }

  @Test("a hidden address (kptr_restrict) still names the symbol")
  func hiddenAddresses() throws {
    let text = "0000000000000000 t virtballoon_changed\t[virtio_balloon]\n"
    let found = try Self.scan(Array(text.utf8), chunk: 5, wanted: Self.allEventNames)
    #expect(found == [KernelSymbol("virtballoon_changed", module: "virtio_balloon")])
  }

  // MARK: the perf ring's records (linux/perf_event.h's layout, little-endian)

  @Test("samples, a lost count and a throttle notice parse; every byte is accounted for")
  func ringRecords() throws {
    let throttle: [UInt8] = PerfBytes.header(type: 5, size: 24) + PerfBytes.le(1) + PerfBytes.le(2)
    let lost: [UInt8] = PerfBytes.header(type: 2, size: 24) + PerfBytes.le(7) + PerfBytes.le(3)
    var bytes = PerfBytes.sample(time: 1_000_000_123, cpu: 0)
    bytes += throttle
    bytes += lost
    bytes += PerfBytes.sample(time: 1_000_500_000, cpu: 1)
    let records = try PerfRecord.parse(bytes, source: "kprobe")
    let expected: [PerfRecord] = [
      .sample(timeNanoseconds: 1_000_000_123, cpu: 0), .other(type: 5), .lost(count: 3),
      .sample(timeNanoseconds: 1_000_500_000, cpu: 1),
    ]
    #expect(records == expected)
    #expect(try PerfRecord.parse([], source: "kprobe") == [])
  }

  @Test("a malformed record is an error, never a trap", arguments: PerfBytes.badRecords)
  func badRecords(bytes: [UInt8], problem: String) {
    #expect {
      _ = try PerfRecord.parse(bytes, source: "kprobe virtballoon_changed on CPU 0")
    } throws: { error in
      "\(error)".hasPrefix("kprobe virtballoon_changed on CPU 0: record at byte 0: \(problem)")
    }
  }

  // MARK: sysfs

  @Test("the PMU type and the online CPUs parse strictly")
  func sysfsNumbers() throws {
    #expect(try KprobePMU.parseType(Array("6\n".utf8), path: "type") == 6)
    #expect(try KprobePMU.parseType(Array("8\n".utf8), path: "type") == 8)
    for bad in ["", "\n", "6", "-1\n", "6 \n", "99999999999\n"] {
      #expect(throws: SourceError.self) { try KprobePMU.parseType(Array(bad.utf8), path: "type") }
    }
    #expect(try OnlineCPUs.parse(Array("0\n".utf8), path: "online") == [0])
    #expect(
      try OnlineCPUs.parse(Array("0-3,6,8-9\n".utf8), path: "online") == [0, 1, 2, 3, 6, 8, 9])
    for bad in ["", "0", "3-1\n", "0,0\n", "1,0\n", "0-\n", "a\n", "0,,1\n", "99999\n"] {
      #expect(throws: SourceError.self) { try OnlineCPUs.parse(Array(bad.utf8), path: "online") }
    }
    #expect(KernelLockdown.parse(Array("none [integrity] confidentiality\n".utf8)) == "integrity")
    #expect(KernelLockdown.parse(Array("[none] integrity confidentiality\n".utf8)) == "none")
    #expect(KernelLockdown.parse(Array("none integrity confidentiality\n".utf8)) == nil)
  }

  @Test("a snapshot never attaches probes: the reason says so")
  func snapshotRefused() {
    let result = BalloonEvents.open(root: Fixtures.root("virtio-6.1"))
    if case .failure(let unavailable) = result {
      #expect(unavailable.reason.hasPrefix("not the live system (--root "))
    } else {
      Issue.record("opened probes on a snapshot")
    }
  }

  // MARK: the PCI window under lockdown

  final class CountingProbe: VirtioConfigProbe, @unchecked Sendable {
    var calls = 0
    let error: ProbeError
    init(_ error: ProbeError) { self.error = error }
    func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig {
      calls += 1
      throw error
    }
  }

  @Test("an EPERM from the window write is kept and not retried; other failures are retried")
  func refusedOnce() {
    let refusal = SysfsPCIConfigSpace.writeFailure(.notPermitted, path: "/sys/x/config")
    let locked = CountingProbe(refusal)
    let probe = RefusedOnceProbe(locked)
    for _ in 0..<3 {
      #expect {
        _ = try probe.readBalloonConfig(pciAddress: "0000:00:04.0")
      } throws: { error in
        "\(error)"
          == "PCI config space write refused (kernel lockdown?): Operation not permitted; not tried again until balloonctl restarts"
      }
    }
    #expect(locked.calls == 1)
    let busy = CountingProbe(ProbeError("/sys/x/config: cannot write: Device or resource busy"))
    let retried = RefusedOnceProbe(busy)
    for _ in 0..<3 { _ = try? retried.readBalloonConfig(pciAddress: "0000:00:04.0") }
    #expect(busy.calls == 3)
  }

  // MARK: state.json and status

  static func state(_ wakeups: Wakeups?) -> DaemonState {
    var state = DaemonState(
      pid: 42, mode: "enforce", intervalMilliseconds: 1000, startedAt: 1_700_000_000)
    state.updatedAt = 1_700_000_000
    state.wakeups = wakeups
    return state
  }

  @Test("the wake-up mode survives state.json and shows in status and status --json")
  func wakeupsRoundTrip() throws {
    let events = Wakeups(
      mode: .events, symbols: ["virtballoon_changed [virtio_balloon]"],
      idleIntervalMilliseconds: 5000)
    let tick = Wakeups(
      mode: .tick,
      reason:
        "perf_event_open for virtballoon_changed [virtio_balloon] failed: Operation not permitted (kernel lockdown is confidentiality, which allows no kernel instrumentation)"
    )
    var blind = events
    blind.targetProblem =
      "PCI config space write refused (kernel lockdown?): Operation not permitted"
    for wakeups in [events, tick, blind, nil] {
      let state = Self.state(wakeups)
      let bytes = Array(state.json().rendered(pretty: true).utf8)
      #expect(try DaemonState.parse(bytes, path: "state.json").wakeups == wakeups)
    }
    let report = DaemonReport(state: Self.state(tick), file: "state.json", running: true)
    #expect(
      report.lines(limitBytes: nil).contains(
        "Wakeups   tick every 1 s only (the balloon can grow for up to an interval before it is seen): \(tick.reason!)"
      ))
    let json = report.json()
    #expect(json["wakeups"]?.string == "tick")
    #expect(json["wakeups_reason"]?.string == tick.reason)
    let eventsReport = DaemonReport(state: Self.state(events), file: "state.json", running: true)
    #expect(
      eventsReport.lines(limitBytes: nil).contains(
        "Wakeups   events: virtballoon_changed [virtio_balloon] (the balloon is watched every 5 ms from the host's request); tick every 5 s, every 1 s while held"
      ))
    #expect(eventsReport.json()["wakeups"]?.string == "events")
    let blindReport = DaemonReport(state: Self.state(blind), file: "state.json", running: true)
    #expect(
      blindReport.lines(limitBytes: nil).contains(
        "Wakeups   events: virtballoon_changed [virtio_balloon] (the balloon is watched every 5 ms from the host's request); tick every 5 s, every 1 s while held; the target is unknown (PCI config space write refused (kernel lockdown?): Operation not permitted), so a release follows the size"
      ))
    #expect(blindReport.json()["target_problem"]?.string == blind.targetProblem)
    #expect(eventsReport.json()["wakeups_reason"]?.isNull == true)
  }

  @Test(
    "a wake-up record that is not one balloonctl writes is refused, naming the field",
    arguments: [
      (#"{"mode": "kprobe", "reason": null, "symbols": []}"#, #""wakeups.mode" is "kprobe""#),
      (#"{"mode": "tick", "reason": null, "symbols": []}"#, #""wakeups.reason" is missing"#),
      (
        #"{"mode": "events", "reason": "x", "symbols": ["a"]}"#,
        #""wakeups.reason" is set with mode events"#
      ),
      (
        #"{"mode": "events", "reason": null, "symbols": []}"#,
        #""wakeups.idle_interval_ms" is missing"#
      ),
      (
        #"{"mode": "events", "reason": null, "symbols": [], "idle_interval_ms": 5000}"#,
        #""wakeups.symbols" is empty"#
      ),
      (
        #"{"mode": "events", "reason": null, "symbols": ["a"], "idle_interval_ms": 1}"#,
        #""wakeups.idle_interval_ms" is 1"#
      ),
      (
        #"{"mode": "events", "reason": null, "symbols": [1], "idle_interval_ms": 5000}"#,
        #""wakeups.symbols[0]" is 1"#
      ),
      (
        #"{"mode": "events", "reason": null, "symbols": ["a\u001b[2J"]}"#,
        #""wakeups.symbols[0]" contains a control"#
      ),
      (
        #"{"mode": "tick", "reason": "x", "symbols": ["a"]}"#,
        #""wakeups.symbols" is set with mode tick"#
      ),
    ])
  func wakeupsRefused(member: String, problem: String) throws {
    var text = Self.state(nil).json().rendered(pretty: false)
    text = text.replacing(#""wakeups":null"#, with: #""wakeups":"# + member)
    #expect(text.contains(member))
    #expect {
      _ = try DaemonState.parse(Array(text.utf8), path: "state.json")
    } throws: { error in
      "\(error)".hasPrefix("state.json: \(problem)")
    }
  }
}

/// Ring records as the kernel writes them (linux/perf_event.h), little-endian.
enum PerfBytes {
  static func header(type: UInt32, size: UInt16) -> [UInt8] {
    let typeBytes: [UInt8] = Array(le(UInt64(type)).prefix(4))
    let sizeBytes: [UInt8] = Array(le(UInt64(size)).prefix(2))
    return typeBytes + [0, 0] + sizeBytes
  }

  static func le(_ value: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
  }

  /// A PERF_RECORD_SAMPLE with IP, TID, TIME and CPU.
  static func sample(time: UInt64, cpu: UInt32) -> [UInt8] {
    var bytes = header(type: 9, size: 40)
    bytes += le(0xffff_ffff_c0a3_c890)
    bytes += le(UInt64(77) << 32 | 77)
    bytes += le(time)
    bytes += le(UInt64(cpu))
    return bytes
  }

  static let badRecords: [([UInt8], String)] = [
    ([UInt8](repeating: 0, count: 5), "truncated header"),
    (header(type: 9, size: 4), "size 4 is not a record's"),
    (header(type: 9, size: 44) + [UInt8](repeating: 0, count: 36), "size 44 is not a record's"),
    (header(type: 9, size: 48) + [UInt8](repeating: 0, count: 40), "sample of 48 bytes"),
    (header(type: 2, size: 16) + le(1), "lost record of 16 bytes"),
    (header(type: 9, size: 40) + le(1), "size 40 runs past the 16 bytes left"),
    (header(type: 6, size: 0), "size 0 is not a record's"),
  ]

}
