/// What the daemon knows between ticks and across restarts, written
/// atomically to `/run/balloonctl/state.json` on every change. `status`
/// reads it to show the daemon's state without touching any device.
public struct DaemonState: Sendable, Equatable {
  public static let formatVersion: UInt64 = 1

  public var pid: Int32
  public var mode: String
  public var intervalMilliseconds: UInt64
  public var startedAt: Int64
  /// The clocks at the last update: wall (epoch s) and boot time (s). Hold
  /// times are boot-time (they survive daemon restarts, not reboots, like /run).
  public var updatedAt: Int64
  public var updatedBoottime: Double
  public var limitBytes: UInt64?
  /// The highest pinned figure seen since boot (carried across daemon
  /// restarts like the holds) and when (epoch s): `advise`'s margin for
  /// pinned growth. Raised on a rise of a MiB or more; see Recorder.
  public var maxPinnedBytes: UInt64?
  public var maxPinnedAt: Int64?
  /// The run's effective settings; nil in a state file from before they
  /// were recorded (and after `balloonctl readmit`).
  public var settings: RecordedSettings?
  /// How the daemon is woken (events or tick only, and why); nil in a state
  /// file from before it was recorded.
  public var wakeups: Wakeups?
  public var balloons: [BalloonRecord]
  /// The last OOM kills (at most `OOMRecordJSON.kept`, newest last) and the
  /// count per verdict since the state began.
  public var oomKills: [OOMRecord] = []
  public var oomKillTotals: [OOMVerdict: UInt64] = [:]

  public init(pid: Int32, mode: String, intervalMilliseconds: UInt64, startedAt: Int64) {
    self.pid = pid
    self.mode = mode
    self.intervalMilliseconds = intervalMilliseconds
    self.startedAt = startedAt
    self.updatedAt = startedAt
    self.updatedBoottime = 0
    self.balloons = []
  }

  /// Adds an OOM kill: counted, and kept among the last `OOMRecordJSON.kept`.
  public mutating func add(_ kill: OOMRecord) {
    oomKills.append(kill)
    if oomKills.count > OOMRecordJSON.kept {
      oomKills.removeFirst(oomKills.count - OOMRecordJSON.kept)
    }
    oomKillTotals[kill.verdict, default: 0] += 1
  }

  public func record(forKey key: String) -> BalloonRecord? { balloons.first { $0.key == key } }

  public mutating func update(_ record: BalloonRecord) {
    if let index = balloons.firstIndex(where: { $0.key == record.key }) {
      balloons[index] = record
    } else {
      balloons.append(record)
    }
  }

  /// Wall-clock time of a boot-time instant, via the last update's pair;
  /// nil when the clocks do not give a representable time.
  public func wallTime(ofBoottime instant: Double) -> Int64? {
    let seconds = (Double(updatedAt) - (updatedBoottime - instant)).rounded()
    // Int64's bounds as Doubles: anything inside converts without trapping.
    guard seconds.isFinite, seconds >= -9.2e18, seconds <= 9.2e18 else { return nil }
    return Int64(seconds)
  }

  // MARK: JSON

  public func json() -> JSONValue {
    .object([
      ("version", .integer(DaemonState.formatVersion)),
      ("pid", .signed(Int64(pid))),
      ("mode", .string(mode)),
      ("interval_ms", .integer(intervalMilliseconds)),
      ("settings", settings?.json() ?? .null),
      ("wakeups", wakeups?.json() ?? .null),
      ("started_at", .signed(startedAt)),
      ("updated_at", .signed(updatedAt)),
      ("updated_boottime", .number(updatedBoottime)),
      ("limit_bytes", .optional(limitBytes)),
      ("max_pinned_bytes", .optional(maxPinnedBytes)),
      ("max_pinned_at", maxPinnedAt.map(JSONValue.signed) ?? .null),
      ("balloons", .array(balloons.map(DaemonState.json))),
      ("oom_kills", .array(oomKills.map(OOMRecordJSON.json))),
      ("oom_kills_total", OOMRecordJSON.totalsJSON(oomKillTotals)),
    ])
  }

  static func json(_ record: BalloonRecord) -> JSONValue {
    let hold = record.hold
    func optionalNumber(_ value: Double?) -> JSONValue { value.map(JSONValue.number) ?? .null }
    var members: [(String, JSONValue)] = [
      ("kind", .string(record.kind.rawValue)),
      ("name", .string(record.name)),
      ("sys_path", .string(record.sysPath)),
      ("held", .bool(hold.held)),
      ("since_boottime", optionalNumber(hold.since)),
      ("reason", .optional(hold.reason)),
      ("readmit_not_before_boottime", optionalNumber(hold.readmitNotBefore)),
      ("backoff_seconds", .number(hold.backoffSeconds)),
      ("blind_readmit_at_boottime", optionalNumber(hold.blindReadmitAt)),
    ]
    // The kind's own memory of the hold (Xen: the target_kb it wrote) and of
    // the balloon (Xen: the grant).
    members += record.kind.driver.holdJSON(hold)
    members += record.kind.driver.recordJSON(record.kept)
    members.append(("releases", .integer(UInt64(max(0, hold.releases)))))
    if let decision = record.lastDecision {
      members.append(
        ("last_decision", DecisionJSON.json(decision, kind: record.kind, at: record.lastDecisionAt))
      )
    } else {
      members.append(("last_decision", .null))
    }
    return .object(members)
  }

