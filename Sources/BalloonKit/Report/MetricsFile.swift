public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Prometheus metrics in the text exposition format, for node_exporter's
/// textfile collector (`--collector.textfile.directory`): written to a
/// temporary file and renamed. Rewritten when a value changed, and at least
/// once a minute for the heartbeat (`balloonctl_last_tick_timestamp_seconds`),
/// so a dead daemon can be told from an idle one without a write every tick.
/// Removed on a clean exit, so node_exporter stops serving a stopped daemon's
/// values; kept after a crash, where the heartbeat goes stale instead
/// (monitoring/balloonctl-alerts.yml alerts on both).
public final class MetricsFile {
  /// node_exporter's textfile collector reads only files named `*.prom`.
  public static let suffix = ".prom"
  /// The heartbeat's longest gap between rewrites, in seconds.
  public static let heartbeatSeconds = 60.0

  public let path: FilePath
  let version: String
  let mode: ControlMode
  let intervalSeconds: Double
  /// The values last written (the heartbeat line excluded), and when (boot time).
  private var lastValues: String?
  private var lastWritten = -Double.infinity

  /// - Parameters:
  ///   - version, mode: `balloonctl_info`'s labels.
  ///   - intervalSeconds: the daemon's tick interval; the heartbeat is
  ///     refreshed on the last tick before it would be a minute old.
  public init(
    path: FilePath, version: String = "unknown", mode: ControlMode = .report,
    intervalSeconds: Double = 1
  ) {
    self.path = path
    self.version = version
    self.mode = mode
    self.intervalSeconds = intervalSeconds
  }

  /// Whether `path` names a file node_exporter's textfile collector reads.
  public static func isTextfileName(_ path: String) -> Bool {
    guard let name = FilePath(path).lastComponent?.string else { return false }
    return name.hasSuffix(suffix) && name.count > suffix.count
  }

  /// Writes the metrics when a value changed or the heartbeat is due. The
  /// directory must be a real directory owned by us or root that no one
  /// else can write; the file is replaced atomically and synced
  /// (CheckedDirectory.replace).
  /// - Parameters:
  ///   - now: boot time, for the heartbeat's period.
  ///   - wall: the tick's wall-clock time, the heartbeat's value.
  public func write(
    _ report: TickReport, state: DaemonState, now: Double = Clock.boottime(),
    wall: Int64 = Clock.wall()
  ) throws(SourceError) {
    let values = MetricsFile.render(report, state: state)
    // The next tick is an interval away: rewrite now if by then the heartbeat
    // would be older than a minute.
    let heartbeatDue = now - lastWritten + intervalSeconds > Self.heartbeatSeconds
    guard values != lastValues || heartbeatDue else { return }
    let text = Self.header(version: version, mode: mode, tickWall: wall) + values
    let (dir, name) = try directory()
    try dir.replace(name, with: Array(text.utf8))
    lastValues = values
    lastWritten = now
  }

  /// Removes the file (a clean exit). Absent already: nothing to do.
  public func remove() throws(SourceError) {
    let (dir, name) = try directory()
    do {
      try Syscall.unlinkat(dir.fd.rawValue, name)
    } catch .noSuchFileOrDirectory {
    } catch {
      throw SourceError(path: path.string, .unwritable(error))
    }
    lastValues = nil
    lastWritten = -Double.infinity
  }

  private func directory() throws(SourceError) -> (CheckedDirectory, String) {
    let directory = path.removingLastComponent()
    guard let name = path.lastComponent?.string else {
      throw SourceError(path: path.string, .wrongType("not a file path"))
    }
    guard let dir = try CheckedDirectory.open(directory, owners: .usOrRoot, create: false) else {
      throw SourceError(path: directory.string, .unwritable(.noSuchFileOrDirectory))
    }
    return (dir, name)
  }

  /// What says the guard is alive and how it runs: its version and mode, and
  /// the heartbeat.
  public static func header(version: String, mode: ControlMode, tickWall: Int64) -> String {
    var out = Family(name: "info", help: "balloonctl's version and mode (enforce or report).")
    out.sample("version=\"\(escape(version))\",mode=\"\(mode.rawValue)\"", 1)
    var heartbeat = Family(
      name: "last_tick_timestamp_seconds",
      help:
        "Wall-clock time of a recent tick (Unix seconds); rewritten at least every \(Int(heartbeatSeconds)) s while the daemon runs."
    )
    heartbeat.sample("", UInt64(max(0, tickWall)))
    return out.text + heartbeat.text
  }

