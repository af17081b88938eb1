#if canImport(Glibc)
  import Glibc
#endif

/// Byte-level helpers for the text files the kernel writes. They work on a
/// buffer and index ranges so the hot readers (meminfo, vmstat) allocate no
/// strings per line.
public enum KernelText {
  /// The outcome of reading an unsigned decimal.
  public enum Number: Equatable, Sendable {
    case value(UInt64)
    case notANumber
    case overflow
  }

  /// Strict unsigned decimal: one or more ASCII digits and nothing else.
  @inlinable
  public static func decimal(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Number {
    guard !range.isEmpty else { return .notANumber }
    var value: UInt64 = 0
    for index in range {
      let digit = bytes[index] &- 0x30
      guard digit < 10 else { return .notANumber }
      let (times10, o1) = value.multipliedReportingOverflow(by: 10)
      let (sum, o2) = times10.addingReportingOverflow(UInt64(digit))
      if o1 || o2 { return .overflow }
      value = sum
    }
    return .value(value)
  }

  /// Strict hexadecimal with a `0x` prefix (sysfs `device`, `status`, `vendor`),
  /// or a bare `0`: printf's `%#x` prints zero without the prefix.
  public static func hexadecimal(_ text: String) -> UInt64? {
    if text == "0" { return 0 }
    var body = Substring(text)
    guard body.hasPrefix("0x") || body.hasPrefix("0X") else { return nil }
    body = body.dropFirst(2)
    // Hex digits only: UInt64(_:radix:) also takes a sign ("0x-00", "0x+1f").
    guard !body.isEmpty, body.count <= 16,
      body.utf8.allSatisfy({
        ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66)
      })
    else { return nil }
    return UInt64(body, radix: 16)
  }

  /// Range of `range` without leading and trailing spaces and tabs.
  @inlinable
  public static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int>
  {
    var lower = range.lowerBound
    var upper = range.upperBound
    while lower < upper, bytes[lower] == 0x20 || bytes[lower] == 0x09 { lower += 1 }
    while upper > lower, bytes[upper - 1] == 0x20 || bytes[upper - 1] == 0x09 { upper -= 1 }
    return lower..<upper
  }

  /// Whether `bytes[range]` equals the ASCII `literal`.
  @inlinable
  public static func equals(
    _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ literal: StaticString
  ) -> Bool {
    guard range.count == literal.utf8CodeUnitCount else { return false }
    let start = literal.utf8Start
    for offset in 0..<range.count where bytes[range.lowerBound + offset] != start[offset] {
      return false
    }
    return true
  }

  public static func string(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
    String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
  }

  /// A short, printable rendering of untrusted bytes for error messages.
  public static func quoted(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
    var text = ""
    for byte in bytes[range].prefix(40) {
      switch byte {
      case 0: text += "\\0"
      case 0x20..<0x7f where byte != 0x22 && byte != 0x5c: text.unicodeScalars.append(.init(byte))
      default: text += "\\x" + String(byte, radix: 16)
      }
    }
    if range.count > 40 { text += "…" }
    return "\"" + text + "\""
  }

  /// Calls `body(lineNumber, range)` for each line (without its `\n`). A file
  /// that holds a NUL byte is not kernel text: that throws, naming the line.
  /// An empty last line (after the final `\n`) is not visited. Scans with
  /// memchr: one pass for NUL, then a jump per line.
  public static func forEachLine(
    _ bytes: UnsafeBufferPointer<UInt8>, path: String,
    _ body: (Int, Range<Int>) throws(SourceError) -> Void
  ) throws(SourceError) {
    let count = bytes.count
    guard count > 0, let base = bytes.baseAddress else { return }
    if let nul = memchr(base, 0, count) {
      let offset = base.distance(to: nul.assumingMemoryBound(to: UInt8.self))
      throw .malformed(path, line: lineNumber(bytes, at: offset), "NUL byte in text")
    }
    var start = 0
    var number = 1
    while start < count {
      let end: Int
      if let newline = memchr(base + start, 0x0a, count - start) {
        end = base.distance(to: newline.assumingMemoryBound(to: UInt8.self))
      } else {
        end = count
      }
      try body(number, start..<end)
      number += 1
      start = end + 1
    }
  }

