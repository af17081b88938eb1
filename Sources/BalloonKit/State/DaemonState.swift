#if canImport(Glibc)
  import Glibc
#endif

/// One balloon's entry in the state file.
public struct BalloonRecord: Sendable, Equatable {
  public var kind: BalloonKind
  public var name: String
  public var sysPath: String
  public var hold: HoldState
  public var lastDecision: Decision?
  /// Wall-clock seconds since the epoch of `lastDecision`.
  public var lastDecisionAt: Int64?

  public init(kind: BalloonKind, name: String, sysPath: String, hold: HoldState) {
    self.kind = kind
    self.name = name
    self.sysPath = sysPath
    self.hold = hold
  }

  /// The key balloons are tracked by: a virtio device keeps its name across
  /// unbind/rebind, and a hot-plugged replacement may reuse it (its hold is
  /// dropped when the old one goes, see Policy).
  public var key: String { BalloonRecord.key(kind: kind, name: name) }

  public static func key(kind: BalloonKind, name: String) -> String { "\(kind.rawValue):\(name)" }

  /// Whether `name` is what discovery names a balloon of `kind` (its driver
  /// says: `virtio<n>`, `vmw_balloon`, `xen_memory<n>`, a vmbus instance GUID).
  public static func isValid(name: String, kind: BalloonKind) -> Bool {
    kind.driver.isValid(name: name)
  }
}

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
  public var balloons: [BalloonRecord]

  public init(pid: Int32, mode: String, intervalMilliseconds: UInt64, startedAt: Int64) {
    self.pid = pid
    self.mode = mode
    self.intervalMilliseconds = intervalMilliseconds
    self.startedAt = startedAt
    self.updatedAt = startedAt
    self.updatedBoottime = 0
    self.balloons = []
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
      ("started_at", .signed(startedAt)),
      ("updated_at", .signed(updatedAt)),
      ("updated_boottime", .number(updatedBoottime)),
      ("limit_bytes", .optional(limitBytes)),
      ("balloons", .array(balloons.map(DaemonState.json))),
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
    // The kind's own memory of the hold (Xen: the target_kb it wrote).
    members += record.kind.driver.holdJSON(hold)
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
    if let last = try fields.optionalObject("last_decision") {
      record.lastDecision = try DecisionJSON.parse(last, kind: kind)
      record.lastDecisionAt = try last.optionalInteger("at", StateRange.epochSeconds).map(
        Int64.init)
    }
    return record
  }
}

/// The ranges a state file's numbers must be in: what balloonctl itself can
/// write, with room to spare. Outside them the file is corrupt.
public enum StateRange {
  public static let version: ClosedRange<UInt64> = 0...1_000_000
  /// Linux's PID_MAX_LIMIT.
  public static let pid: ClosedRange<UInt64> = 1...4_194_304
  /// Seconds since the epoch (2^40 s is beyond year 36000).
  public static let epochSeconds: ClosedRange<UInt64> = 0...(1 << 40)
  /// CLOCK_BOOTTIME seconds (1e10 s is three centuries of uptime).
  public static let boottime: ClosedRange<Double> = 0...1e10
  /// The blind re-admit back-off (the policy caps it at 10 min).
  public static let backoff: ClosedRange<Double> = 0...86_400
  public static let releases: ClosedRange<UInt64> = 0...(1 << 32)
  /// Xen target_kb (2^50 KiB is 1 EiB).
  public static let kibibytes: ClosedRange<UInt64> = 0...(1 << 50)
  public static let bytes: ClosedRange<UInt64> = 0...(1 << 60)
  /// `--interval` 0.1 to 60 s.
  public static let intervalMilliseconds: ClosedRange<UInt64> = 100...60_000
  /// Far more balloons than any guest has.
  public static let maxBalloons = 256
  /// Reasons and paths are short texts.
  public static let maxTextBytes = 4096
}

/// The members of one object of the state file, each read as untrusted
/// input: the type, the range and the text are checked, and a failure names
/// the file and the field (`balloons[0].backoff_seconds`).
public struct StateFields {
  let value: JSONValue
  let path: String
  let prefix: String

  init(_ value: JSONValue, path: String, prefix: String) throws(SourceError) {
    guard case .object = value else {
      throw .malformed(
        path, prefix.isEmpty ? "not a JSON object" : "\"\(prefix.dropLast())\" is not an object")
    }
    self.value = value
    self.path = path
    self.prefix = prefix
  }

  func fail(_ field: String, _ what: String) -> SourceError {
    .malformed(path, "\"\(prefix)\(field)\" \(what)")
  }

  /// A short rendering of a bad value for the error.
  func shown(_ value: JSONValue) -> String {
    let text = value.rendered(pretty: false)
    return text.count <= 40 ? text : String(text.prefix(40)) + "…"
  }

  func required(_ field: String) throws(SourceError) -> JSONValue {
    guard let member = value[field], !member.isNull else { throw fail(field, "is missing") }
    return member
  }

  func optional(_ field: String) -> JSONValue? {
    guard let member = value[field], !member.isNull else { return nil }
    return member
  }

  func integer(_ field: String, _ range: ClosedRange<UInt64>) throws(SourceError) -> UInt64 {
    try integer(field, required(field), range)
  }

  public func optionalInteger(_ field: String, _ range: ClosedRange<UInt64>) throws(SourceError)
    -> UInt64?
  {
    guard let member = optional(field) else { return nil }
    return try integer(field, member, range)
  }

  private func integer(_ field: String, _ member: JSONValue, _ range: ClosedRange<UInt64>)
    throws(SourceError) -> UInt64
  {
    guard case .integer(let number) = member, range.contains(number) else {
      throw fail(
        field,
        "is \(shown(member)); expected an integer from \(range.lowerBound) to \(range.upperBound)")
    }
    return number
  }

