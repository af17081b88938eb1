public import SystemPackage

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

  /// Wall-clock time of a boot-time instant, via the last update's pair.
  public func wallTime(ofBoottime instant: Double) -> Int64 {
    updatedAt - Int64((updatedBoottime - instant).rounded())
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
      ("xen_written_target_kib", .optional(hold.xenWrittenTargetKiB)),
      ("xen_host_balloon_target_bytes", .optional(hold.xenHostBalloonTargetBytes)),
      ("releases", .integer(UInt64(max(0, hold.releases)))),
    ]
    if let decision = record.lastDecision {
      members.append(("last_decision", DecisionJSON.json(decision, at: record.lastDecisionAt)))
    } else {
      members.append(("last_decision", .null))
    }
    return .object(members)
  }

  /// Parses the state file; `path` names it in errors.
  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> DaemonState {
    let document: JSONValue
    do {
      document = try JSONParser.parse(bytes)
    } catch {
      throw .malformed(path, "not JSON (\(error))")
    }
    func field<T>(_ value: JSONValue?, _ name: String, _ get: (JSONValue) -> T?) throws(SourceError)
      -> T
    {
      guard let value, let result = get(value) else {
        throw .malformed(path, "missing or invalid \"\(name)\"")
      }
      return result
    }
    let version = try field(document["version"], "version") { $0.uint64 }
    guard version == formatVersion else {
      throw .malformed(path, "state format version \(version), expected \(formatVersion)")
    }
    let pid = try field(document["pid"], "pid") { $0.double.map { Int32(clamping: Int64($0)) } }
    var state = DaemonState(
      pid: pid,
      mode: try field(document["mode"], "mode") { $0.string },
      intervalMilliseconds: try field(document["interval_ms"], "interval_ms") { $0.uint64 },
      startedAt: try field(document["started_at"], "started_at") { $0.double.map { Int64($0) } })
    state.updatedAt = try field(document["updated_at"], "updated_at") {
      $0.double.map { Int64($0) }
    }
    state.updatedBoottime = try field(document["updated_boottime"], "updated_boottime") {
      $0.double
    }
    state.limitBytes = document["limit_bytes"]?.uint64
    let balloons = try field(document["balloons"], "balloons") { $0.array }
    for entry in balloons {
      let kind = try field(entry["kind"], "kind") { $0.string.flatMap(BalloonKind.init(rawValue:)) }
      var hold = HoldState(
        backoffSeconds: try field(entry["backoff_seconds"], "backoff_seconds") { $0.double })
      hold.held = try field(entry["held"], "held") { $0.bool }
      hold.since = entry["since_boottime"]?.double
      hold.reason = entry["reason"]?.string
      hold.readmitNotBefore = entry["readmit_not_before_boottime"]?.double
      hold.blindReadmitAt = entry["blind_readmit_at_boottime"]?.double
      hold.xenWrittenTargetKiB = entry["xen_written_target_kib"]?.uint64
      hold.xenHostBalloonTargetBytes = entry["xen_host_balloon_target_bytes"]?.uint64
      hold.releases = Int(clamping: entry["releases"]?.uint64 ?? 0)
      var record = BalloonRecord(
        kind: kind, name: try field(entry["name"], "name") { $0.string },
        sysPath: try field(entry["sys_path"], "sys_path") { $0.string }, hold: hold)
      if let last = entry["last_decision"], !last.isNull {
        record.lastDecision = DecisionJSON.parse(last)
        record.lastDecisionAt = last["at"]?.double.map { Int64($0) }
      }
      state.update(record)
    }
    return state
  }
}

/// `{"action":…,"balloon":…,"reason":…}` plus set_target's numbers.
public enum DecisionJSON {
  public static func json(_ decision: Decision, at: Int64? = nil) -> JSONValue {
    var members: [(String, JSONValue)] = [
      ("action", .string(decision.action.rawValue)),
      ("balloon", .string(decision.balloon)),
      ("reason", .string(decision.reason)),
    ]
    if decision.action == .setTarget {
      members.append(("balloon_target_bytes", .optional(decision.balloonTargetBytes)))
      members.append(("target_kb", .optional(decision.xenTargetKiB)))
    }
    if let at { members.append(("at", .signed(at))) }
    return .object(members)
  }

