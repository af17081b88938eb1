import BalloonKit
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

enum KmsgFixtures {
  static let directory = Fixtures.roots.removingLastComponent().appending("kmsg")

  static func bytes(_ name: String) throws -> [UInt8] {
    try SystemFile.readRequired(directory.appending(name))
  }

  /// The kills each capture's "Killed process" lines name (pid, comm,
  /// anon-rss in KiB, the line's timestamp), in order.
  struct Capture: Sendable, CustomTestStringConvertible {
    var file: String
    var kills: [(pid: Int32, comm: String, anonKiB: UInt64, microseconds: UInt64)]
    var testDescription: String { file }
  }

  static let captures: [Capture] = [
    // The whole /dev/kmsg of a kb_failure "without" guest (e2e, 7.3): the
    // boot, continuation lines, then three OOM kills as the balloon inflated.
    Capture(
      file: "kb_failure-without-7.3.kmsg",
      kills: [
        (147, "memlock", 524_336, 47_835_645), (137, "sleep", 48, 48_000_396),
        (134, "init", 76, 48_121_042),
      ]),
    Capture(
      file: "kb_failure-without-6.1.kmsg", kills: [(139, "memlock", 524_328, 33_725_950)]),
  ]
}

@Suite("OOM post-mortem: /dev/kmsg records")
struct KmsgReaderTests {
  @Test(
    "A guest's kernel log parses; its kills, with their victims", arguments: KmsgFixtures.captures)
  func guestReport(_ capture: KmsgFixtures.Capture) throws {
    let bytes = try KmsgFixtures.bytes(capture.file)
    let records = try KmsgReader.parse(bytes, path: capture.file)
    // One record per line that does not start with a space.
    #expect(records.count == bytes.split(separator: 0x0a).filter { $0.first != 0x20 }.count)
    var matcher = OOMRecordMatcher()
    var victims: [OOMVictim] = []
    for record in records {
      if let victim = try matcher.take(record, path: capture.file) { victims.append(victim) }
    }
    #expect(
      victims
        == capture.kills.map {
          OOMVictim(
            pid: $0.pid, comm: $0.comm, anonRSSBytes: $0.anonKiB * 1024, constraint: "none",
            memcg: false, kernelMicroseconds: $0.microseconds)
        })
    let killLines = records.filter { $0.text.contains(": Killed process ") }
    #expect(killLines.count == capture.kills.count)
    #expect(killLines.allSatisfy { $0.level == 3 && $0.facility == 0 })
  }

  @Test("The capture's continuation lines belong to their record")
  func captureDictionary() throws {
    let file = "kb_failure-without-7.3.kmsg"
    let records = try KmsgReader.parse(KmsgFixtures.bytes(file), path: file)
    let withDictionary = records.filter { !$0.dictionary.isEmpty }
    #expect(!withDictionary.isEmpty)
    #expect(withDictionary.allSatisfy { $0.dictionary.allSatisfy { $0.contains("=") } })
    #expect(records.first?.sequence == 0)
    #expect(zip(records, records.dropFirst()).allSatisfy { $0.sequence + 1 == $1.sequence })
  }

  @Test("Continuation lines, the caller field and the facility")
  func recordShape() throws {
    let text =
      "14,7,3000,-,caller=T12;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n6,8,3001,c;next\n"
    let records = try KmsgReader.parse(Array(text.utf8), path: "/dev/kmsg")
    #expect(records.count == 2)
    #expect(records[0].level == 6)
    #expect(records[0].facility == 1)
    #expect(records[0].sequence == 7)
    #expect(records[0].microseconds == 3000)
    #expect(records[0].text == "usb 1-1: new device")
    #expect(records[0].dictionary == ["SUBSYSTEM=usb", "DEVICE=c189:1"])
    #expect(records[1].text == "next")
  }

  @Test(
    "A malformed record is a one-line error naming the file",
    arguments: [
      "\n", "x,1,2,-;t\n", "6,1,2;t\n", "6,1,2,-t\n", "6,1,2,-;t", " KEY=V\n", "6,1,2,q;t\n",
      "6,,2,-;t\n", "6,1,99999999999999999999,-;t\n", "99999999999,1,2,-;t\n",
      "6,1,2,-;tab\there\n", "6,1,2,-;caf\u{E9}\n", "6,1,2,-;cr\r\n", "6,1,2,-;t\n KEY=\u{7F}\n",
    ])
  func malformed(_ text: String) {
    #expect {
      _ = try KmsgReader.parse(Array(text.utf8), path: "/dev/kmsg")
    } throws: { error in
      let line = "\(error)"
      return line.hasPrefix("/dev/kmsg: ") && !line.contains("\n")
    }
  }

  @Test("A memory cgroup's kill: comm with spaces and parentheses, memcg constraint")
  func memcgKill() throws {
    var matcher = OOMRecordMatcher()
    let summary = KmsgRecord(
      level: 6, sequence: 1, microseconds: 10,
      text:
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,b,task=stress (ng),pid=812,uid=0"
    )
    #expect(try matcher.take(summary, path: "k") == nil)
    let kill = KmsgRecord(
      level: 3, sequence: 2, microseconds: 11,
      text:
        "Memory cgroup out of memory: Killed process 812 (stress (ng)) total-vm:2048kB, anon-rss:1024kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:44kB oom_score_adj:0"
    )
    let victim = try #require(try matcher.take(kill, path: "k"))
    #expect(victim.comm == "stress (ng)")
    #expect(victim.pid == 812)
    #expect(victim.anonRSSBytes == UInt64(1024 * 1024))
    #expect(victim.constraint == "memcg")
    #expect(victim.memcg)
    // A kill line whose summary was another pid's gets no constraint.
    #expect(try matcher.take(kill, path: "k")?.constraint == nil)
  }

  @Test(
    "An OOM record that does not parse is an error; other records are ignored",
    arguments: [
      ("Out of memory: Killed process abc (x) total-vm:1kB, anon-rss:1kB", true),
      ("Out of memory: Killed process 12 x total-vm:1kB", true),
      ("Out of memory: Killed process 12 (x) total-vm:1kB, anon-rss:12MB", true),
      ("oom-kill:constraint=FOO", true),
      ("oom-kill:constraint=CONSTRAINT_NONE,task=x,pid=-1,uid=0", true),
      // The kernel prints pids with %d: a sign or a leading zero is not its text
      // (found by fuzz/run --target kmsg: "069" was read as pid 69).
      ("Out of memory: Killed process 069 (x) total-vm:1kB, anon-rss:1kB", true),
      ("Out of memory: Killed process +69 (x) total-vm:1kB, anon-rss:1kB", true),
      ("oom-kill:constraint=CONSTRAINT_NONE,task=x,pid=069,uid=0", true),
      ("Out of memory and no killable processes...", false),
      ("virtio_balloon virtio0: Out of puff! Can't get 1 pages", false),
    ])
  func oomText(_ text: String, _ fails: Bool) {
    var matcher = OOMRecordMatcher()
    let record = KmsgRecord(level: 3, sequence: 1, microseconds: 1, text: text)
    do {
      let victim = try matcher.take(record, path: "/dev/kmsg")
      #expect(!fails)
      #expect(victim == nil)
    } catch {
      #expect(fails)
      #expect("\(error)".hasPrefix("/dev/kmsg: OOM"))
    }
  }
}

