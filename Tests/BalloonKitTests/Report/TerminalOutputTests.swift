import SystemPackage
import Testing

@testable import BalloonKit

/// The human reports on a terminal: colour and character choice from the
/// environment, 80 columns on every fixture tree, the hold's wording, the
/// `--check` verdicts and the watch view's frame.
@Suite("terminal output")
struct TerminalOutputTests {
  static let trees = [
    "hugetlb-multi", "hyperv", "hyperv-committed", "kb-example", "none", "pre-4.16",
    "virtio-6.1", "virtio-6.18", "virtio-unbound", "vmw-4.19", "vmw-6.x", "vmw-no-debugfs", "xen",
  ]

  // MARK: colour and characters

  struct StyleCase: Sendable, CustomTestStringConvertible {
    var environment: [String: String]
    var terminal: Bool
    var color: Bool
    var unicode: Bool
    var testDescription: String { "\(environment.sorted { $0.key < $1.key }) tty=\(terminal)" }
  }

  static let styleCases: [StyleCase] = [
    .init(environment: ["LANG": "en_US.UTF-8"], terminal: true, color: true, unicode: true),
    .init(environment: ["LANG": "en_US.UTF-8"], terminal: false, color: false, unicode: true),
    .init(
      environment: ["LANG": "C.utf8", "NO_COLOR": "1"], terminal: true, color: false, unicode: true),
    // no-color.org: an empty NO_COLOR does not turn colour off.
    .init(
      environment: ["LANG": "C.UTF-8", "NO_COLOR": ""], terminal: true, color: true, unicode: true),
    .init(
      environment: ["LANG": "C.UTF-8", "TERM": "dumb"], terminal: true, color: false, unicode: true),
    .init(
      environment: ["LANG": "C.UTF-8", "TERM": "xterm"], terminal: true, color: true, unicode: true),
    // No locale at all is the C locale: ASCII.
    .init(environment: [:], terminal: true, color: true, unicode: false),
    .init(environment: ["LANG": "C"], terminal: true, color: true, unicode: false),
    .init(environment: ["LANG": "POSIX"], terminal: true, color: true, unicode: false),
    .init(environment: ["LANG": "en_US.ISO-8859-1"], terminal: true, color: true, unicode: false),
    .init(environment: ["LANG": "de_DE@euro"], terminal: true, color: true, unicode: false),
    .init(environment: ["LANG": "sr_RS.UTF-8@latin"], terminal: true, color: true, unicode: true),
    // LC_ALL wins over LC_CTYPE, which wins over LANG; an empty one is skipped.
    .init(
      environment: ["LC_ALL": "C", "LANG": "en_US.UTF-8"], terminal: true, color: true,
      unicode: false),
    .init(
      environment: ["LC_ALL": "", "LC_CTYPE": "C.UTF-8", "LANG": "C"], terminal: true, color: true,
      unicode: true),
    .init(
      environment: ["LC_CTYPE": "C", "LANG": "en_US.UTF-8"], terminal: true, color: true,
      unicode: false),
    .init(
      environment: ["LC_CTYPE": "", "LANG": "en_GB.utf-8"], terminal: true, color: true,
      unicode: true),
  ]

  @Test("NO_COLOR, TERM=dumb and the locale decide colour and characters", arguments: styleCases)
  func style(_ c: StyleCase) {
    let style = TerminalStyle.detect(environment: c.environment, isTerminal: c.terminal)
    #expect(style == TerminalStyle(color: c.color, unicode: c.unicode))
  }

  @Test("columns count what a terminal draws, not bytes")
  func columns() {
    #expect(TerminalText.columns("abc") == 3)
    #expect("█▒░".utf8.count == 9)
    #expect(TerminalText.columns("█▒░ × −") == 7)
    #expect(TerminalText.columns("日本") == 4)
    #expect(TerminalText.columns("e\u{301}") == 1)
    #expect(TerminalText.columns("\u{1B}[1;31mOVER LIMIT\u{1B}[0m") == 10)
  }