  func seconds(_ field: String, _ range: ClosedRange<Double>) throws(SourceError) -> Double {
    try seconds(field, required(field), range)
  }

  func optionalSeconds(_ field: String, _ range: ClosedRange<Double>) throws(SourceError) -> Double?
  {
    guard let member = optional(field) else { return nil }
    return try seconds(field, member, range)
  }

  private func seconds(_ field: String, _ member: JSONValue, _ range: ClosedRange<Double>)
    throws(SourceError) -> Double
  {
    // The parser yields only finite numbers; the range check keeps it so.
    guard let number = member.double, number.isFinite, range.contains(number) else {
      throw fail(
        field,
        "is \(shown(member)); expected seconds from \(Int64(range.lowerBound)) to \(Int64(range.upperBound))"
      )
    }
    return number
  }

  func bool(_ field: String) throws(SourceError) -> Bool {
    let member = try required(field)
    guard let flag = member.bool else {
      throw fail(field, "is \(shown(member)); expected true or false")
    }
    return flag
  }

  func array(_ field: String) throws(SourceError) -> [JSONValue] {
    let member = try required(field)
    guard let items = member.array else {
      throw fail(field, "is \(shown(member)); expected an array")
    }
    return items
  }

  func optionalObject(_ field: String) throws(SourceError) -> StateFields? {
    guard let member = optional(field) else { return nil }
    return try StateFields(member, path: path, prefix: prefix + field + ".")
  }

  /// One of a fixed set of words.
  func word(_ field: String, _ words: [String]) throws(SourceError) -> String {
    let member = try required(field)
    guard let text = member.string, words.contains(text) else {
      throw fail(field, "is \(shown(member)); expected one of \(words.joined(separator: ", "))")
    }
    return text
  }

  func kind(_ field: String) throws(SourceError) -> BalloonKind {
    BalloonKind(rawValue: try word(field, BalloonKind.allCases.map(\.rawValue)))!
  }

  func balloonName(_ field: String, kind: BalloonKind) throws(SourceError) -> String {
    let member = try required(field)
    guard let name = member.string, BalloonRecord.isValid(name: name, kind: kind) else {
      throw fail(field, "is \(shown(member)); not the name of a \(kind.rawValue) balloon")
    }
    return name
  }

  /// Free text (a reason): bounded, and no control characters, which a
  /// terminal showing `status` would obey.
  func text(_ field: String) throws(SourceError) -> String {
    let member = try required(field)
    return try text(field, member)
  }

  func optionalText(_ field: String) throws(SourceError) -> String? {
    guard let member = optional(field) else { return nil }
    return try text(field, member)
  }

  private func text(_ field: String, _ member: JSONValue) throws(SourceError) -> String {
    guard let text = member.string else {
      throw fail(field, "is \(shown(member)); expected a string")
    }
    guard text.utf8.count <= StateRange.maxTextBytes else {
      throw fail(field, "is longer than \(StateRange.maxTextBytes) bytes")
    }
    guard !text.unicodeScalars.contains(where: StateFields.isControl) else {
      throw fail(field, "contains a control character")
    }
    return text
  }

  func optionalSysPath(_ field: String) throws(SourceError) -> String? {
    guard let text = try optionalText(field) else { return nil }
    guard text.isEmpty || text.hasPrefix("/sys/") else {
      throw fail(field, "is \"\(text)\"; expected a path below /sys")
    }
    return text
  }

  static func isControl(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
  }
}

/// `{"action":…,"balloon":…,"reason":…}` plus set_target's numbers.
public enum DecisionJSON {
  /// `kind`: the balloon's, which names a set_target's number (nil: the
  /// registered driver that has one).
  public static func json(_ decision: Decision, kind: BalloonKind? = nil, at: Int64? = nil)
    -> JSONValue
  {
    var members: [(String, JSONValue)] = [
      ("action", .string(decision.action.rawValue)),
      ("balloon", .string(decision.balloon)),
      ("reason", .string(decision.reason)),
    ]
    if decision.action == .setTarget {
      members.append(("balloon_target_bytes", .optional(decision.balloonTargetBytes)))
      members.append((leverArgumentName(kind), .optional(decision.leverArgument)))
    }
    if let at { members.append(("at", .signed(at))) }
    return .object(members)
  }

  /// The member naming the number a set_target writes: the kind's driver
  /// names it (Xen: `target_kb`).
  static func leverArgumentName(_ kind: BalloonKind?) -> String {
    kind?.driver.leverArgumentName
      ?? BalloonDrivers.all.lazy.compactMap(\.leverArgumentName).first ?? "lever_argument"
  }

  /// A saved decision, checked like the rest of the state file.
  static func parse(_ fields: StateFields, kind: BalloonKind) throws(SourceError) -> Decision {
    let action = Decision.Action(
      rawValue: try fields.word(
        "action", [Decision.Action.none, .release, .readmit, .setTarget, .alert].map(\.rawValue)))!
    return Decision(
      action, balloon: try fields.balloonName("balloon", kind: kind),
      reason: try fields.text("reason"),
      balloonTargetBytes: try fields.optionalInteger("balloon_target_bytes", StateRange.bytes),
      leverArgument: try kind.driver.leverArgumentName.flatMap { name throws(SourceError) in
        try fields.optionalInteger(name, StateRange.kibibytes)
      })
  }
}

/// The clocks the daemon runs on.
public enum Clock {
  /// Seconds since boot, including suspend (CLOCK_BOOTTIME).
  public static func boottime() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_BOOTTIME, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
  }

  /// Seconds since the epoch.
  public static func wall() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec)
  }
}