  /// The 1-based number of the first line (without its `\n`) for which
  /// `matches` is true, or nil. For error messages only (a duplicate key's
  /// first line): the hot readers do not track line numbers.
  public static func firstLine(
    _ bytes: UnsafeBufferPointer<UInt8>, where matches: (Range<Int>) -> Bool
  ) -> Int? {
    var start = 0
    var number = 1
    while start < bytes.count {
      let next = nextLine(bytes, after: start)
      let end = next > start && bytes[next - 1] == 0x0a ? next - 1 : next
      if matches(start..<end) { return number }
      number += 1
      start = next
    }
    return nil
  }

  /// Every text file the kernel writes with several lines (seq_file output:
  /// meminfo, vmstat, status, the debugfs stats) ends in `\n`. A last line
  /// without one was cut off, possibly inside a number that still parses
  /// (`HugePages_Total: 5` of `512`), so it is an error, naming that line.
  public static func requireFinalNewline(_ bytes: UnsafeBufferPointer<UInt8>, path: String)
    throws(SourceError)
  {
    guard let last = bytes.last, last != 0x0a else { return }
    var start = bytes.count
    while start > 0, bytes[start - 1] != 0x0a { start -= 1 }
    throw .malformed(
      path, line: lineNumber(bytes, at: start),
      "last line \(quoted(bytes, start..<bytes.count)) has no newline: the file is cut off")
  }

  /// The 1-based line that holds byte `offset` (for error messages only).
  public static func lineNumber(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> Int {
    var line = 1
    for index in 0..<min(offset, bytes.count) where bytes[index] == 0x0a { line += 1 }
    return line
  }

  /// The start of the line after the one holding `index`, or `bytes.count`.
  public static func nextLine(_ bytes: UnsafeBufferPointer<UInt8>, after index: Int) -> Int {
    guard index < bytes.count, let base = bytes.baseAddress,
      let newline = memchr(base + index, 0x0a, bytes.count - index)
    else { return bytes.count }
    return base.distance(to: newline.assumingMemoryBound(to: UInt8.self)) + 1
  }

  /// First index of `byte` in `range`, or nil.
  @inlinable
  public static func firstIndex(
    of byte: UInt8, in bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>
  ) -> Int? {
    var index = range.lowerBound
    while index < range.upperBound {
      if bytes[index] == byte { return index }
      index += 1
    }
    return nil
  }

  /// Parses a whole small file holding one unsigned decimal (a sysfs attribute
  /// such as `target_kb`), with an optional trailing newline.
  public static func singleDecimal(_ bytes: [UInt8], path: String) throws(SourceError) -> UInt64 {
    if bytes.contains(0) { throw .malformed(path, "NUL byte in text") }
    return try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      var end = buffer.count
      if end > 0, buffer[end - 1] == 0x0a { end -= 1 }
      let range = trimmed(buffer, 0..<end)
      switch decimal(buffer, range) {
      case .value(let value): return value
      case .overflow: throw .malformed(path, "value \(quoted(buffer, range)) overflows 64 bits")
      case .notANumber:
        if range.isEmpty { throw .malformed(path, "empty") }
        throw .malformed(path, "value \(quoted(buffer, range)) is not a number")
      }
    }
  }

  /// A whole small text attribute (sysfs), without the trailing newline. NUL
  /// bytes are malformed.
  public static func attribute(_ bytes: [UInt8], path: String) throws(SourceError) -> String {
    var trimmedBytes = bytes[...]
    if trimmedBytes.last == 0x0a { trimmedBytes = trimmedBytes.dropLast() }
    if trimmedBytes.contains(0) { throw .malformed(path, "NUL byte in text") }
    return String(decoding: trimmedBytes, as: UTF8.self)
  }
}

extension UInt64 {
  /// `self × factor`, or nil on overflow. Readers convert units with this so
  /// an absurd value is an error, not a trap.
  @inlinable
  public func times(_ factor: UInt64) -> UInt64? {
    let (product, overflow) = multipliedReportingOverflow(by: factor)
    return overflow ? nil : product
  }
}
