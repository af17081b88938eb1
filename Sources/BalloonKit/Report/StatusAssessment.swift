/// What `status`'s verdict, its `--check` line and its watch view say, decided
/// in one place from the readings and the daemon's holds.
public struct StatusAssessment: Sendable, Equatable {
  /// The Nagios/Icinga plugin statuses, which are also the exit statuses of
  /// `status --check`.
  public enum Level: Int32, Sendable, Comparable {
    case ok = 0
    case warning = 1
    case critical = 2
    case unknown = 3

    public var label: String {
      switch self {
      case .ok: "OK"
      case .warning: "WARNING"
      case .critical: "CRITICAL"
      case .unknown: "UNKNOWN"
      }
    }

    public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }
  }

  /// One balloon against the limit.
  public enum Condition: Sendable, Equatable {
    /// Not held, the balloon and its target (when known) at or under the limit.
    case within(currentKnown: Bool, targetKnown: Bool)
    /// Not held, and the balloon or its target is over the limit by this much.
    case over(by: UInt64)
    /// The daemon holds it and the balloon is at or under the limit: the
    /// guard has done its job. `targetOverBy`: how far the host's target is
    /// over the limit (nil: it is not, or it is unknown).
    case held(targetOverBy: UInt64?)
    /// The daemon holds it but the balloon itself is still over the limit.
    case heldStillOver(by: UInt64)
  }

  public struct Balloon: Sendable, Equatable {
    public var reading: BalloonReading
    public var condition: Condition
  }

  public var balloons: [Balloon]
  public var limitBytes: UInt64

  /// - Parameter heldBalloons: the `BalloonRecord.key`s the daemon's state
  ///   file says are held.
  public init(snapshot: GuestSnapshot, heldBalloons: Set<String>) {
    limitBytes = snapshot.limit.bytes
    balloons = snapshot.balloons.map { reading in
      let key = BalloonRecord.key(kind: reading.device.kind, name: reading.device.name)
      return Balloon(
        reading: reading,
        condition: Self.condition(
          reading, limitBytes: snapshot.limit.bytes, held: heldBalloons.contains(key)))
    }
  }

  static func condition(_ reading: BalloonReading, limitBytes: UInt64, held: Bool) -> Condition {
    let current = reading.effectiveCurrentBytes
    let target = reading.target.bytes
    func excess(_ bytes: UInt64?) -> UInt64? {
      guard let bytes, bytes > limitBytes else { return nil }
      return bytes - limitBytes
    }
    if held {
      if let over = excess(current) { return .heldStillOver(by: over) }
      return .held(targetOverBy: excess(target))
    }
    let largest = [excess(current), excess(target)].compactMap { $0 }.max()
    if let largest { return .over(by: largest) }
    return .within(currentKnown: current != nil, targetKnown: target != nil)
  }

  /// CRITICAL: a balloon over the limit now, held or not. WARNING: a hold
  /// (the guard acted; the host still asks too much, or has not been
  /// re-admitted yet) or a size that cannot be seen. OK otherwise, no balloon
  /// included.
  public var level: Level {
    balloons.map { balloon -> Level in
      switch balloon.condition {
      case .over, .heldStillOver: .critical
      case .held: .warning
      case .within(let currentKnown, let targetKnown):
        currentKnown && targetKnown ? .ok : .warning
      }
    }.max() ?? .ok
  }

  public var isHeld: Bool {
    balloons.contains { if case .held = $0.condition { true } else { false } }
  }

  /// "released (0 B); the host asks 665.6 MiB, 410.5 MiB over the limit":
  /// a held balloon, plainly (after "held" or "held: balloon").
  public static func heldPhrase(_ reading: BalloonReading, targetOverBy: UInt64?) -> String {
    let size: String
    switch reading.effectiveCurrentBytes {
    case 0?: size = "released (0 B)"
    case let bytes?: size = "at \(ByteFormat.human(bytes)), under the limit"
    case nil: size = "size unknown (\(reading.current.reason ?? "not read"))"
    }
    let host: String
    switch (reading.target.bytes, targetOverBy) {
    case (let target?, let over?):
      host = "the host asks \(ByteFormat.human(target)), \(ByteFormat.human(over)) over the limit"
    case (let target?, nil):
      host = "the host asks \(ByteFormat.human(target)), within the limit"
    case (nil, _): host = "the host's target is unknown"
    }
    return size + "; " + host
  }

  /// One balloon for the `--check` line.
  func summary(_ balloon: Balloon) -> String {
    let reading = balloon.reading
    let name = reading.device.name
    let current = ByteFormat.human(reading.effectiveCurrentBytes)
    let target = ByteFormat.human(reading.target.bytes)
    switch balloon.condition {
    case .within:
      return "\(name) \(current), target \(target)"
    case .over(let by):
      return
        "\(name) over the limit by \(ByteFormat.human(by)) (balloon \(current), target \(target))"
    case .held(let over):
      return "\(name) held: balloon " + Self.heldPhrase(reading, targetOverBy: over)
    case .heldStillOver(let by):
      return "\(name) held but still \(ByteFormat.human(by)) over the limit (balloon \(current))"
    }
  }

  /// The plugin's one line: `BALLOONCTL <LEVEL> - <what> | <perfdata>`, the
  /// perfdata in bytes (`'label'=value[UOM];warn;crit;min;max`).
  public var checkLine: String {
    let what =
      balloons.isEmpty ? "no balloon" : balloons.map(summary).joined(separator: "; ")
    var perfdata: [String] = []
    let sizes = balloons.map(\.reading.effectiveCurrentBytes)
    if !sizes.isEmpty, !sizes.contains(nil) {
      let total = sizes.reduce(UInt64(0)) { $0 +| ($1 ?? 0) }
      perfdata.append("balloon=\(total)B;;;0")
    }
    perfdata.append("limit=\(limitBytes)B;;;0")
    return "BALLOONCTL \(level.label) - \(what), limit \(ByteFormat.human(limitBytes))"
      + " | " + perfdata.joined(separator: " ")
  }

  /// The line for a state that could not be read: the plugin's UNKNOWN.
  public static func unknownLine(_ problem: String) -> String {
    "BALLOONCTL UNKNOWN - \(problem)"
  }
}

extension DaemonReport {
  /// The balloons its state file says are held (`BalloonRecord.key`s).
  public var heldBalloons: Set<String> {
    Set(state.balloons.filter(\.hold.held).map(\.key))
  }
}
