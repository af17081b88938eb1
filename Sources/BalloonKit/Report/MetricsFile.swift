public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Prometheus metrics in the text exposition format, for node_exporter's
/// textfile collector (`--collector.textfile.directory`): written to a
/// temporary file and renamed, and only when a value changed, so an idle
/// daemon does not write every tick.
public final class MetricsFile {
  public let path: FilePath
  private var last: String?

  public init(path: FilePath) { self.path = path }

  /// Writes the metrics when they changed. The directory must be a real
  /// directory owned by us or root that no one else can write; the file is
  /// replaced atomically and synced (CheckedDirectory.replace).
  public func write(_ report: TickReport, state: DaemonState) throws(SourceError) {
    let text = MetricsFile.render(report, state: state)
    guard text != last else { return }
    let directory = path.removingLastComponent()
    guard let name = path.lastComponent?.string else {
      throw SourceError(path: path.string, .wrongType("not a file path"))
    }
    guard let dir = try CheckedDirectory.open(directory, owners: .usOrRoot, create: false) else {
      throw SourceError(path: directory.string, .unwritable(.noSuchFileOrDirectory))
    }
    try dir.replace(name, with: Array(text.utf8))
    last = text
  }

  /// Sizes are rounded to MiB in the file so page-level jitter does not
  /// rewrite it every tick; they are still exported in bytes.
  public static func render(_ report: TickReport, state: DaemonState) -> String {
    let snapshot = report.snapshot
    func mib(_ bytes: UInt64) -> UInt64 { (bytes >> 20) << 20 }
    var out = ""
    func family(_ name: String, _ help: String, _ samples: [(String, UInt64)]) {
      out += "# HELP balloonctl_\(name) \(help)\n# TYPE balloonctl_\(name) gauge\n"
      for (labels, value) in samples {
        out += "balloonctl_\(name)\(labels.isEmpty ? "" : "{\(labels)}") \(value)\n"
      }
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
    out += "# HELP balloonctl_balloon_releases_total Times balloonctl released the balloon.\n"
    out += "# TYPE balloonctl_balloon_releases_total counter\n"
    for record in state.balloons {
      out +=
        "balloonctl_balloon_releases_total{balloon=\"\(escape(record.name))\",kind=\"\(record.kind.rawValue)\"} \(record.hold.releases)\n"
    }
    out += "# HELP balloonctl_oom_kills_total OOM kills balloonctl recorded, by verdict.\n"
    out += "# TYPE balloonctl_oom_kills_total counter\n"
    for verdict in OOMVerdict.allCases {
      out +=
        "balloonctl_oom_kills_total{verdict=\"\(verdict.rawValue)\"} \(state.oomKillTotals[verdict] ?? 0)\n"
    }
    return out
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