  /// The values: everything but the heartbeat. Sizes are rounded to MiB so
  /// page-level jitter does not rewrite the file every tick; they are still
  /// exported in bytes.
  public static func render(_ report: TickReport, state: DaemonState) -> String {
    let snapshot = report.snapshot
    func mib(_ bytes: UInt64) -> UInt64 { (bytes >> 20) << 20 }
    var families: [Family] = []
    func family(_ name: String, _ help: String, _ samples: [(String, UInt64)]) {
      var family = Family(name: name, help: help)
      for (labels, value) in samples { family.sample(labels, value) }
      families.append(family)
    }
    let limit = snapshot.limit
    family("limit_bytes", "The pinned-aware balloon limit.", [("", mib(limit.bytes))])
    family("guest_bytes", "Guest memory without any balloon.", [("", mib(limit.guestBytes))])
    let pinned = snapshot.pinned
    family(
      "pinned_bytes", "Memory the balloon cannot take, by cause.",
      [
        ("cause=\"hugetlb\"", mib(pinned.hugetlbBytes)),
        ("cause=\"locked\"", mib(pinned.lockedBytes)),
        ("cause=\"dma\"", mib(pinned.dmaPinnedBytes)),
        ("cause=\"kernel\"", mib(pinned.kernelBytes)),
        ("cause=\"unswappable\"", mib(pinned.unswappableBytes)),
      ])
    func labels(_ device: BalloonDevice) -> String {
      "balloon=\"\(escape(device.name))\",kind=\"\(device.kind.rawValue)\""
    }
    family(
      "balloon_current_bytes", "The balloon's size (memory taken from the guest).",
      snapshot.balloons.compactMap { b in
        b.effectiveCurrentBytes.map { (labels(b.device), mib($0)) }
      })
    family(
      "balloon_target_bytes", "The host's target for the balloon, where known.",
      snapshot.balloons.compactMap { b in b.target.bytes.map { (labels(b.device), mib($0)) } })
    family(
      "balloon_over_limit", "1 when the balloon or its target exceeds the limit.",
      snapshot.balloons.map { (labels($0.device), snapshot.isOverLimit($0) ? 1 : 0) })
    family(
      "balloon_held", "1 while balloonctl holds the balloon released.",
      state.balloons.map {
        ("balloon=\"\(escape($0.name))\",kind=\"\($0.kind.rawValue)\"", $0.hold.held ? 1 : 0)
      })
    var releases = Family(
      name: "balloon_releases_total", help: "Times balloonctl released the balloon.",
      type: "counter")
    for record in state.balloons {
      releases.sample(
        "balloon=\"\(escape(record.name))\",kind=\"\(record.kind.rawValue)\"",
        UInt64(max(0, record.hold.releases)))
    }
    families.append(releases)
    // Every verdict is present from 0, so that increase() sees the first kill.
    var oomKills = Family(
      name: "oom_kills_total", help: "OOM kills balloonctl recorded, by verdict.", type: "counter")
    for verdict in OOMVerdict.allCases {
      oomKills.sample("verdict=\"\(verdict.rawValue)\"", state.oomKillTotals[verdict] ?? 0)
    }
    families.append(oomKills)
    return families.map(\.text).joined()
  }

  /// One metric family: its HELP and TYPE lines, then its samples.
  struct Family {
    let name: String
    private(set) var text: String

    init(name: String, help: String, type: String = "gauge") {
      self.name = name
      text = "# HELP balloonctl_\(name) \(help)\n# TYPE balloonctl_\(name) \(type)\n"
    }

    mutating func sample(_ labels: String, _ value: UInt64) {
      text += "balloonctl_\(name)\(labels.isEmpty ? "" : "{\(labels)}") \(value)\n"
    }
  }

  static func escape(_ value: String) -> String {
    var out = ""
    for character in value {
      switch character {
      case "\\": out += "\\\\"
      case "\"": out += "\\\""
      case "\n": out += "\\n"
      default: out.append(character)
      }
    }
    return out
  }
}
