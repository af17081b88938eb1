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
  public var events: Bool?
  public var eventsIntervalSeconds: Double?
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

  /// The ranges of the numeric settings (RunSetting.swift declares them).
  public static let intervalRange = RunSetting.intervalRange
  public static let marginRange = RunSetting.marginRange

  /// The keys, with what each takes (also the error text for a bad value).
  public static var keys: [(String, String)] { RunSetting.keys }

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
        guard let setting = RunSetting.all.first(where: { $0.key == key }) else {
          let known = RunSetting.all.map(\.key).joined(separator: ", ")
          throw line.error("unknown setting \(key) (known: \(known))")
        }
        if let first = firstSet[key] {
          throw line.error("\(key) is set again (first set on line \(first))")
        }
        firstSet[key] = number
        guard setting.apply(value, to: &settings) else {
          throw line.error(
            "\(key)=\"\(SettingsLine.escaped(value))\": expected \(setting.expectation(for: value))"
          )
        }
      }
    }
    return settings
  }

  /// `virtio,vmware,xen`, or `none`: kinds whose driver has a lever
  /// (Hyper-V has none to enable).
  public static func parseLevers(_ value: String) -> Set<BalloonKind>? {
    if value == "none" { return [] }
    var levers = Set<BalloonKind>()
    for part in value.split(separator: ",") {
      guard let kind = BalloonKind(rawValue: String(part).trimmingSpaces), kind.driver.hasLever
      else {
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
