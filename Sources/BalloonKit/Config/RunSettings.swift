public import SystemPackage

/// `balloonctl run`'s settings from an environment file (`/etc/default/balloonctl`,
/// as earlyoom does): `KEY=VALUE` lines, `#` comments, optional quotes.
/// Every key and value is checked; an unknown key or a bad value is an error
/// naming the file and line, never a silent default. Command-line flags win.
public struct RunSettings: Sendable, Equatable {
  public var mode: ControlMode?
  public var intervalSeconds: Double?
  public var margin: Double?
  public var fraction: Double?
  public var probeTarget: Bool?
  public var vmwShrinker: Bool?
  public var levers: Set<BalloonKind>?
  public var logLevel: String?
  public var onExit: ExitPolicy?
  public var metricsFile: String?

  public init() {}

  public static let defaultPath = "/etc/default/balloonctl"

  public static let intervalRange = 0.1...60.0
  public static let marginRange = 0.0...0.5

  /// The keys, with what each takes (also the error text for a bad value).
  public static let keys: [(String, String)] = [
    ("BALLOONCTL_MODE", "enforce or report"),
    ("BALLOONCTL_INTERVAL", "seconds between ticks, 0.1 to 60"),
    ("BALLOONCTL_MARGIN", "re-admit margin, 0 to 0.5"),
    ("BALLOONCTL_FRACTION", "limit fraction, above 0 and at most 1"),
    ("BALLOONCTL_PROBE_TARGET", "yes or no"),
    ("BALLOONCTL_VMW_SHRINKER", "yes or no"),
    ("BALLOONCTL_LEVERS", "comma-separated virtio, vmware, xen (or none)"),
    ("BALLOONCTL_LOG_LEVEL", "trace, debug, info, notice, warning, error or critical"),
    ("BALLOONCTL_ON_EXIT", "hold or readmit"),
    ("BALLOONCTL_METRICS_FILE", "an absolute path for the Prometheus textfile"),
  ]

  public static func load(_ path: FilePath) throws(SourceError) -> RunSettings {
    try parse(SystemFile.readRequired(path), path: path.string)
  }

  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> RunSettings {
    if bytes.contains(0) { throw .malformed(path, "NUL byte in text") }
    var settings = RunSettings()
    var number = 0
    let text = String(decoding: bytes, as: UTF8.self)
    for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
      number += 1
      let line = rawLine.trimmingSpaces
      if line.isEmpty || line.hasPrefix("#") { continue }
      guard let equals = line.firstIndex(of: "=") else {
        throw .malformed(path, line: number, "expected KEY=VALUE, got \"\(line)\"")
      }
      let key = String(line[..<equals]).trimmingSpaces
      var value = String(line[line.index(after: equals)...]).trimmingSpaces
      if value.count >= 2, let first = value.first, first == "\"" || first == "'",
        value.last == first
      {
        value = String(value.dropFirst().dropLast())
      }
      guard let expected = keys.first(where: { $0.0 == key })?.1 else {
        let known = keys.map(\.0).joined(separator: ", ")
        throw .malformed(path, line: number, "unknown setting \(key) (known: \(known))")
      }
      let bad = SourceError.malformed(
        path, line: number, "\(key)=\"\(value)\": expected \(expected)")
      switch key {
      case "BALLOONCTL_MODE":
        guard let mode = ControlMode(rawValue: value) else { throw bad }
        settings.mode = mode
      case "BALLOONCTL_INTERVAL":
        guard let seconds = Double(value), intervalRange.contains(seconds) else { throw bad }
        settings.intervalSeconds = seconds
      case "BALLOONCTL_MARGIN":
        guard let margin = Double(value), marginRange.contains(margin) else { throw bad }
        settings.margin = margin
      case "BALLOONCTL_FRACTION":
        guard let fraction = Double(value), BalloonLimit.isValid(fraction: fraction) else {
          throw bad
        }
        settings.fraction = fraction
      case "BALLOONCTL_PROBE_TARGET":
        guard let flag = yesNo(value) else { throw bad }
        settings.probeTarget = flag
      case "BALLOONCTL_VMW_SHRINKER":
        guard let flag = yesNo(value) else { throw bad }
        settings.vmwShrinker = flag
      case "BALLOONCTL_LEVERS":
        guard let levers = parseLevers(value) else { throw bad }
        settings.levers = levers
      case "BALLOONCTL_LOG_LEVEL":
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        guard levels.contains(value) else { throw bad }
        settings.logLevel = value
      case "BALLOONCTL_ON_EXIT":
        guard let policy = ExitPolicy(rawValue: value) else { throw bad }
        settings.onExit = policy
      case "BALLOONCTL_METRICS_FILE":
        guard value.hasPrefix("/"), !value.hasSuffix("/") else { throw bad }
        settings.metricsFile = value
      default:
        throw bad
      }
    }
    return settings
  }

  static func yesNo(_ value: String) -> Bool? {
    switch value.lowercased() {
    case "yes", "true", "1", "on": true
    case "no", "false", "0", "off": false
    default: nil
    }
  }

  /// `virtio,vmware,xen`, or `none`. Hyper-V has no lever to enable.
  public static func parseLevers(_ value: String) -> Set<BalloonKind>? {
    if value == "none" { return [] }
    var levers = Set<BalloonKind>()
    for part in value.split(separator: ",") {
      guard let kind = BalloonKind(rawValue: String(part).trimmingSpaces), kind != .hyperv else {
        return nil
      }
      levers.insert(kind)
    }
    return levers.isEmpty ? nil : levers
  }
}

/// What happens to a held balloon when the daemon stops.
public enum ExitPolicy: String, Sendable, CaseIterable {
  /// Leave it released: the guest stays safe, the state file stays, and the
  /// next `balloonctl run` resumes the hold (and re-admits when safe).
  case hold
  /// Give every held balloon back before exiting (for stopping for good).
  case readmit
}

extension StringProtocol {
  var trimmingSpaces: String {
    var text = Substring(self)
    while let first = text.first, first == " " || first == "\t" || first == "\r" {
      text = text.dropFirst()
    }
    while let last = text.last, last == " " || last == "\t" || last == "\r" {
      text = text.dropLast()
    }
    return String(text)
  }
}
