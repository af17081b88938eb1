import BalloonKit
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The metrics file says the guard is alive (a heartbeat at least once a
/// minute, without a write every tick), in which mode, and goes away on a
/// clean exit. scripts/test-metrics-tools.sh runs the real node_exporter and
/// promtool against the daemon's own file.
@Suite("metrics file: info, heartbeat, removal")
struct MetricsFileTests {
  static func tick(_ fixture: String) throws -> (TickReport, DaemonState) {
    let controller = Controller(
      root: Fixtures.root(fixture), config: ControllerConfig(mode: .report), actuators: nil,
      probe: nil, store: nil, previous: nil, pid: 1,
      logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
    return (try controller.tick(), controller.state)
  }

  /// A directory of our own, mode 0755, as the metrics file needs.
  static func directory() throws -> TemporaryTree {
    let tree = try TemporaryTree()
    #expect(chmod(tree.base.string, 0o755) == 0)
    return tree
  }

  static func read(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let count = fread(&buffer, 1, buffer.count, file)
      if count == 0 { break }
      bytes += buffer[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  static func heartbeat(_ text: String?) -> String? {
    text?.split(separator: "\n").first {
      $0.hasPrefix("balloonctl_last_tick_timestamp_seconds ")
    }.map { String($0.split(separator: " ")[1]) }
  }

  @Test("balloonctl_info carries the version and mode; every family has HELP and TYPE")
  func infoAndFamilies() throws {
    let (report, state) = try Self.tick("virtio-6.18")
    let tree = try Self.directory()
    let path = tree.path("/balloonctl.prom")
    try MetricsFile(path: FilePath(path), version: "9.8.7", mode: .enforce)
      .write(report, state: state, now: 100, wall: 1_700_000_000)
    let text = try #require(Self.read(path))
    let lines = text.split(separator: "\n").map(String.init)
    #expect(lines.contains("balloonctl_info{version=\"9.8.7\",mode=\"enforce\"} 1"))
    #expect(lines.contains("balloonctl_last_tick_timestamp_seconds 1700000000"))
    // The balloon this fixture has is in the file (not only the fixed families).
    #expect(lines.contains { $0.hasPrefix("balloonctl_balloon_current_bytes{balloon=\"virtio0\"") })
    let samples = Set(
      lines.filter { !$0.hasPrefix("#") }.map {
        String($0.prefix { $0 != "{" && $0 != " " })
      })
    #expect(samples.count >= 9, "\(samples)")
    for family in samples {
      #expect(lines.contains { $0.hasPrefix("# HELP \(family) ") }, "\(family) has no HELP")
      #expect(
        lines.contains("# TYPE \(family) gauge") || lines.contains("# TYPE \(family) counter"),
        "\(family) has no TYPE")
    }
  }

  @Test("the heartbeat is rewritten at least once a minute, not every tick; a change at once")
  func heartbeatCadence() throws {
    let (report, state) = try Self.tick("virtio-6.18")
    let (other, otherState) = try Self.tick("kb-example")
    let tree = try Self.directory()
    let path = tree.path("/balloonctl.prom")
    let metrics = MetricsFile(path: FilePath(path), version: "1", mode: .report, intervalSeconds: 1)
    try metrics.write(report, state: state, now: 1000, wall: 5000)
    #expect(Self.heartbeat(Self.read(path)) == "5000")
    // Nothing changed, the last write is 58 s old: the next tick (1 s away)
    // is still within the minute, so no write.
    try metrics.write(report, state: state, now: 1058, wall: 5058)
    #expect(Self.heartbeat(Self.read(path)) == "5000")
    // 59.5 s: the next tick would be past the minute; rewritten now.
    try metrics.write(report, state: state, now: 1059.5, wall: 5059)
    #expect(Self.heartbeat(Self.read(path)) == "5059")
    // A changed value is written at the next tick, whatever the heartbeat.
    try metrics.write(other, state: otherState, now: 1060.5, wall: 5060)
    #expect(Self.heartbeat(Self.read(path)) == "5060")
    #expect(Self.read(path) != nil && Self.read(path)!.contains("balloonctl_limit_bytes"))

    // A 60 s interval: every tick is the last one within the minute.
    let slow = MetricsFile(
      path: FilePath(tree.path("/slow.prom")), version: "1", mode: .report, intervalSeconds: 60)
    for (n, now) in [0.0, 60, 119.9].enumerated() {
      try slow.write(report, state: state, now: now, wall: Int64(n))
      #expect(Self.heartbeat(Self.read(tree.path("/slow.prom"))) == "\(n)")
    }
  }

  @Test("remove() deletes the file (a clean exit); absent already is fine; the next write is full")
  func remove() throws {
    let (report, state) = try Self.tick("virtio-6.18")
    let tree = try Self.directory()
    let path = tree.path("/balloonctl.prom")
    let metrics = MetricsFile(path: FilePath(path))
    try metrics.write(report, state: state, now: 0, wall: 1)
    #expect(SystemFile.exists(FilePath(path)))
    try metrics.remove()
    #expect(!SystemFile.exists(FilePath(path)))
    try metrics.remove()
    // The same values again are written: the file is gone, not unchanged.
    try metrics.write(report, state: state, now: 1, wall: 2)
    #expect(Self.heartbeat(Self.read(path)) == "2")
  }

  @Test(
    "only *.prom names are textfile names",
    arguments: [
      ("/run/balloonctl/balloonctl.prom", true), ("/a/b.prom", true), ("/a/.prom", false),
      ("/a/b.prom.tmp", false), ("/a/b.txt", false), ("/a/prom", false), ("/a/b.PROM", false),
    ])
  func textfileNames(_ path: String, _ valid: Bool) {
    #expect(MetricsFile.isTextfileName(path) == valid)
  }

  @Test("a --metrics-file not ending in .prom is refused in one line, flag or settings file")
  func promSuffixRefused() throws {
    var flags = RunSettings()
    flags.metricsFile = "/var/lib/node-exporter/balloonctl.txt"
    #expect(
      RunConfiguration.problem(in: flags)
        == "--metrics-file must be a file name ending in .prom (node_exporter's textfile collector reads no other), got \"/var/lib/node-exporter/balloonctl.txt\""
    )
    flags.metricsFile = "/var/lib/node-exporter/balloonctl.prom"
    #expect(RunConfiguration.problem(in: flags) == nil)

    let tree = try TemporaryTree()
    try tree.write("/balloonctl", "BALLOONCTL_METRICS_FILE=/run/balloonctl/metrics\n")
    let error = #expect(throws: SourceError.self) {
      try RunSettings.load(FilePath(tree.path("/balloonctl")))
    }
    #expect(
      error?.description
        == "\(tree.path("/balloonctl")): line 1: BALLOONCTL_METRICS_FILE=\"/run/balloonctl/metrics\": expected a file name ending in .prom (node_exporter's textfile collector reads no other)"
    )

    let result = try Balloonctl.run([
      "run", "--once", "--mode", "report", "--metrics-file", "/run/balloonctl/m.txt",
    ])
    #expect(result.status == 64)
    #expect(
      result.stderr.hasPrefix(
        "Error: --metrics-file must be a file name ending in .prom (node_exporter's textfile collector reads no other), got \"/run/balloonctl/m.txt\"\n"
      ), "\(result.stderr)")
  }
}