  /// Parses the state file; `path` names it in errors. The file is input
  /// like any other: every number is checked against the range balloonctl
  /// itself writes, every name against what discovery names a balloon of
  /// that kind; anything else is corrupt (one error naming the field).
  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> DaemonState {
    let document: JSONValue
    do {
      document = try JSONParser.parse(bytes)
    } catch {
      throw .malformed(path, "not JSON (\(error))")
    }
    let top = try StateFields(document, path: path, prefix: "")
    let version = try top.integer("version", StateRange.version)
    guard version == formatVersion else {
      throw .malformed(path, "state format version \(version), expected \(formatVersion)")
    }
    var state = DaemonState(
      pid: Int32(try top.integer("pid", StateRange.pid)),
      mode: try top.word("mode", ControlMode.allCases.map(\.rawValue)),
      intervalMilliseconds: try top.integer("interval_ms", StateRange.intervalMilliseconds),
      startedAt: Int64(try top.integer("started_at", StateRange.epochSeconds)))
    state.updatedAt = Int64(try top.integer("updated_at", StateRange.epochSeconds))
    state.updatedBoottime = try top.seconds("updated_boottime", StateRange.boottime)
    state.limitBytes = try top.optionalInteger("limit_bytes", StateRange.bytes)
    state.maxPinnedBytes = try top.optionalInteger("max_pinned_bytes", StateRange.bytes)
    state.maxPinnedAt = try top.optionalInteger("max_pinned_at", StateRange.epochSeconds).map(
      Int64.init)
    if (state.maxPinnedBytes == nil) != (state.maxPinnedAt == nil) {
      throw .malformed(path, "\"max_pinned_bytes\" and \"max_pinned_at\" come together")
    }
    if let settings = try top.optionalObject("settings") {
      state.settings = try RecordedSettings.parse(settings)
    }
    if let wakeups = try top.optionalObject("wakeups") {
      state.wakeups = try Wakeups.parse(wakeups)
    }
    let entries = try top.array("balloons")
    guard entries.count <= StateRange.maxBalloons else {
      throw .malformed(
        path,
        "\"balloons\" has \(entries.count) records; expected at most \(StateRange.maxBalloons)")
    }
    var seen = Set<String>()
    for (index, entry) in entries.enumerated() {
      let record = try parseRecord(StateFields(entry, path: path, prefix: "balloons[\(index)]."))
      guard seen.insert(record.key).inserted else {
        throw .malformed(path, "\"balloons[\(index)]\" repeats the record of \(record.key)")
      }
      state.balloons.append(record)
    }
    // Absent in a state file from before OOM records were kept.
    let kills = top.optional("oom_kills") == nil ? [] : try top.array("oom_kills")
    guard kills.count <= OOMRecordJSON.kept else {
      throw .malformed(
        path, "\"oom_kills\" has \(kills.count) records; expected at most \(OOMRecordJSON.kept)")
    }
    for (index, entry) in kills.enumerated() {
      state.oomKills.append(
        try OOMRecordJSON.parse(StateFields(entry, path: path, prefix: "oom_kills[\(index)].")))
    }
    if let totals = try top.optionalObject("oom_kills_total") {
      state.oomKillTotals = try OOMRecordJSON.parseTotals(totals)
    }
    return state
  }

  static func parseRecord(_ fields: StateFields) throws(SourceError) -> BalloonRecord {
    let kind = try fields.kind("kind")
    let name = try fields.balloonName("name", kind: kind)
    var hold = HoldState(backoffSeconds: try fields.seconds("backoff_seconds", StateRange.backoff))
    hold.held = try fields.bool("held")
    hold.since = try fields.optionalSeconds("since_boottime", StateRange.boottime)
    hold.reason = try fields.optionalText("reason")
    hold.readmitNotBefore = try fields.optionalSeconds(
      "readmit_not_before_boottime", StateRange.boottime)
    hold.blindReadmitAt = try fields.optionalSeconds(
      "blind_readmit_at_boottime", StateRange.boottime)
    try kind.driver.parseHold(fields, into: &hold)
    hold.releases = Int(try fields.optionalInteger("releases", StateRange.releases) ?? 0)
    // Informational only (what the path was when written): nothing acts on
    // it; the device is found again by discovery.
    let sysPath = try fields.optionalSysPath("sys_path") ?? ""
    var record = BalloonRecord(kind: kind, name: name, sysPath: sysPath, hold: hold)
    record.kept = try kind.driver.parseRecord(fields)
    if let last = try fields.optionalObject("last_decision") {
      record.lastDecision = try DecisionJSON.parse(last, kind: kind)
      record.lastDecisionAt = try last.optionalInteger("at", StateRange.epochSeconds).map(
        Int64.init)
    }
    return record
  }
}
