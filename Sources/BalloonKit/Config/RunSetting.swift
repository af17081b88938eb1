public import Logging

/// Every setting of `balloonctl run`, each declared once. `all` is in the
/// order the settings file, the README and the help list them.
public enum RunSetting {
  public static let intervalRange = 0.1...60.0
  public static let marginRange = 0.0...0.5

  public static let mode = Setting<ControlMode, ControlMode>(
    name: "mode", flag: "mode", key: "BALLOONCTL_MODE",
    help: "enforce: pull levers. report: log and publish what it would do, change nothing.",
    expected: "enforce or report", default: .report, field: \.mode,
    parse: ControlMode.init(rawValue:), describe: \.rawValue)

  public static let interval = Setting<Double, Double>(
    name: "interval_s", flag: "interval", key: "BALLOONCTL_INTERVAL", valueName: "seconds",
    help: "Seconds between ticks, \(text(intervalRange)).",
    expected: "seconds between ticks, \(text(intervalRange))",
    rule: "must be \(text(intervalRange)) seconds", default: 1, field: \.intervalSeconds,
    parse: decimal, isValid: { intervalRange.contains($0) }, describe: text)

  public static let events = Setting<Bool, Bool>(
    name: "events", flag: "events", key: "BALLOONCTL_EVENTS",
    help:
      "Wake on the balloon driver's own events (a kprobe perf event on its target-change function, no BPF); when they cannot be used, tick every interval.",
    expected: "yes or no", default: true, field: \.events, parse: yesNo, describe: text)

  public static let eventsInterval = Setting<Double, Double>(
    name: "events_interval_s", flag: "events-interval", key: "BALLOONCTL_EVENTS_INTERVAL",
    valueName: "seconds",
    help:
      "Seconds between ticks while events wake the daemon, \(text(intervalRange)); the interval applies when they do not.",
    expected: "seconds between ticks with events, \(text(intervalRange))",
    rule: "must be \(text(intervalRange)) seconds", default: 10, field: \.eventsIntervalSeconds,
    parse: decimal, isValid: { intervalRange.contains($0) }, describe: text)

  public static let margin = Setting<Double, Double>(
    name: "margin", flag: "margin", key: "BALLOONCTL_MARGIN", valueName: "m",
    help: "Re-admit when the target is at or below limit × (1 − margin), \(text(marginRange)).",
    expected: "re-admit margin, \(text(marginRange))", rule: "must be \(text(marginRange))",
    default: PolicyConfig.default.margin, field: \.margin, parse: decimal,
    isValid: { marginRange.contains($0) },
    describe: text)

  public static let fraction = Setting<Double, Double>(
    name: "fraction", flag: "fraction", key: "BALLOONCTL_FRACTION", valueName: "f",
    help: "Share of guest − pinned the balloon may take, 0 < f ≤ 1.",
    expected: "limit fraction, above 0 and at most 1", rule: "must be above 0 and at most 1",
    default: BalloonLimit.defaultFraction, field: \.fraction, parse: decimal,
    isValid: BalloonLimit.isValid(fraction:), describe: text)

  public static let probeTarget = Setting<Bool, Bool>(
    name: "probe_target", flag: "probe-target", key: "BALLOONCTL_PROBE_TARGET",
    help:
      "Read the virtio target from the device's PCI config window (writes its window registers); the preventive hold needs the target.",
    expected: "yes or no", default: false, enforceDefault: true, field: \.probeTarget,
    parse: yesNo, describe: text)

  public static let vmwShrinker = Setting<Bool, Bool>(
    name: "vmw_shrinker", flag: "vmw-shrinker", key: "BALLOONCTL_VMW_SHRINKER",
    help: "Reload vmw_balloon with vmwballoon_shrinker_enable=1 when re-admitting.",
    expected: "yes or no", default: false, field: \.vmwShrinker, parse: yesNo, describe: text)

  public static let levers = Setting<Set<BalloonKind>, Set<BalloonKind>>(
    name: "levers", flag: "levers", key: "BALLOONCTL_LEVERS", valueName: "list",
    help: "Levers that may be pulled: comma-separated virtio, vmware, xen, or none.",
    expected: "comma-separated virtio, vmware, xen (or none)", default: [.virtio, .vmware, .xen],
    field: \.levers, parse: RunSettings.parseLevers, describe: text)