@Suite("OOM post-mortem: the verdict")
struct OOMVerdictTests {
  static let MiB: UInt64 = 1 << 20

  struct Case: Sendable, CustomTestStringConvertible {
    var label: String
    var sizes: [UInt64?]
    var limit: UInt64
    var reclaimable: UInt64
    var anon: UInt64?
    var verdict: OOMVerdict
    var cap: UInt64?
    var testDescription: String { label }
  }

  static let cases: [Case] = [
    Case(
      label: "over the limit", sizes: [600 * MiB], limit: 260 * MiB, reclaimable: 400 * MiB,
      anon: 192 * MiB, verdict: .balloonCaused, cap: 260 * MiB),
    Case(
      label: "one MiB over", sizes: [261 * MiB], limit: 260 * MiB, reclaimable: 900 * MiB,
      anon: nil, verdict: .balloonCaused, cap: 260 * MiB),
    Case(
      label: "at the limit exactly", sizes: [260 * MiB], limit: 260 * MiB,
      reclaimable: 900 * MiB, anon: 100 * MiB, verdict: .balloonInvolved, cap: 160 * MiB),
    Case(
      label: "two under the limit, together more than the guest can give",
      sizes: [200 * MiB, 250 * MiB], limit: 260 * MiB, reclaimable: 400 * MiB, anon: nil,
      verdict: .balloonCaused, cap: 260 * MiB),
    Case(
      label: "under the limit", sizes: [100 * MiB], limit: 260 * MiB, reclaimable: 400 * MiB,
      anon: 300 * MiB, verdict: .balloonInvolved, cap: 0),
    Case(
      label: "under, victim unknown", sizes: [100 * MiB], limit: 260 * MiB,
      reclaimable: 400 * MiB, anon: nil, verdict: .balloonInvolved, cap: nil),
    Case(
      label: "size unknown", sizes: [nil], limit: 260 * MiB, reclaimable: 400 * MiB, anon: 1,
      verdict: .balloonInvolved, cap: nil),
    Case(
      label: "balloon empty", sizes: [0], limit: 260 * MiB, reclaimable: 400 * MiB, anon: 1,
      verdict: .notInvolved, cap: nil),
    Case(
      label: "no balloon", sizes: [], limit: 260 * MiB, reclaimable: 400 * MiB, anon: 1,
      verdict: .notInvolved, cap: nil),
    Case(
      label: "nothing reclaimable, empty balloon", sizes: [0], limit: 0, reclaimable: 0,
      anon: nil, verdict: .notInvolved, cap: nil),
  ]

