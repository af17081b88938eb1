/// `run --once --json`: the snapshot's members (the same as `status --json`),
/// the mode, the headline decision and every decision. With no balloon the
/// headline is `none` with a null `balloon`.
public enum OnceJSON {
  public static func document(_ report: TickReport, mode: ControlMode) -> JSONValue {
    var members = SnapshotJSON.members(report.snapshot)
    members.append(("mode", .string(mode.rawValue)))
    let decision: JSONValue =
      if let headline = report.headline {
        DecisionJSON.json(headline)
      } else {
        .object([
          ("action", .string(Decision.Action.none.rawValue)),
          ("balloon", .null),
          ("reason", .string("no balloon")),
        ])
      }
    members.append(("decision", decision))
    members.append(("decisions", .array(report.decisions.map { DecisionJSON.json($0) })))
    return .object(members)
  }
}