  static func parse(_ value: JSONValue) -> Decision? {
    guard let action = value["action"]?.string.flatMap(Decision.Action.init(rawValue:)),
      let balloon = value["balloon"]?.string, let reason = value["reason"]?.string
    else { return nil }
    return Decision(
      action, balloon: balloon, reason: reason,
      balloonTargetBytes: value["balloon_target_bytes"]?.uint64,
      xenTargetKiB: value["target_kb"]?.uint64)
  }
}

/// Reads and atomically writes the state file.
public struct StateStore: Sendable {
  public let directory: FilePath
  public var file: FilePath { directory.appending("state.json") }

  public static let defaultDirectory: FilePath = "/run/balloonctl"

  public init(directory: FilePath) { self.directory = directory }

  /// nil when no daemon has written a state (first start, or after reboot).
  public func load() throws(SourceError) -> DaemonState? {
    guard let bytes = try SystemFile.read(file) else { return nil }
    return try DaemonState.parse(bytes, path: file.string)
  }

  /// Write to a temporary file in the same directory, fsync, rename over the
  /// old one: a crash at any point leaves either the old or the new state.
  public func save(_ state: DaemonState) throws(SourceError) {
    try ensureDirectory()
    let temporary = directory.appending("state.json.tmp")
    let text = state.json().rendered() + "\n"
    do {
      let fd = try FileDescriptor.open(
        temporary, .writeOnly, options: [.create, .truncate, .closeOnExec],
        permissions: [.ownerReadWrite, .groupRead, .otherRead], retryOnInterrupt: true)
      try fd.closeAfter {
        _ = try fd.writeAll(text.utf8)
        guard fsync(fd.rawValue) == 0 else { throw Errno(rawValue: errno) }
      }
    } catch let error as Errno {
      throw SourceError(path: temporary.string, .unreadable(error))
    } catch {
      throw SourceError(path: temporary.string, .malformed(line: nil, "\(error)"))
    }
    let renamed = temporary.withPlatformString { from in
      file.withPlatformString { to in rename(from, to) }
    }
    guard renamed == 0 else {
      throw SourceError(path: file.string, .unreadable(Errno(rawValue: errno)))
    }
  }

  /// Creates the directory and any missing parents (`mkdir -p`).
  public func ensureDirectory() throws(SourceError) {
    var path = FilePath(directory.root.map { $0.string } ?? "")
    for component in directory.components {
      path.append(component)
      let made = path.withPlatformString { mkdir($0, 0o755) }
      if made != 0 && errno != EEXIST {
        throw SourceError(path: path.string, .unreadable(Errno(rawValue: errno)))
      }
    }
  }
}

/// One `balloonctl run` at a time: an exclusive `flock` on
/// `/run/balloonctl/lock`, released by the kernel when the process dies.
public final class InstanceLock {
  private let fd: FileDescriptor
  public let path: FilePath

  public struct Held: Error, Sendable, CustomStringConvertible {
    public var path: String
    public init(path: String) { self.path = path }
    public var description: String {
      "another balloonctl run holds \(path); only one may govern the balloon"
    }
  }

  public init(directory: FilePath) throws(SourceError) {
    try StateStore(directory: directory).ensureDirectory()
    path = directory.appending("lock")
    do {
      fd = try FileDescriptor.open(
        path, .readWrite, options: [.create, .closeOnExec],
        permissions: [.ownerReadWrite, .groupRead, .otherRead], retryOnInterrupt: true)
    } catch let error as Errno {
      throw SourceError(path: path.string, .unreadable(error))
    } catch {
      throw SourceError(path: path.string, .malformed(line: nil, "\(error)"))
    }
  }

  /// Takes the lock or reports who holds it.
  public func acquire() throws(SourceError) -> Bool {
    if flock(fd.rawValue, LOCK_EX | LOCK_NB) == 0 { return true }
    if errno == EWOULDBLOCK { return false }
    throw SourceError(path: path.string, .unreadable(Errno(rawValue: errno)))
  }

  deinit { try? fd.close() }
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
