public import Logging

#if canImport(Glibc)
  import Glibc
#endif

/// Log lines for the systemd journal: when stderr is the journal's stream
/// (`JOURNAL_STREAM` names stderr's device and inode, systemd.exec(5)), each
/// line starts with its sd-daemon priority `<N>` (sd-daemon(3)), so journald
/// stores it at that priority and `journalctl -p warning` finds warnings. No
/// timestamp: the journal adds its own. Metadata is logfmt (`key=value`,
/// quoted when needed).
public struct JournalLogHandler: LogHandler {
  public var logLevel: Logger.Level
  public var metadata: Logger.Metadata = [:]
  private let label: String

  public init(label: String, level: Logger.Level) {
    self.label = label
    self.logLevel = level
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  /// Whether stderr is connected to the journal, per `JOURNAL_STREAM`.
  public static func stderrIsJournal() -> Bool {
    guard let value = getenv("JOURNAL_STREAM") else { return false }
    return matches(String(cString: value), fd: 2)
  }

  /// `JOURNAL_STREAM` is "<st_dev>:<st_ino>" of the stream systemd connected.
  public static func matches(_ stream: String, fd: Int32) -> Bool {
    let parts = stream.split(separator: ":")
    guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else {
      return false
    }
    var info = stat()
    guard fstat(fd, &info) == 0 else { return false }
    return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
  }

  /// sd-daemon's priorities (syslog's): trace and debug 7, info 6, notice 5,
  /// warning 4, error 3, critical 2.
  public static func priority(_ level: Logger.Level) -> Int {
    switch level {
    case .trace, .debug: 7
    case .info: 6
    case .notice: 5
    case .warning: 4
    case .error: 3
    case .critical: 2
    }
  }

  public func log(event: LogEvent) {
    let line = Self.line(
      level: event.level, message: "\(event.message)",
      metadata: metadata.merging(event.metadata ?? [:]) { $1 })
    line.utf8CString.withUnsafeBufferPointer { buffer in
      // One write per line (≤ PIPE_BUF for the usual line), so lines from one
      // process never interleave in the stream.
      var offset = 0
      let count = buffer.count - 1
      while offset < count {
        let written = write(2, buffer.baseAddress! + offset, count - offset)
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return }
        offset += written
      }
    }
  }

  /// `<N>message key=value key="value with blanks"` and a newline.
  public static func line(level: Logger.Level, message: String, metadata: Logger.Metadata)
    -> String
  {
    var out = "<\(priority(level))>\(oneLine(message))"
    for key in metadata.keys.sorted() {
      out += " \(key)=\(logfmt("\(metadata[key]!)"))"
    }
    return out + "\n"
  }

  /// A logfmt value: bare when it has no blank, quote, `=` or control
  /// character; otherwise quoted, with `"` and `\` escaped and control
  /// characters written as Go's logfmt encoder writes them (`\n`, `\r`,
  /// `\t`, else `\u00XX`), so logfmt parsers read the value back.
  static func logfmt(_ value: String) -> String {
    let plain =
      !value.isEmpty
      && value.unicodeScalars.allSatisfy {
        $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" && $0.value != 0x7f
      }
    if plain { return value }
    var out = "\""
    for scalar in value.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\t": out += "\\t"
      case "\r": out += "\\r"
      default:
        if scalar.value < 0x20 || scalar.value == 0x7f {
          let hex = String(scalar.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }

  /// A message never spans lines: the journal would store the rest at info.
  static func oneLine(_ text: String) -> String {
    guard text.contains(where: \.isNewline) else { return text }
    return String(text.map { $0.isNewline ? " " : $0 })
  }
}
