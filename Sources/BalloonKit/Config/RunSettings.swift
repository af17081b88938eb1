public import SystemPackage

/// `balloonctl run`'s settings from an environment file (`/etc/default/balloonctl`,
/// as earlyoom does): `KEY=VALUE` lines in the subset of sh described at
/// `parse` (and in udev/balloonctl.default). Every line, key and value is
/// checked; an unknown key, a key set twice, a bad value or a line sh would
/// read differently is an error naming the file and line, never a silent
/// default. Command-line flags win.
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

  /// Reads and parses the file, which must be a regular file: opening a FIFO
  /// put there would block the start for good.
  public static func load(_ path: FilePath) throws(SourceError) -> RunSettings {
    let type: FileType
    do {
      type = try path.stat().type
    } catch {
      throw SourceError(path: path.string, .unreadable(error))
    }
    guard type == .regular else {
      let kind =
        switch type {
        case .directory: "a directory"
        case .fifo: "a FIFO"
        case .socket: "a socket"
        case .characterSpecial, .blockSpecial: "a device"
        default: "a special file"
        }
      throw SourceError(path: path.string, .wrongType("is \(kind); expected a regular file"))
    }
    return try parse(SystemFile.readRequired(path), path: path.string)
  }

  /// Parses the file's bytes. Lines end at LF; one CR before it is dropped (a
  /// file saved with CRLF line ends). A UTF-8 byte order mark at the very
  /// start is skipped. The grammar is the subset of sh that sh reads as one
  /// plain assignment (the file may be sourced by sh, as earlyoom's is):
  ///
  ///     line  = blank* [ ["export" blank+] KEY "=" VALUE blank* [ "#" text ] | "#" text ]
  ///     VALUE = unquoted | "'" chars "'" | '"' chars '"'
  ///
  /// Everything else is an error naming the line, never a silent default: the
  /// file selects enforce mode, and a line lost to a parse quirk would quietly
  /// turn the guard off. The work is linear in the size of the input.
  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> RunSettings {
    var settings = RunSettings()
    var firstSet: [String: Int] = [:]
    var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
    var number = 0
    while start <= bytes.count {
      number += 1
      let end = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
      var lineEnd = end
      if lineEnd > start, bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
      let content = bytes[start..<lineEnd]
      start = end + 1
      if content.isEmpty { continue }
      let line = SettingsLine(number: number, path: path)
      if case (let key, let value)? = try line.assignment(content) {
        guard let expected = keys.first(where: { $0.0 == key })?.1 else {
          let known = keys.map(\.0).joined(separator: ", ")
          throw line.error("unknown setting \(key) (known: \(known))")
        }
        if let first = firstSet[key] {
          throw line.error("\(key) is set again (first set on line \(first))")
        }
        firstSet[key] = number
        try settings.apply(key, value, expected: expected, line: line)
      }
    }
    return settings
  }

  private mutating func apply(
    _ key: String, _ value: String, expected: String, line: SettingsLine
  ) throws(SourceError) {
    let bad = line.error("\(key)=\"\(SettingsLine.escaped(value))\": expected \(expected)")
    let number = Self.decimal(value)
    switch key {
    case "BALLOONCTL_MODE":
      guard let mode = ControlMode(rawValue: value) else { throw bad }
      self.mode = mode
    case "BALLOONCTL_INTERVAL":
      guard let number, Self.intervalRange.contains(number) else { throw bad }
      intervalSeconds = number
    case "BALLOONCTL_MARGIN":
      guard let number, Self.marginRange.contains(number) else { throw bad }
      margin = number
    case "BALLOONCTL_FRACTION":
      guard let number, BalloonLimit.isValid(fraction: number) else { throw bad }
      fraction = number
    case "BALLOONCTL_PROBE_TARGET":
      guard let flag = Self.yesNo(value) else { throw bad }
      probeTarget = flag
    case "BALLOONCTL_VMW_SHRINKER":
      guard let flag = Self.yesNo(value) else { throw bad }
      vmwShrinker = flag
    case "BALLOONCTL_LEVERS":
      guard let levers = Self.parseLevers(value) else { throw bad }
      self.levers = levers
    case "BALLOONCTL_LOG_LEVEL":
      let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
      guard levels.contains(value) else { throw bad }
      logLevel = value
    case "BALLOONCTL_ON_EXIT":
      guard let policy = ExitPolicy(rawValue: value) else { throw bad }
      onExit = policy
    case "BALLOONCTL_METRICS_FILE":
      guard value.hasPrefix("/"), !value.hasSuffix("/") else { throw bad }
      metricsFile = value
    default:
      throw bad
    }
  }

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