  @Test("The verdict table", arguments: cases)
  func table(_ row: Case) {
    let balloons = row.sizes.enumerated().map {
      OOMBalloon(
        kind: .virtio, name: "virtio\($0.offset)", currentBytes: $0.element, targetBytes: nil)
    }
    let judgement = OOMJudgement.judge(
      balloons: balloons, limitBytes: row.limit, reclaimableBytes: row.reclaimable,
      victimAnonBytes: row.anon)
    #expect(judgement == OOMJudgement(verdict: row.verdict, capBytes: row.cap))
  }
}

@Suite("OOM post-mortem: state, status and metrics")
struct OOMStateTests {
  static func record(_ index: Int, verdict: OOMVerdict = .balloonCaused) -> OOMRecord {
    OOMRecord(
      at: 1_700_000_000 + Int64(index), source: "kmsg",
      victim: OOMVictim(
        pid: Int32(100 + index), comm: "memhog", anonRSSBytes: 200 << 20, constraint: "none",
        memcg: false, kernelMicroseconds: 5),
      balloons: [
        OOMBalloon(kind: .virtio, name: "virtio0", currentBytes: 600 << 20, targetBytes: 665 << 20)
      ],
      limitBytes: 260 << 20, guestBytes: 1 << 30,
      pinned: OOMPinned(
        hugetlbBytes: 0, lockedBytes: 512 << 20, dmaPinnedBytes: 0, kernelBytes: 30 << 20,
        unswappableBytes: 20 << 20),
      judgement: OOMJudgement(verdict: verdict, capBytes: 260 << 20))
  }

  static func state() -> DaemonState {
    var state = DaemonState(
      pid: 42, mode: "report", intervalMilliseconds: 1000, startedAt: 1_700_000_000)
    for index in 0..<17 {
      state.add(record(index, verdict: index == 16 ? .notInvolved : .balloonCaused))
    }
    var unknown = record(17, verdict: .balloonInvolved)
    unknown.source = "vmstat"
    unknown.victimPid = nil
    unknown.victimComm = nil
    unknown.victimAnonRSSBytes = nil
    unknown.constraint = nil
    state.add(unknown)
    return state
  }

