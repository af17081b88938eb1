public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// What `status` says about the daemon, from its state file alone (no device
/// access): whether it runs, and per balloon the hold, why and since when.
public struct DaemonReport: Sendable {
  public var state: DaemonState
  public var file: String
  /// nil when liveness cannot be known (a snapshot under --root).
  public var running: Bool?

  public init(state: DaemonState, file: String, running: Bool?) {
    self.state = state
    self.file = file
    self.running = running
  }

  /// The daemon's fraction and margin, as its state file records them; the
  /// declared defaults for a state file that does not (an older balloonctl).
  public var fraction: Double {
    state.settings?.fraction ?? RunConfiguration.defaults.fraction
  }
  public var policy: PolicyConfig {
    state.settings.map { PolicyConfig(margin: $0.margin) } ?? RunConfiguration.defaults.policy
  }

  /// The limit the daemon computes from the readings `status` took: the same
  /// guest, pinned and swap, with the daemon's fraction (not `status`'s
  /// `--fraction`), so the hold's threshold is the one the daemon acts on.
  public func limit(from reading: BalloonLimit) -> BalloonLimit {
    BalloonLimit.compute(
      guestBytes: reading.guestBytes, pinnedBytes: reading.pinnedBytes,
      swapTotalBytes: reading.swapTotalBytes, fraction: fraction)
  }

  /// Where a held balloon is re-admitted, when that depends on the target
  /// alone (not a kind whose hold follows the limit; not a blind back-off).
  func readmitThreshold(_ record: BalloonRecord, limitBytes: UInt64?) -> UInt64? {
    guard record.hold.held, record.kind.driver.readmitsAtThreshold,
      record.hold.readmitNotBefore == nil,
      let limitBytes
    else { return nil }
    return Policy.readmitThreshold(limitBytes, policy)
  }

  /// Reads `<root>/run/balloonctl/state.json` (or `directory`). nil: no daemon
  /// has run since boot. A live root also checks the pid is a balloonctl.
  public static func load(
    root: Root, directory: String = StateStore.defaultDirectory.string
  ) throws(SourceError) -> DaemonReport? {
    let store = StateStore(directory: root.path(directory))
    guard let state = try store.load() else { return nil }
    var running: Bool?
    if root.isLive {
      running = false
      if kill(state.pid, 0) == 0 || errno == EPERM,
        let comm = try? SystemFile.read(FilePath("/proc/\(state.pid)/comm"))
      {
        running = String(decoding: comm, as: UTF8.self).hasPrefix("balloonctl")
      }
    }
    return DaemonReport(state: state, file: store.file.string, running: running)
  }

  /// - Parameter limitBytes: the daemon's limit (`limit(from:)`), for the
  ///   re-admit threshold.
  public func lines(limitBytes: UInt64?) -> [String] {
    var status: String
    switch running {
    case true?: status = "running, pid \(state.pid)"
    case false?: status = "not running (last pid \(state.pid))"
    case nil: status = "pid \(state.pid) (liveness unknown in a snapshot)"
    }
    var lines = [
      "Daemon    \(status), \(state.mode) mode, interval \(Self.interval(state.intervalMilliseconds)); state \(file)",
      "          "
        + (state.settings?.summary
          ?? "settings not recorded (an older balloonctl); thresholds assume the defaults"),
    ]
    if let wakeups = state.wakeups {
      lines.append(
        "Wakeups   " + Self.wakeupsLine(wakeups, intervalMilliseconds: state.intervalMilliseconds))
    }
    for record in state.balloons {
      let hold = record.hold
      if hold.held {
        let since = hold.since.map { Self.clock(state.wallTime(ofBoottime: $0)) } ?? "?"
        lines.append("  \(record.name)  HELD since \(since): \(hold.reason ?? "")")
        if let detail = record.kind.driver.heldDetail(hold) {
          lines += detail
        } else if let notBefore = hold.readmitNotBefore {
          lines.append(
            "    target unknown: re-admit at \(Self.clock(state.wallTime(ofBoottime: notBefore))) (back-off \(Self.seconds(hold.backoffSeconds)) s)"
          )
        } else if let limitBytes, let threshold = readmitThreshold(record, limitBytes: limitBytes) {
          lines.append(
            "    re-admit when the target is at or below \(ByteFormat.human(threshold)) (the daemon's limit \(ByteFormat.human(limitBytes)) × (1 − \(RunSetting.text(policy.margin))))"
          )
        }
      } else {
        lines.append("  \(record.name)  not held (released \(hold.releases)× so far)")
      }
      if let last = record.lastDecision {
        let at = record.lastDecisionAt.map { " at \(Self.clock($0))" } ?? ""
        lines.append("    last decision: \(last.action.rawValue)\(at): \(last.reason)")
      }
    }
    lines += OOMText.lines(state, clock: Self.clock)
    return lines
  }

