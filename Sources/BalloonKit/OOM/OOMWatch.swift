/// Finds the OOM kills the daemon must record: the kernel log's kill
/// records (as they arrive), and the `oom_kill` counter of /proc/vmstat for
/// kills whose records were lost or never seen (no /dev/kmsg under the
/// sandbox, EPIPE). The counter is never read for this alone: the caller
/// passes the value the tick already read (every `TickReader.vmstatEveryTicks`
/// ticks when idle) and the fresh read taken for each recorded kill.
public final class OOMWatch {
  public let follower: KmsgFollower?
  private var matcher = OOMRecordMatcher()
  /// The counter's value that the recorded kills (and the baseline) account
  /// for; nil until the first counter is seen.
  private var accounted: UInt64?

  /// What one look found: each kill (nil victim: seen only in the counter),
  /// whether records were lost, and records that did not parse.
  public struct Found: Sendable {
    public var victims: [OOMVictim?] = []
    public var lost = false
    public var problems: [SourceError] = []
  }

  public init(follower: KmsgFollower?, baseline: UInt64?) {
    self.follower = follower
    accounted = baseline
  }

  /// The kernel log woke the daemon: its new OOM kills.
  public func drainLog() -> Found {
    var found = Found()
    guard let follower else { return found }
    let drained = follower.drain()
    found.lost = drained.lost
    found.problems = drained.problems
    for record in drained.records {
      do throws(SourceError) {
        if let victim = try matcher.take(record, path: follower.path) {
          found.victims.append(victim)
        }
      } catch {
        found.problems.append(error)
      }
    }
    if let accounted { self.accounted = accounted +| UInt64(found.victims.count) }
    return found
  }

  /// A value of the `oom_kill` counter: kills it counts that no record
  /// accounted for. Before calling them unknown the log is drained once
  /// more: the kernel counts a kill just before it logs it.
  public func counter(_ value: UInt64) -> Found {
    guard let accounted else {
      self.accounted = value
      return Found()
    }
    // A counter below what is accounted for is an older reading (the tick's
    // vmstat can be a few ticks old): nothing to add.
    guard value > accounted else { return Found() }
    var found = drainLog()
    let known = self.accounted ?? accounted
    if value > known {
      let unknown = min(value - known, UInt64(OOMRecordJSON.kept))
      found.victims += Array(repeating: nil, count: Int(unknown))
      self.accounted = value
    }
    return found
  }
}