  @Test("The last 16 are kept, every kill counted; the state file round-trips")
  func roundTrip() throws {
    let state = Self.state()
    #expect(state.oomKills.count == 16)
    #expect(state.oomKills.first?.victimPid == 102)
    #expect(state.oomKillTotals == [.balloonCaused: 16, .notInvolved: 1, .balloonInvolved: 1])
    let text = state.json().rendered()
    let parsed = try DaemonState.parse(Array(text.utf8), path: "/run/balloonctl/state.json")
    #expect(parsed == state)
  }

  @Test(
    "A malformed OOM record is a one-line error naming the file and the field",
    arguments: [
      (#""verdict":"balloon_caused""#, #""verdict":"maybe""#, "oom_kills[0].verdict"),
      (#""source":"kmsg""#, #""source":"dmesg""#, "oom_kills[0].source"),
      (#""constraint":"none""#, #""constraint":"NONE\u001b""#, "oom_kills[0].constraint"),
      (#""comm":"memhog""#, #""comm":"a\u0007b""#, "oom_kills[0].victim.comm"),
      (#""limit_bytes":272629760"#, #""limit_bytes":-1"#, "oom_kills[0].limit_bytes"),
      (#""pid":101"#, #""pid":0"#, "oom_kills[0].victim.pid"),
      (#""kind":"virtio""#, #""kind":"floppy""#, "oom_kills[0].balloons[0].kind"),
      (#""locked_bytes":536870912"#, #""locked_bytes":"x""#, "oom_kills[0].pinned.locked_bytes"),
      (#""balloon_caused":16"#, #""balloon_caused":-3"#, "oom_kills_total.balloon_caused"),
    ])
  func corrupt(_ original: String, _ replacement: String, _ field: String) throws {
    var state = DaemonState(
      pid: 42, mode: "report", intervalMilliseconds: 1000, startedAt: 1_700_000_000)
    state.add(Self.record(1))
    state.oomKillTotals[.balloonCaused] = 16
    let valid = state.json().rendered(pretty: false)
    try #require(valid.contains(original))
    let broken = valid.replacing(original, with: replacement)
    #expect {
      _ = try DaemonState.parse(Array(broken.utf8), path: "/run/balloonctl/state.json")
    } throws: { error in
      let line = "\(error)"
      return line.hasPrefix("/run/balloonctl/state.json: \"\(field)\"") && !line.contains("\n")
    }
  }

  @Test("More than 16 records in the file is corrupt")
  func tooMany() throws {
    var state = Self.state()
    state.oomKills.append(Self.record(99))
    let text = state.json().rendered()
    #expect(throws: SourceError.self) {
      _ = try DaemonState.parse(Array(text.utf8), path: "s")
    }
  }

  @Test("A state file without OOM records (an older balloonctl) loads with none")
  func older() throws {
    let state = DaemonState(
      pid: 42, mode: "report", intervalMilliseconds: 1000, startedAt: 1_700_000_000)
    var text = state.json().rendered(pretty: false)
    text = text.replacing(
      #","oom_kills":[],"oom_kills_total":{"balloon_caused":0,"balloon_involved":0,"not_involved":0}"#,
      with: "")
    #expect(!text.contains("oom"))
    let parsed = try DaemonState.parse(Array(text.utf8), path: "s")
    #expect(parsed.oomKills.isEmpty)
    #expect(parsed.oomKillTotals.values.allSatisfy { $0 == 0 })
  }

  @Test("status: \"Last OOM kills\", two lines each, within 80 columns")
  func statusLines() throws {
    let report = DaemonReport(
      state: Self.state(), file: "/run/balloonctl/state.json", running: true)
    let lines = report.lines(limitBytes: nil)
    let start = try #require(lines.firstIndex { $0.hasPrefix("Last OOM kills") })
    #expect(
      lines[start]
        == "Last OOM kills (18 recorded; balloon_caused 16, balloon_involved 1, not_involved 1)")
    let kills = lines[(start + 1)...]
    #expect(kills.count == 32)
    #expect(kills.allSatisfy { $0.count <= 80 })
    #expect(kills.contains { $0.hasSuffix("killed memhog (pid 102), anon-rss 200.0 MiB") })
    #expect(kills.contains("    balloon_caused: balloon 600.0 MiB, limit 260.0 MiB, cap 260.0 MiB"))
    #expect(kills.contains { $0.hasSuffix("victim unknown (only /proc/vmstat oom_kill rose)") })
    // Without records, no section.
    let empty = DaemonReport(
      state: DaemonState(pid: 1, mode: "report", intervalMilliseconds: 1000, startedAt: 0),
      file: "f", running: true)
    #expect(!empty.lines(limitBytes: nil).contains { $0.contains("OOM") })
  }

  @Test("The metric counts every verdict")
  func metrics() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    let controller = Controller(
      root: guest.root, config: ControllerConfig(mode: .report), actuators: nil, probe: nil,
      store: nil, previous: Self.state(), pid: 1,
      logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
    let report = try controller.tick()
    let text = MetricsFile.render(report, state: controller.state)
    #expect(text.contains("# TYPE balloonctl_oom_kills_total counter\n"))
    #expect(text.contains("balloonctl_oom_kills_total{verdict=\"balloon_caused\"} 16\n"))
    #expect(text.contains("balloonctl_oom_kills_total{verdict=\"balloon_involved\"} 1\n"))
    #expect(text.contains("balloonctl_oom_kills_total{verdict=\"not_involved\"} 1\n"))
  }
}

@Suite("OOM post-mortem: following the log and recording a kill")
struct OOMWatchTests {
  /// A plain file stands in for /dev/kmsg: opened from its end, appended to.
  @Test("Only records written after the start are read; the kill, then the counter")
  func follow() throws {
    let tree = try TemporaryTree()
    try tree.write(
      "/dev/kmsg",
      "6,1,5,-;an old record\n3,2,6,-;Out of memory: Killed process 9 (old) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"
    )
    let follower = try KmsgFollower.open(root: tree.root).get()
    let watch = OOMWatch(follower: follower, baseline: 4)
    #expect(watch.drainLog().victims.isEmpty)
    // A record that is not about an OOM kill is not even parsed (no
    // allocation while memory is short): not a problem, not a kill.
    let junk = Array("not a kmsg record, and no OOM kill in it\n".utf8)
    let junkFD = open(tree.root.path("/dev/kmsg").string, O_WRONLY | O_APPEND)
    #expect(junk.withUnsafeBytes { write(junkFD, $0.baseAddress, $0.count) } == junk.count)
    close(junkFD)
    let skipped = watch.drainLog()
    #expect(skipped.victims.isEmpty && skipped.problems.isEmpty)
    #expect(KmsgFollower.mentionsOOMKill(Array("x Killed process 1".utf8), 18))
    #expect(!KmsgFollower.mentionsOOMKill(Array("x Killed process 1".utf8), 15))
    #expect(!KmsgFollower.mentionsOOMKill(Array("6,1,2,-;sh invoked oom-killer".utf8), 29))
    // The capture's OOM records (a plain file is read in one go, not one
    // record per read as /dev/kmsg is, so only these few lines).
    let capture = try KmsgFixtures.bytes("kb_failure-without-7.3.kmsg")
    let lines = capture.split(separator: 0x0a).filter {
      let text = String(decoding: $0, as: UTF8.self)
      return text.contains(";oom-kill:") || text.contains("Killed process")
    }
    let records = Array(lines.joined(separator: [0x0a])) + [0x0a]
    #expect(lines.count == 6)
    let fd = open(tree.root.path("/dev/kmsg").string, O_WRONLY | O_APPEND)
    #expect(records.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == records.count)
    close(fd)
    let found = watch.drainLog()
    #expect(found.victims.map { $0?.comm } == ["memlock", "sleep", "init"])
    #expect(found.problems.isEmpty)
    // The counter with those kills: nothing unknown. An older reading: nothing.
    #expect(watch.counter(7).victims.isEmpty)
    #expect(watch.counter(4).victims.isEmpty)
    // Two kills the log did not tell of: recorded with the victim unknown.
    let unknown = watch.counter(9)
    #expect(unknown.victims.count == 2)
    #expect(unknown.victims.allSatisfy { $0 == nil })
    #expect(watch.counter(9).victims.isEmpty)
  }

  @Test("The kernel log's descriptor wakes the daemon's wait, named as such")
  func waiterWakes() {
    var pipeEnds: [Int32] = [0, 0]
    #expect(pipe(&pipeEnds) == 0)
    defer {
      close(pipeEnds[0])
      close(pipeEnds[1])
    }
    let waiter = Waiter(monitorFD: nil, pressureFD: nil, signalFD: nil, kmsgFD: pipeEnds[0])
    #expect(waiter.wait(timeoutMilliseconds: 0) == .timeout)
    #expect(write(pipeEnds[1], "x", 1) == 1)
    #expect(waiter.wait(timeoutMilliseconds: 1000) == .kernelLog)
    #expect(WakeReasons.kernelLog.description == "kernel log")
  }

  @Test("Without a log, the first counter is the baseline; later rises are kills")
  func counterOnly() {
    let watch = OOMWatch(follower: nil, baseline: nil)
    #expect(watch.counter(3).victims.isEmpty)
    #expect(watch.counter(4).victims.count == 1)
  }

  @Test("No /dev/kmsg: open says why, naming the file")
  func missing() throws {
    let tree = try TemporaryTree()
    guard case .failure(let error) = KmsgFollower.open(root: tree.root) else {
      Issue.record("opened a missing /dev/kmsg")
      return
    }
    #expect("\(error)".hasSuffix("/dev/kmsg: cannot read: No such file or directory"))
  }

  @Test("A kill is recorded from a fresh reading of the balloon, in report mode too")
  func recordFresh() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    let states = try TemporaryTree()
    let store = StateStore(directory: states.base)
    let controller = Controller(
      root: guest.root, config: ControllerConfig(mode: .report), actuators: nil, probe: nil,
      store: store, previous: nil, pid: 1,
      logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
    let before = try controller.tick()
    #expect(before.snapshot.balloons.first?.effectiveCurrentBytes == UInt64(1 << 30))
    // The balloon moved since the tick: the record has the new size.
    try guest.setVirtioBalloon(bytes: 7 << 30)
    let victim = OOMVictim(
      pid: 77, comm: "memhog", anonRSSBytes: 100 << 20, constraint: "none", memcg: false,
      kernelMicroseconds: 1)
    let (record, snapshot) = try controller.recordOOM(victim, now: 10, wall: 1_700_000_010)
    #expect(record.balloons.map(\.currentBytes) == [7 << 30])
    // No swap, and the victim has exited (no /proc/77): its anon-rss was in
    // use at the kill and counts back as unswappable, in the limit too.
    #expect(record.victimCountedBack)
    var pinned = OOMPinned(snapshot.pinned)
    pinned.unswappableBytes += 100 << 20
    #expect(record.pinned == pinned)
    let limit = BalloonLimit.compute(
      guestBytes: snapshot.limit.guestBytes, pinnedBytes: pinned.totalBytes, swapTotalBytes: 0,
      fraction: snapshot.limit.fraction)
    #expect(record.limitBytes == limit.bytes)
    #expect(record.limitBytes < snapshot.limit.bytes)
    let expected = OOMJudgement.judge(
      balloons: record.balloons, limitBytes: limit.bytes,
      reclaimableBytes: limit.reclaimableBytes, victimAnonBytes: 100 << 20)
    #expect(record.verdict == expected.verdict)
    #expect(record.verdict == .balloonCaused)
    #expect(record.victimComm == "memhog")
    // Written at once, and kept by the next daemon.
    let saved = try #require(try store.load())
    #expect(saved.oomKills == [record])
    #expect(saved.oomKillTotals[.balloonCaused] == 1)
  }
}