  public static let logLevel = Setting<String, Logger.Level>(
    name: "log_level", flag: "log-level", key: "BALLOONCTL_LOG_LEVEL", valueName: nil,
    help: "Lowest log level written to stderr.",
    expected: listed(Logger.Level.allCases, "or"),
    rule: "must be one of \(listed(Logger.Level.allCases, "or"))",
    parse: { Logger.Level(rawValue: $0) == nil ? nil : $0 },
    isValid: { Logger.Level(rawValue: $0) != nil },
    field: \.logLevel, defaultValue: { _ in .notice },
    resolve: { Logger.Level(rawValue: $0) ?? .notice }, describe: \.rawValue)

  public static let onExit = Setting<ExitPolicy, ExitPolicy>(
    name: "on_exit", flag: "on-exit", key: "BALLOONCTL_ON_EXIT",
    help:
      "What to do with a held balloon on SIGTERM/SIGINT: hold (keep it released; the next run resumes) or readmit.",
    expected: "hold or readmit", default: .hold, field: \.onExit,
    parse: ExitPolicy.init(rawValue:), describe: \.rawValue)

  public static let metricsFile = Setting<String, String?>(
    name: "metrics_file", flag: "metrics-file", key: "BALLOONCTL_METRICS_FILE", valueName: "file",
    help:
      "Also write Prometheus metrics to <file>, a *.prom file for node_exporter's textfile collector: on every change and at least once a minute; removed on a clean exit. Not with --root (a snapshot run writes nothing).",
    expected: "an absolute path for the Prometheus textfile", field: \.metricsFile,
    parse: { $0 },
    isValid: { $0.hasPrefix("/") && !$0.hasSuffix("/") && MetricsFile.isTextfileName($0) },
    // node_exporter's textfile collector silently skips any other name.
    refusal: { path in
      path.hasPrefix("/") && !path.hasSuffix("/") && !MetricsFile.isTextfileName(path)
        ? "a file name ending in \(MetricsFile.suffix) (node_exporter's textfile collector reads no other)"
        : nil
    }, describe: { $0 })

  public static let all: [any AnySetting] = [
    mode, interval, events, eventsInterval, margin, fraction, probeTarget, vmwShrinker, levers,
    logLevel, onExit,
    metricsFile,
  ]

  /// The settings-file keys and what each takes.
  public static let keys: [(String, String)] = all.map { ($0.key, $0.expected) }

  // MARK: values as text, as the settings file writes them

  /// A plain decimal (`1`, `0.05`, `.5`): no sign, exponent, hex, inf or nan,
  /// which `Double(_:)` would also take.
  static func decimal(_ text: String) -> Double? {
    var digits = 0
    var points = 0
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digits += 1
      case UInt8(ascii: "."): points += 1
      default: return nil
      }
    }
    guard digits > 0, points <= 1, text.utf8.count <= 64 else { return nil }
    return Double(text)
  }

  static func yesNo(_ value: String) -> Bool? {
    switch value.lowercased() {
    case "yes", "true", "1", "on": true
    case "no", "false", "0", "off": false
    default: nil
    }
  }

  /// `1` rather than `1.0`; other values as Swift writes them (`0.05`).
  public static func text(_ value: Double) -> String {
    if value.isFinite, value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
    return "\(value)"
  }

  static func text(_ range: ClosedRange<Double>) -> String {
    "\(text(range.lowerBound)) to \(text(range.upperBound))"
  }

  static func text(_ flag: Bool) -> String { flag ? "yes" : "no" }

  /// `virtio,vmware,xen` in discovery's order, or `none`.
  public static func text(_ levers: Set<BalloonKind>) -> String {
    let names = BalloonKind.allCases.filter(levers.contains).map(\.rawValue)
    return names.isEmpty ? "none" : names.joined(separator: ",")
  }

  /// "a, b or c".
  static func listed<T: RawRepresentable<String>>(_ values: [T], _ last: String) -> String {
    let names = values.map(\.rawValue)
    guard names.count > 1 else { return names.joined() }
    return names.dropLast().joined(separator: ", ") + " \(last) " + names[names.count - 1]
  }
}
