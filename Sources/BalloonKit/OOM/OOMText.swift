/// The "Last OOM kills" part of `status`: two lines per kill, each within
/// 80 columns, newest last.
///
///     Last OOM kills (1 recorded; balloon_caused 1, balloon_involved 0, not_involved 0)
///       14:02:07  killed memlock (pid 146), anon-rss 512.1 MiB
///         balloon_caused: balloon 665.6 MiB, limit 271.4 MiB, cap 271.4 MiB
public enum OOMText {
  public static func lines(_ state: DaemonState, clock: (Int64?) -> String) -> [String] {
    guard !state.oomKills.isEmpty || state.oomKillTotals.values.contains(where: { $0 > 0 })
    else { return [] }
    let total = state.oomKillTotals.values.reduce(0, +|)
    var lines = [
      "Last OOM kills (\(total) recorded; "
        + OOMVerdict.allCases.map { "\($0.rawValue) \(state.oomKillTotals[$0] ?? 0)" }.joined(
          separator: ", ") + ")"
    ]
    for kill in state.oomKills { lines += Self.lines(kill, clock: clock) }
    return lines
  }

  static func lines(_ kill: OOMRecord, clock: (Int64?) -> String) -> [String] {
    var first = "  \(clock(kill.at))  "
    if let pid = kill.victimPid {
      let comm = String((kill.victimComm ?? "?").prefix(16))
      first += "killed \(comm) (pid \(pid))"
      if let anon = kill.victimAnonRSSBytes { first += ", anon-rss \(ByteFormat.human(anon))" }
      if let constraint = kill.constraint, constraint != "none",
        first.count + constraint.count + 2 <= 80
      {
        first += ", \(constraint)"
      }
    } else {
      first += "victim unknown (only /proc/vmstat oom_kill rose)"
    }
    let balloon = kill.balloons.compactMap(\.currentBytes).reduce(0, +|)
    var second = "    \(kill.verdict.rawValue): "
    if kill.balloons.isEmpty {
      second += "no balloon, limit \(ByteFormat.human(kill.limitBytes))"
    } else {
      second += "balloon \(ByteFormat.human(balloon)), limit \(ByteFormat.human(kill.limitBytes))"
    }
    if let cap = kill.capBytes { second += ", cap \(ByteFormat.human(cap))" }
    return [first, second]
  }
}