  /// What wakes the daemon and what it can promise then (README.md, "Wake-ups").
  static func wakeupsLine(_ wakeups: Wakeups, intervalMilliseconds: UInt64) -> String {
    let tick = "tick every \(interval(intervalMilliseconds))"
    let target =
      wakeups.targetProblem.map { "; the target is unknown (\($0)), so a release follows the size" }
      ?? ""
    switch wakeups.mode {
    case .events:
      let idle = wakeups.idleIntervalMilliseconds.map(interval) ?? "?"
      return
        "events: \(wakeups.symbols.joined(separator: ", ")) (the balloon is watched every 5 ms from the host's request); tick every \(idle), every \(interval(intervalMilliseconds)) while held\(target)"
    case .tick:
      return
        "\(tick) only (the balloon can grow for up to an interval before it is seen): \(wakeups.reason ?? "")\(target)"
    }
  }

  /// `status --json`'s `oom_kills`: the state file's records, newest last.
  public var oomKillsJSON: JSONValue { .array(state.oomKills.map(OOMRecordJSON.json)) }

  /// - Parameter limitBytes: the daemon's limit (`limit(from:)`), for the
  ///   re-admit threshold.
  public func json(limitBytes: UInt64? = nil) -> JSONValue {
    .object([
      ("running", running.map(JSONValue.bool) ?? .null),
      ("pid", .signed(Int64(state.pid))),
      ("mode", .string(state.mode)),
      ("interval_ms", .integer(state.intervalMilliseconds)),
      ("settings", state.settings?.json() ?? .null),
      ("wakeups", .optional(state.wakeups?.mode.rawValue)),
      ("wakeups_reason", .optional(state.wakeups?.reason)),
      ("wakeup_symbols", state.wakeups.map { .array($0.symbols.map(JSONValue.string)) } ?? .null),
      ("idle_interval_ms", .optional(state.wakeups?.idleIntervalMilliseconds)),
      ("target_problem", .optional(state.wakeups?.targetProblem)),
      ("limit_bytes", .optional(limitBytes)),
      ("updated_at", .signed(state.updatedAt)),
      ("state_file", .string(file)),
      (
        "balloons",
        .array(
          state.balloons.map { record in
            let hold = record.hold
            return .object([
              ("kind", .string(record.kind.rawValue)),
              ("name", .string(record.name)),
              ("held", .bool(hold.held)),
              ("since", Self.epoch(hold.since.flatMap(state.wallTime(ofBoottime:)))),
              ("reason", .optional(hold.reason)),
              (
                "readmit_not_before",
                Self.epoch(hold.readmitNotBefore.flatMap(state.wallTime(ofBoottime:)))
              ),
              ("backoff_seconds", .number(hold.backoffSeconds)),
              (
                "readmit_threshold_bytes",
                .optional(readmitThreshold(record, limitBytes: limitBytes))
              ),
              ("releases", .integer(UInt64(max(0, hold.releases)))),
              (
                "last_decision",
                record.lastDecision.map {
                  DecisionJSON.json($0, kind: record.kind, at: record.lastDecisionAt)
                }
                  ?? .null
              ),
            ])
          })
      ),
    ])
  }

  static func interval(_ milliseconds: UInt64) -> String {
    milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
  }

  static func epoch(_ seconds: Int64?) -> JSONValue { seconds.map(JSONValue.signed) ?? .null }

  /// Whole seconds of a duration; "?" when it is not a sane number (the
  /// state file's ranges make that unreachable from a parsed file).
  static func seconds(_ value: Double) -> String {
    guard value.isFinite, value >= 0, value <= 1e15 else { return "?" }
    return String(Int64(value))
  }

  /// Local wall-clock time, HH:MM:SS (with the date when not today); "?"
  /// when there is none or the C library cannot represent it.
  static func clock(_ epoch: Int64?) -> String {
    guard let epoch else { return "?" }
    var time = time_t(epoch)
    var now = time_t(Clock.wall())
    var parts = tm()
    var today = tm()
    guard localtime_r(&time, &parts) != nil, localtime_r(&now, &today) != nil else {
      return "?"
    }
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let clock = "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    if parts.tm_yday == today.tm_yday && parts.tm_year == today.tm_year { return clock }
    return "\(Int(parts.tm_year) + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(clock)"
  }
}
