import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// `/proc/vmstat`, the counters balloonctl needs. Page counters are converted
/// to bytes here with the kernel's page size (`Root.pageSize`); nil means this
/// kernel prints no such line. Source: mm/vmstat.c, include/linux/vm_event_item.h.
public struct Vmstat: Sendable, Equatable {
  /// `nr_balloon_pages` (gauge, ≥ 6.15), in bytes.
  public var balloonBytes: UInt64?
  /// `balloon_inflate` / `balloon_deflate` (cumulative events, CONFIG_MEMORY_BALLOON), in bytes.
  public var balloonInflatedBytes: UInt64?
  public var balloonDeflatedBytes: UInt64?
  /// `nr_foll_pin_acquired` / `nr_foll_pin_released` (≥ ~5.7): counts of
  /// pin_user_pages() references, not bytes.
  public var follPinAcquired: UInt64?
  public var follPinReleased: UInt64?
  /// `oom_kill` (cumulative, ≥ 4.13).
  public var oomKill: UInt64?

  public init() {}

  /// Whether the line for `field` was read.
  func has(_ field: VmstatReader.Field) -> Bool {
    switch field {
    case .nrBalloonPages: balloonBytes != nil
    case .balloonInflate: balloonInflatedBytes != nil
    case .balloonDeflate: balloonDeflatedBytes != nil
    case .follPinAcquired: follPinAcquired != nil
    case .follPinReleased: follPinReleased != nil
    case .oomKill: oomKill != nil
    }
  }
}

public enum VmstatReader {
  public static let path = "/proc/vmstat"

  public static func read(from root: Root) throws(SourceError) -> Vmstat {
    let file = root.path(path)
    let bytes = try SystemFile.readRequired(file)
    return try parse(bytes, path: file.string, pageSize: root.pageSize)
  }

  public static func parse(_ bytes: [UInt8], path: String, pageSize: UInt64) throws(SourceError)
    -> Vmstat
  {
    try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      try parse(buffer, path: path, pageSize: pageSize)
    }
  }

  /// Each line is `name value`. Parsed by name, never by position (the order
  /// changes between kernels); unknown names are skipped unparsed. The file is
  /// ~180 lines on 6.x and the daemon reads it every tick, so lines that
  /// cannot match (first byte not n, b or o) are skipped with one memchr, and
  /// line numbers are counted only for an error message.
  public static func parse(
    _ bytes: UnsafeBufferPointer<UInt8>, path: String, pageSize: UInt64
  ) throws(SourceError) -> Vmstat {
    var stat = Vmstat()
    let count = bytes.count
    guard let base = bytes.baseAddress, bytes.contains(where: { $0 != 0x0a }) else {
      throw .malformed(path, "empty")
    }
    if let nul = memchr(base, 0, count) {
      let offset = base.distance(to: nul.assumingMemoryBound(to: UInt8.self))
      throw .malformed(path, line: KernelText.lineNumber(bytes, at: offset), "NUL byte in text")
    }
    var start = 0
    while start < count {
      let first = bytes[start]
      // Only names starting with "n", "b" or "o" can match.
      guard first == 0x6e || first == 0x62 || first == 0x6f else {
        start = KernelText.nextLine(bytes, after: start)
        continue
      }
      let next = KernelText.nextLine(bytes, after: start)
      let line =
        start..<(next > start && next <= count && bytes[next - 1] == 0x0a ? next - 1 : next)
      start = next
      guard let space = KernelText.firstIndex(of: 0x20, in: bytes, line) else {
        throw .malformed(
          path, line: KernelText.lineNumber(bytes, at: line.lowerBound),
          "no value in \(KernelText.quoted(bytes, line))")
      }
      guard let field = Field.match(bytes, line.lowerBound..<space) else { continue }
      let value = (space + 1)..<line.upperBound
      func fail(_ what: String) -> SourceError {
        .malformed(path, line: KernelText.lineNumber(bytes, at: line.lowerBound), what)
      }
      let number: UInt64
      switch KernelText.decimal(bytes, value) {
      case .value(let parsed): number = parsed
      case .overflow: throw fail("\"\(field.name)\" value overflows 64 bits")
      case .notANumber:
        throw fail("\"\(field.name)\" value \(KernelText.quoted(bytes, value)) is not a number")
      }
      func bytesOf(_ pages: UInt64) throws(SourceError) -> UInt64 {
        guard let size = pages.times(pageSize) else {
          throw fail("\"\(field.name)\" value overflows 64 bits")
        }
        return size
      }
      if stat.has(field) {
        // Only on this error path: find where the name first appeared.
        let first = KernelText.firstLine(bytes) { other in
          guard let end = KernelText.firstIndex(of: 0x20, in: bytes, other) else { return false }
          return KernelText.equals(bytes, other.lowerBound..<end, field.key)
        }
        throw fail("\"\(field.name)\" appears again (first on line \(first ?? 0))")
      }
      switch field {
      case .nrBalloonPages: stat.balloonBytes = try bytesOf(number)
      case .balloonInflate: stat.balloonInflatedBytes = try bytesOf(number)
      case .balloonDeflate: stat.balloonDeflatedBytes = try bytesOf(number)
      case .follPinAcquired: stat.follPinAcquired = number
      case .follPinReleased: stat.follPinReleased = number
      case .oomKill: stat.oomKill = number
      }
    }
    // Each pair is printed on adjacent lines by the same kernels: one without
    // the other is a file cut off between them. Alone, nr_foll_pin_acquired
    // would hide the DMA pins (a higher limit), balloon_inflate would
    // overstate the balloon.
    func requireBoth(_ first: Field, _ second: Field) throws(SourceError) {
      guard stat.has(first) != stat.has(second) else { return }
      let (present, absent) = stat.has(first) ? (first, second) : (second, first)
      throw .malformed(path, "\"\(present.name)\" without \"\(absent.name)\"")
    }
    try requireBoth(.follPinAcquired, .follPinReleased)
    try requireBoth(.balloonInflate, .balloonDeflate)
    try KernelText.requireFinalNewline(bytes, path: path)
    return stat
  }

  enum Field: CaseIterable {
    case nrBalloonPages, balloonInflate, balloonDeflate, follPinAcquired, follPinReleased, oomKill

    var key: StaticString {
      switch self {
      case .nrBalloonPages: "nr_balloon_pages"
      case .balloonInflate: "balloon_inflate"
      case .balloonDeflate: "balloon_deflate"
      case .follPinAcquired: "nr_foll_pin_acquired"
      case .follPinReleased: "nr_foll_pin_released"
      case .oomKill: "oom_kill"
      }
    }

    var name: String { key.description }

    static func match(_ bytes: UnsafeBufferPointer<UInt8>, _ key: Range<Int>) -> Field? {
      for field in allCases where KernelText.equals(bytes, key, field.key) { return field }
      return nil
    }
  }
}
