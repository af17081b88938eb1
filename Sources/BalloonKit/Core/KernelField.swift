/// One `key: value` field of a kernel text file, parsed strictly: every error
/// names the file, the line and the key. Shared by every reader. `key` is an
/// autoclosure: the hot readers (meminfo every tick) build no key text unless
/// there is an error to report.
enum KernelField {
  /// `value` as a strict decimal, or an error naming the file, line and key.
  static func decimal(
    _ bytes: UnsafeBufferPointer<UInt8>, _ value: Range<Int>, key: @autoclosure () -> String,
    path: String,
    line: Int
  ) throws(SourceError) -> UInt64 {
    switch KernelText.decimal(bytes, value) {
    case .value(let number): return number
    case .overflow: throw .malformed(path, line: line, "\"\(key())\" value overflows 64 bits")
    case .notANumber:
      throw .malformed(
        path, line: line, "\"\(key())\" value \(KernelText.quoted(bytes, value)) is not a number")
    }
  }

  /// `count × unit`, or an overflow error naming the file, line and key.
  static func bytes(
    _ count: UInt64, unit: UInt64, key: @autoclosure () -> String, path: String, line: Int?
  )
    throws(SourceError) -> UInt64
  {
    guard let size = count.times(unit) else {
      throw .malformed(path, line: line, "\"\(key())\" value \(count) × \(unit) overflows 64 bits")
    }
    return size
  }

  /// `"12345 kB"` (meminfo, /proc/<pid>/status) as bytes.
  static func kilobytes(
    _ bytes: UnsafeBufferPointer<UInt8>, _ value: Range<Int>, key: @autoclosure () -> String,
    path: String, line: Int
  ) throws(SourceError) -> UInt64 {
    guard value.count > 3,
      KernelText.equals(bytes, (value.upperBound - 3)..<value.upperBound, " kB")
    else {
      throw .malformed(
        path, line: line,
        "\"\(key())\" value \(KernelText.quoted(bytes, value)) does not end in \" kB\"")
    }
    let digits = KernelText.trimmed(bytes, value.lowerBound..<(value.upperBound - 3))
    let count = try decimal(bytes, digits, key: key(), path: path, line: line)
    return try Self.bytes(count, unit: 1024, key: key(), path: path, line: line)
  }
}
