/// One record of the kernel log as `/dev/kmsg` gives it (one record per
/// read): `prefix,seq,usec,flags[,more];text`, then optional continuation
/// lines ` KEY=VALUE`. The format is described in docs/kernel-interfaces.md
/// ("/dev/kmsg").
public struct KmsgRecord: Sendable, Equatable {
  /// syslog level (0 emerg … 7 debug) and facility (0 = kernel).
  public var level: UInt8
  public var facility: UInt64
  public var sequence: UInt64
  /// CLOCK_MONOTONIC microseconds when the kernel logged it.
  public var microseconds: UInt64
  /// The message, with the kernel's `\xNN` escapes left as they are.
  public var text: String
  /// The continuation lines (`SUBSYSTEM=…`, `DEVICE=…`), in order.
  public var dictionary: [String]

  public init(
    level: UInt8, facility: UInt64 = 0, sequence: UInt64, microseconds: UInt64, text: String,
    dictionary: [String] = []
  ) {
    self.level = level
    self.facility = facility
    self.sequence = sequence
    self.microseconds = microseconds
    self.text = text
    self.dictionary = dictionary
  }
}

public enum KmsgReader {
  public static let path = "/dev/kmsg"

  /// Parses what one or more reads returned: `/dev/kmsg` returns one record
  /// per read, a saved log (a fixture, the fuzzer) holds many; a record
  /// begins on every line that does not begin with a space. Strict: a header
  /// that is not the kernel's format is an error naming the file.
  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> [KmsgRecord] {
    try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      try parse(buffer, path: path)
    }
  }

  public static func parse(_ bytes: UnsafeBufferPointer<UInt8>, path: String) throws(SourceError)
    -> [KmsgRecord]
  {
    var records: [KmsgRecord] = []
    var start = 0
    var lineNumber = 0
    while start < bytes.count {
      lineNumber += 1
      let next = KernelText.nextLine(bytes, after: start)
      guard next <= bytes.count, next > start, bytes[next - 1] == 0x0a else {
        throw .malformed(path, line: lineNumber, "record does not end with a newline")
      }
      let line = start..<(next - 1)
      start = next
      // The kernel escapes every byte outside printable ASCII (and the
      // backslash) as \xNN: anything else is not its output.
      if let bad = line.first(where: { bytes[$0] < 0x20 || bytes[$0] > 0x7e }) {
        throw .malformed(
          path, line: lineNumber,
          "byte 0x\(String(bytes[bad], radix: 16)) at column \(bad - line.lowerBound + 1); the kernel escapes it"
        )
      }
      if bytes[line.lowerBound] == 0x20 {
        guard !records.isEmpty else {
          throw .malformed(path, line: lineNumber, "continuation line before any record")
        }
        records[records.count - 1].dictionary.append(
          KernelText.string(bytes, (line.lowerBound + 1)..<line.upperBound))
        continue
      }
      records.append(try header(bytes, line, path: path, lineNumber: lineNumber))
    }
    return records
  }

  /// `prefix,seq,usec,flags[,…];text`. The kernel may add comma-separated
  /// fields before the `;` (the caller id of CONFIG_PRINTK_CALLER); they are skipped.
  static func header(
    _ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>, path: String, lineNumber: Int
  ) throws(SourceError) -> KmsgRecord {
    func fail(_ what: String) -> SourceError { .malformed(path, line: lineNumber, what) }
    guard let semicolon = KernelText.firstIndex(of: 0x3b, in: bytes, line) else {
      throw fail("no \";\" in record header \(KernelText.quoted(bytes, line))")
    }
    var fields: [Range<Int>] = []
    var fieldStart = line.lowerBound
    for index in line.lowerBound...semicolon where index == semicolon || bytes[index] == 0x2c {
      fields.append(fieldStart..<index)
      fieldStart = index + 1
    }
    guard fields.count >= 4 else {
      throw fail(
        "record header \(KernelText.quoted(bytes, line.lowerBound..<semicolon)) has \(fields.count) fields; expected prefix,seq,usec,flags"
      )
    }
    func number(_ index: Int, _ name: String) throws(SourceError) -> UInt64 {
      guard !fields[index].isEmpty,
        case .value(let value) = KernelText.decimal(bytes, fields[index])
      else {
        throw fail("\(name) \(KernelText.quoted(bytes, fields[index])) is not a number")
      }
      return value
    }
    let prefix = try number(0, "prefix")
    let sequence = try number(1, "sequence")
    let microseconds = try number(2, "timestamp")
    // Flags: "-" (a whole record) or "c" (a continuation of an older kernel's
    // printk); nothing else is written.
    let flags = KernelText.string(bytes, fields[3])
    guard flags == "-" || flags == "c" || flags == "+" else {
      throw fail("flags \"\(flags)\" are not -, c or +")
    }
    guard prefix <= UInt64(UInt32.max) else { throw fail("prefix \(prefix) out of range") }
    return KmsgRecord(
      level: UInt8(prefix & 7), facility: prefix >> 3, sequence: sequence,
      microseconds: microseconds,
      text: KernelText.string(bytes, (semicolon + 1)..<line.upperBound))
  }
}