  @Test("wrapping fits the width, keeps every word in order, and cuts only what cannot fit")
  func wrap() {
    let long = String(repeating: "x", count: 100)
    for line in [
      "Note      " + Array(repeating: "word", count: 40).joined(separator: " "),
      "  target    unknown    (a reason that is long enough to need a second line and more)",
      "Note      /a/path/" + long + " and then words",
      long,
    ] {
      for width in [20, 40, 80] {
        let pieces = TerminalText.wrap(line, indent: 10, width: width)
        #expect(pieces.allSatisfy { TerminalText.columns($0) <= width }, "\(pieces)")
        let words = { (text: String) in text.split(separator: " ").joined() }
        #expect(words(pieces.joined(separator: " ")) == words(line))
        #expect(pieces.dropFirst().allSatisfy { $0.hasPrefix(String(repeating: " ", count: 10)) })
      }
    }
    #expect(TerminalText.wrap("short", indent: 4) == ["short"])
    #expect(
      TerminalText.fit("Note      alpha beta gamma", width: 20)
        == "Note      alpha beta\n          gamma")
  }

  // MARK: 80 columns

  static func snapshot(_ tree: String) throws -> GuestSnapshot {
    try GuestSnapshotReader.read(root: Fixtures.root(tree), options: SnapshotOptions())
  }

  static func keys(_ snapshot: GuestSnapshot) -> Set<String> {
    Set(snapshot.balloons.map { BalloonRecord.key(kind: $0.device.kind, name: $0.device.name) })
  }

  @Test("status, limit --explain and the watch frame fit 80 columns", arguments: trees)
  func eightyColumns(_ tree: String) throws {
    let snapshot = try Self.snapshot(tree)
    let ram = try FirmwareMemmapReader.systemRAMBytes(root: Fixtures.root(tree))
    let host = HostSettings.compute(
      limit: snapshot.limit, configuredRAM: ram.map { ($0, "firmware memory map, System RAM") })
    var history = SizeHistory()
    for _ in 0..<60 { history.record(snapshot) }
    var outputs: [(String, String)] = []
    for unicode in [true, false] {
      for held in [Set<String>(), Self.keys(snapshot)] {
        let style = TerminalStyle(color: true, unicode: unicode)
        outputs.append(
          (
            "status",
            StatusText(snapshot: snapshot, processes: 5, style: style, heldBalloons: held).render()
          ))
        outputs.append(
          (
            "watch",
            StatusWatchFrame(
              snapshot: snapshot, heldBalloons: held,
              daemonLines: [
                "Daemon    running, pid 4242, enforce mode, interval 1 s; state /run/balloonctl/state.json"
              ],
              history: history, intervalSeconds: 2, takenAt: 1_700_000_000, style: style
            ).render()
          ))
      }
    }
    let limit = LimitText(snapshot: snapshot, host: host)
    outputs.append(("limit --explain", limit.render(explain: true)))
    outputs.append(("limit", limit.render(explain: false)))
    for (name, text) in outputs {
      #expect(text.contains("Limit"), "\(name)")
      let widest = text.split(separator: "\n").max {
        TerminalText.columns(String($0)) < TerminalText.columns(String($1))
      }
      #expect(TerminalText.widestLine(text) <= 80, "\(tree) \(name): \(widest ?? "")")
    }
  }

  @Test("an ASCII style draws the bar and the history without a non-ASCII cell")
  func asciiBar() throws {
    let snapshot = try Self.snapshot("vmw-6.x")
    let ascii = StatusText(snapshot: snapshot, style: TerminalStyle(color: false, unicode: false))
    let bar = ascii.bar(pinned: 1 << 30, balloon: 1 << 30, whole: 4 << 30)
    #expect(bar.unicodeScalars.allSatisfy { $0.isASCII }, "\(bar)")
    #expect(bar.contains("#") && bar.contains("=") && bar.contains("."), "\(bar)")
    let unicode = StatusText(snapshot: snapshot, style: .plain)
    #expect(unicode.bar(pinned: 1 << 30, balloon: 1 << 30, whole: 4 << 30).contains("█"))
    let memory = ascii.memoryLines().joined(separator: "\n")
    #expect(!memory.contains("█") && !memory.contains("▒") && !memory.contains("░"), "\(memory)")
    #expect(Sparkline.render([0, 1, 50, 100, nil, 200], scale: 100, unicode: false) == "_.=#?#")
    #expect(Sparkline.render([0, 1, 50, 100, nil, 200], scale: 100, unicode: true) == "▁▂▅█?█")
    #expect(Sparkline.render([5, 0], scale: 0, unicode: true) == "▁▁")
  }

  @Test("a redraw starts at the top-left corner, clears each line's rest, and never scrolls")
  func redraw() {
    let frame = "one\ntwo\nthree"
    #expect(
      TerminalScreen.redraw(frame) == "\u{1B}[Hone\u{1B}[K\ntwo\u{1B}[K\nthree\u{1B}[K\u{1B}[J")
    #expect(TerminalScreen.redraw(frame, rows: 2) == "\u{1B}[Hone\u{1B}[K\ntwo\u{1B}[K\u{1B}[J")
    #expect(TerminalScreen.redraw(frame, rows: 0) == TerminalScreen.redraw(frame))
  }

  @Test("the history keeps the last readings, oldest first")
  func history() throws {
    let snapshot = try Self.snapshot("vmw-6.x")
    var history = SizeHistory(capacity: 3)
    for _ in 0..<5 { history.record(snapshot) }
    let values = try #require(history.readings["vmware:vmw_balloon"])
    #expect(values.count == 3)
    #expect(values.allSatisfy { $0 == snapshot.balloons[0].effectiveCurrentBytes })
  }

  // MARK: the hold's wording and the verdicts

  static let mib: UInt64 = 1 << 20

  /// A 4 GiB guest without swap and nothing pinned but 4 MiB locked: a limit
  /// of 0.65 × (4 GiB − 4 MiB), with one virtio balloon of `current` (nil:
  /// unknown) and `target` (nil: unknown).
  static func guest(current: UInt64?, target: UInt64?) -> GuestSnapshot {
    var meminfo = Meminfo(memTotal: 4096 * mib, swapTotal: 0)
    meminfo.mlocked = 4 * mib
    meminfo.unevictable = 4 * mib
    meminfo.anonPages = 4 * mib
    meminfo.shmem = 0
    let device = BalloonDevice(
      kind: .virtio, name: "virtio0", sysPath: "/sys/devices/virtio0", driver: nil,
      featureBits: [VirtioFeature.deflateOnOOM])
    let reading = BalloonReading(
      device: device,
      current: current.map { .known(bytes: $0, source: "test") } ?? .unknown(reason: "unreadable"),
      target: target.map { .known(bytes: $0, source: "test") } ?? .unknown(reason: "not probed"))
    return GuestSnapshot.assemble(
      balloons: [reading], meminfo: meminfo, vmstat: Vmstat(), vmPinSumBytes: 0, fraction: 0.65)
  }

  struct HoldCase: Sendable, CustomTestStringConvertible {
    var label: String
    var current: UInt64?
    /// The target as an offset from the limit (nil: unknown).
    var targetOverLimit: Int64?
    var held: Bool
    var level: StatusAssessment.Level
    /// What the balloon's line under it says (nil: no such line).
    var line: String?
    var verdictStart: String
    var check: String
    var testDescription: String { label }
  }

  static let holdCases: [HoldCase] = [
    .init(
      label: "held, released, host asks 410.5 MiB over", current: 0,
      targetOverLimit: 410 * Int64(mib) + 512 * 1024, held: true, level: .warning,
      line: "  held      released (0 B); the host asks {target}, 410.5 MiB over the limit",
      verdictStart: "HELD: virtio0 is released and held by the daemon; nothing is over the limit.",
      check:
        "BALLOONCTL WARNING - virtio0 held: balloon released (0 B); the host asks {target}, 410.5 MiB over the limit, limit {limit} | balloon=0B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "held, host back within the limit", current: 0, targetOverLimit: -100 * Int64(mib),
      held: true, level: .warning,
      line: "  held      released (0 B); the host asks {target}, within the limit",
      verdictStart: "HELD: virtio0 is released and held by the daemon; nothing is over the limit.",
      check:
        "BALLOONCTL WARNING - virtio0 held: balloon released (0 B); the host asks {target}, within the limit, limit {limit} | balloon=0B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "held, target unknown", current: 0, targetOverLimit: nil, held: true, level: .warning,
      line: "  held      released (0 B); the host's target is unknown",
      verdictStart: "HELD: virtio0 is released and held by the daemon; nothing is over the limit.",
      check:
        "BALLOONCTL WARNING - virtio0 held: balloon released (0 B); the host's target is unknown, limit {limit} | balloon=0B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "held but the balloon is still over", current: 3000 * mib, targetOverLimit: 0,
      held: true, level: .critical,
      line:
        "  OVER LIMIT by {currentOver} although held: the balloon has not come back under the limit",
      verdictStart: "OVER LIMIT: virtio0 may take memory",
      check:
        "BALLOONCTL CRITICAL - virtio0 held but still {currentOver} over the limit (balloon 2.9 GiB), limit {limit} | balloon=3145728000B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "not held, target over: an alarm", current: 0,
      targetOverLimit: 410 * Int64(mib) + 512 * 1024, held: false, level: .critical,
      line: "  OVER LIMIT by 410.5 MiB", verdictStart: "OVER LIMIT: virtio0 may take memory",
      check:
        "BALLOONCTL CRITICAL - virtio0 over the limit by 410.5 MiB (balloon 0 B, target {target}), limit {limit} | balloon=0B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "not held, under, target known", current: 10 * mib, targetOverLimit: -200 * Int64(mib),
      held: false, level: .ok, line: nil,
      verdictStart: "OK: every balloon and its target are under the limit.",
      check:
        "BALLOONCTL OK - virtio0 10.0 MiB, target {target}, limit {limit} | balloon=10485760B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "not held, target unknown", current: 10 * mib, targetOverLimit: nil, held: false,
      level: .warning, line: nil,
      verdictStart: "OK: every balloon is under the limit now (a target is unknown",
      check:
        "BALLOONCTL WARNING - virtio0 10.0 MiB, target unknown, limit {limit} | balloon=10485760B;;;0 limit={limitBytes}B;;;0"
    ),
    .init(
      label: "not held, size unknown", current: nil, targetOverLimit: -200 * Int64(mib),
      held: false, level: .warning, line: nil, verdictStart: "OK:",
      check:
        "BALLOONCTL WARNING - virtio0 unknown, target {target}, limit {limit} | limit={limitBytes}B;;;0"
    ),
  ]

  @Test(
    "status says plainly when a hold is active; over the limit without one stays an alarm",
    arguments: holdCases)
  func holdWording(_ c: HoldCase) throws {
    let limit = Self.guest(current: 0, target: nil).limit.bytes
    let target = c.targetOverLimit.map { UInt64(Int64(limit) + $0) }
    let snapshot = Self.guest(current: c.current, target: target)
    #expect(snapshot.limit.bytes == limit)
    let held: Set<String> = c.held ? ["virtio:virtio0"] : []
    let text = StatusText(snapshot: snapshot, style: .plain, heldBalloons: held)
    let assessment = text.assessment
    #expect(assessment.level == c.level)
    func filled(_ template: String) -> String {
      template.replacing("{target}", with: ByteFormat.human(target ?? 0))
        .replacing("{limit}", with: ByteFormat.human(limit))
        .replacing("{limitBytes}", with: "\(limit)")
        .replacing("{currentOver}", with: ByteFormat.human((c.current ?? 0) &- limit))
    }
    let lines = text.blocks()[0]
    let extra = lines.filter { $0.hasPrefix("  held") || $0.hasPrefix("  OVER LIMIT") }
    #expect(extra == (c.line.map { [filled($0)] } ?? []), "\(lines)")
    let verdict = try #require(text.blocks().last?.first)
    #expect(verdict.hasPrefix(c.verdictStart), "\(verdict)")
    #expect(text.render().hasSuffix(TerminalText.fit(verdict)))
    #expect(!text.render().contains("OVER LIMIT") || c.level == .critical)
    #expect(assessment.checkLine == filled(c.check))
  }

  @Test("colour marks an alarm in red and a hold in yellow, and nothing without colour")
  func colours() {
    let limit = Self.guest(current: 0, target: nil).limit.bytes
    let over = Self.guest(current: 0, target: limit + Self.mib)
    let red = "\u{1B}[1;31mOVER LIMIT\u{1B}[0m"
    #expect(StatusText(snapshot: over, color: true).render().contains(red))
    #expect(!StatusText(snapshot: over, color: false).render().contains("\u{1B}"))
    let held = StatusText(snapshot: over, color: true, heldBalloons: ["virtio:virtio0"]).render()
    #expect(held.contains("\u{1B}[1;33mheld\u{1B}[0m"))
    #expect(!held.contains(red))
  }

  struct CheckCase: Sendable, CustomTestStringConvertible {
    var tree: String
    var level: StatusAssessment.Level
    var testDescription: String { tree }
  }

  /// Each fixture's verdict follows from its readings: an unknown target is
  /// a WARNING, a target or balloon over the limit CRITICAL (asserted below
  /// from the snapshot itself, not only from this table).
  static let checkCases: [CheckCase] = [
    .init(tree: "none", level: .ok), .init(tree: "kb-example", level: .ok),
    .init(tree: "vmw-6.x", level: .ok), .init(tree: "virtio-6.18", level: .warning),
    .init(tree: "hyperv", level: .warning), .init(tree: "xen", level: .ok),
  ]

  @Test("--check's verdict on the fixture trees", arguments: checkCases)
  func checkOnFixtures(_ c: CheckCase) throws {
    let snapshot = try Self.snapshot(c.tree)
    let assessment = StatusAssessment(snapshot: snapshot, heldBalloons: [])
    #expect(assessment.level == c.level)
    #expect((assessment.level == .critical) == snapshot.overLimit)
    let unknown = snapshot.balloons.contains {
      $0.target.bytes == nil || $0.effectiveCurrentBytes == nil
    }
    #expect((assessment.level == .warning) == (unknown && !snapshot.overLimit))
    #expect(assessment.checkLine.hasPrefix("BALLOONCTL \(c.level.label) - "))
    #expect(assessment.checkLine.contains("limit=\(snapshot.limit.bytes)B;;;0"))
    #expect(!assessment.checkLine.contains("\n"))
    // Holding every balloon turns a CRITICAL target into a WARNING when the
    // balloon itself is under the limit.
    let held = StatusAssessment(snapshot: snapshot, heldBalloons: Self.keys(snapshot))
    if !snapshot.balloons.isEmpty {
      let stillOver = snapshot.balloons.contains {
        ($0.effectiveCurrentBytes ?? 0) > snapshot.limit.bytes
      }
      #expect(held.level == (stillOver ? .critical : .warning))
    }
  }
}
