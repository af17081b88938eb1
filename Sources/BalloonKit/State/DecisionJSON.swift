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
