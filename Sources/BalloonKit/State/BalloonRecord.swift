/// One balloon's entry in the state file.
public struct BalloonRecord: Sendable, Equatable {
  public var kind: BalloonKind
  public var name: String
  public var sysPath: String
  public var hold: HoldState
  public var lastDecision: Decision?
  /// Wall-clock seconds since the epoch of `lastDecision`.
  public var lastDecisionAt: Int64?
  /// The kind's own memory of the balloon, held or not, typed by its driver
  /// (`BalloonDriver.remember`; Xen: the largest grant seen, `XenKept`).
  public var kept: (any RecordPayload)?

  public init(kind: BalloonKind, name: String, sysPath: String, hold: HoldState) {
    self.kind = kind
    self.name = name
    self.sysPath = sysPath
    self.hold = hold
  }

  public static func == (lhs: Self, rhs: Self) -> Bool {
    let sameKept: Bool =
      switch (lhs.kept, rhs.kept) {
      case (nil, nil): true
      case (let left?, let right?): left.isEqual(to: right)
      default: false
      }
    return lhs.kind == rhs.kind && lhs.name == rhs.name && lhs.sysPath == rhs.sysPath
      && lhs.hold == rhs.hold && lhs.lastDecision == rhs.lastDecision
      && lhs.lastDecisionAt == rhs.lastDecisionAt && sameKept
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
