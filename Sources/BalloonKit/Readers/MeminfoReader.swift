import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// `/proc/meminfo`, the fields balloonctl needs. Values in bytes; nil means
/// this kernel prints no such line (e.g. `Balloon:` before 6.15, `Hugetlb:`
/// before 4.16). Source: fs/proc/meminfo.c, mm/hugetlb.c.
public struct Meminfo: Sendable, Equatable {
  public var memTotal: UInt64
  public var memFree: UInt64?
  public var memAvailable: UInt64?  // ≥ 3.14
  public var unevictable: UInt64?
  public var mlocked: UInt64?
  public var swapTotal: UInt64
  public var swapFree: UInt64?
  public var anonPages: UInt64?
  public var shmem: UInt64?
  public var sUnreclaim: UInt64?
  public var kernelStack: UInt64?
  public var pageTables: UInt64?
  public var secPageTables: UInt64?  // ≥ 6.0
  public var percpu: UInt64?  // ≥ 4.16
  public var balloon: UInt64?  // "Balloon:", ≥ 6.15
  /// `HugePages_Total`: a count of default-size huge pages, not bytes.
  public var hugePagesTotal: UInt64?
  public var hugepagesize: UInt64?
  public var hugetlb: UInt64?  // all sizes, ≥ 4.16

  public init(memTotal: UInt64, swapTotal: UInt64) {
    self.memTotal = memTotal
    self.swapTotal = swapTotal
  }
}

public enum MeminfoReader {
  public static let path = "/proc/meminfo"

  public static func read(from root: Root) throws(SourceError) -> Meminfo {
    let file = root.path(path)
    let bytes = try SystemFile.readRequired(file)
    return try parse(bytes, path: file.string)
  }

  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> Meminfo {
    try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      try parse(buffer, path: path)
    }
  }

  /// Each line is `Key:` then spaces, a decimal and ` kB` (or no unit for the
  /// `HugePages_*` counts). Unknown keys are skipped unparsed so a newer
  /// kernel's lines never break us; a known key with a bad value, a known key
  /// twice, a missing `required` key or a last line without its newline (a
  /// file cut off) is an error: each would otherwise count as 0 or as the
  /// wrong value, and a smaller pinned total raises the limit.
  public static func parse(_ bytes: UnsafeBufferPointer<UInt8>, path: String) throws(SourceError)
    -> Meminfo
  {
    // The daemon parses the kernel's own layout every tick: one pass, no
    // allocation. Anything else is read by the strict parser below, which
    // also names what is wrong.
    if let info = parseKernelLayout(bytes) { return info }
    return try parseStrictly(bytes, path: path)
  }

  /// The checks of `parseStrictly` on the layout the kernel prints (every
  /// line `Key:`, spaces, digits, ` kB`), in one pass without allocating:
  /// nil as soon as anything differs (a NUL, a line without a colon, a bad
  /// or repeated value of a known key, a missing required key, no final
  /// newline). A non-nil answer equals `parseStrictly`'s (MeminfoReaderTests
  /// compares them on every fixture and on altered copies).
  static func parseKernelLayout(_ bytes: UnsafeBufferPointer<UInt8>) -> Meminfo? {
    let count = bytes.count
    guard count > 0, let base = bytes.baseAddress, base[count - 1] == 0x0a,
      memchr(base, 0, count) == nil
    else { return nil }
    return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: Field.allCases.count) {
      values -> Meminfo? in
      var seen: UInt32 = 0
      var start = 0
      while start < count {
        // There is a newline: the last byte is one.
        guard let newline = memchr(base + start, 0x0a, count - start) else { return nil }
        let end = base.distance(to: newline.assumingMemoryBound(to: UInt8.self))
        guard let found = memchr(base + start, 0x3a, end - start) else {
          for index in start..<end where base[index] != 0x20 && base[index] != 0x09 {
            return nil
          }
          start = end + 1
          continue
        }
        let colon = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
        if let field = Field.known(base + start, count: colon - start) {
          let bit: UInt32 = 1 << UInt32(field.rawValue)
          guard seen & bit == 0,
            let value = kernelValue(bytes, colon + 1..<end, kilobytes: field.hasUnit)
          else { return nil }
          seen |= bit
          values[field.rawValue] = value
        }
        start = end + 1
      }
      guard seen & Field.requiredMask == Field.requiredMask else { return nil }
      func value(_ field: Field) -> UInt64? {
        seen & (1 << UInt32(field.rawValue)) != 0 ? values[field.rawValue] : nil
      }
      var info = Meminfo(
        memTotal: values[Field.memTotal.rawValue], swapTotal: values[Field.swapTotal.rawValue])
      info.memFree = value(.memFree)
      info.memAvailable = value(.memAvailable)
      info.unevictable = value(.unevictable)
      info.mlocked = value(.mlocked)
      info.swapFree = value(.swapFree)
      info.anonPages = value(.anonPages)
      info.shmem = value(.shmem)
      info.sUnreclaim = value(.sUnreclaim)
      info.kernelStack = value(.kernelStack)
      info.pageTables = value(.pageTables)
      info.secPageTables = value(.secPageTables)
      info.percpu = value(.percpu)
      info.balloon = value(.balloon)
      info.hugePagesTotal = value(.hugePagesTotal)
      info.hugepagesize = value(.hugepagesize)
      info.hugetlb = value(.hugetlb)
      return info
    }
  }

  /// A value as `parseStrictly` accepts it (trimmed; digits, then ` kB` for
  /// sizes), or nil.
  @inline(__always)
  private static func kernelValue(
    _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, kilobytes: Bool
  ) -> UInt64? {
    var value = KernelText.trimmed(bytes, range)
    if kilobytes {
      guard value.count > 3, bytes[value.upperBound - 3] == 0x20,
        bytes[value.upperBound - 2] == 0x6b, bytes[value.upperBound - 1] == 0x42
      else { return nil }
      value = KernelText.trimmed(bytes, value.lowerBound..<(value.upperBound - 3))
    }
    guard case .value(let number) = KernelText.decimal(bytes, value) else { return nil }
    return kilobytes ? number.times(1024) : number
  }

  /// The strict reader: every problem is an error naming the file and line.
  static func parseStrictly(_ bytes: UnsafeBufferPointer<UInt8>, path: String) throws(SourceError)
    -> Meminfo
  {
    var values = [UInt64?](repeating: nil, count: Field.allCases.count)
    try KernelText.forEachLine(bytes, path: path) { number, line throws(SourceError) in
      guard let colon = KernelText.firstIndex(of: 0x3a, in: bytes, line) else {
        if KernelText.trimmed(bytes, line).isEmpty { return }
        throw .malformed(path, line: number, "no \":\" in \(KernelText.quoted(bytes, line))")
      }
      let key = line.lowerBound..<colon
      guard let field = Field.match(bytes, key) else { return }
      if values[field.rawValue] != nil {
        // Only on this error path: find where the key first appeared.
        let first = KernelText.firstLine(bytes) { other in
          guard let end = KernelText.firstIndex(of: 0x3a, in: bytes, other) else { return false }
          return KernelText.equals(bytes, other.lowerBound..<end, field.key)
        }
        throw .malformed(
          path, line: number, "\"\(field.name)\" appears again (first on line \(first ?? 0))")
      }
      let value = KernelText.trimmed(bytes, (colon + 1)..<line.upperBound)
      values[field.rawValue] =
        field.hasUnit
        ? try KernelField.kilobytes(bytes, value, key: field.name, path: path, line: number)
        : try KernelField.decimal(bytes, value, key: field.name, path: path, line: number)
    }
    for field in Field.required where values[field.rawValue] == nil {
      throw SourceError(path: path, .missingField(field.name))
    }
    try KernelText.requireFinalNewline(bytes, path: path)
    guard let memTotal = values[Field.memTotal.rawValue],
      let swapTotal = values[Field.swapTotal.rawValue]
    else { throw SourceError(path: path, .missingField("MemTotal")) }  // checked above
    var info = Meminfo(memTotal: memTotal, swapTotal: swapTotal)
    info.memFree = values[Field.memFree.rawValue]
    info.memAvailable = values[Field.memAvailable.rawValue]
    info.unevictable = values[Field.unevictable.rawValue]
    info.mlocked = values[Field.mlocked.rawValue]
    info.swapFree = values[Field.swapFree.rawValue]
    info.anonPages = values[Field.anonPages.rawValue]
    info.shmem = values[Field.shmem.rawValue]
    info.sUnreclaim = values[Field.sUnreclaim.rawValue]
    info.kernelStack = values[Field.kernelStack.rawValue]
    info.pageTables = values[Field.pageTables.rawValue]
    info.secPageTables = values[Field.secPageTables.rawValue]
    info.percpu = values[Field.percpu.rawValue]
    info.balloon = values[Field.balloon.rawValue]
    info.hugePagesTotal = values[Field.hugePagesTotal.rawValue]
    info.hugepagesize = values[Field.hugepagesize.rawValue]
    info.hugetlb = values[Field.hugetlb.rawValue]
    return info
  }

  enum Field: Int, CaseIterable {
    case memTotal, memFree, memAvailable, unevictable, mlocked, swapTotal, swapFree, anonPages
    case shmem, sUnreclaim, kernelStack, pageTables, secPageTables, percpu, balloon
    case hugePagesTotal, hugepagesize, hugetlb

    var key: StaticString {
      switch self {
      case .memTotal: "MemTotal"
      case .memFree: "MemFree"
      case .memAvailable: "MemAvailable"
      case .unevictable: "Unevictable"
      case .mlocked: "Mlocked"
      case .swapTotal: "SwapTotal"
      case .swapFree: "SwapFree"
      case .anonPages: "AnonPages"
      case .shmem: "Shmem"
      case .sUnreclaim: "SUnreclaim"
      case .kernelStack: "KernelStack"
      case .pageTables: "PageTables"
      case .secPageTables: "SecPageTables"
      case .percpu: "Percpu"
      case .balloon: "Balloon"
      case .hugePagesTotal: "HugePages_Total"
      case .hugepagesize: "Hugepagesize"
      case .hugetlb: "Hugetlb"
      }
    }

    var name: String { key.description }
    var hasUnit: Bool { self != .hugePagesTotal }

    /// The keys the limit's formula needs that every kernel since 2.6.32
    /// prints (fs/proc/meminfo.c), in the kernel's order, so a file cut off
    /// names the first key lost. `SecPageTables` (≥ 6.0), `Percpu` and
    /// `Hugetlb` (≥ 4.16), `HugePages_*` (CONFIG_HUGETLB_PAGE) and `Balloon`
    /// (≥ 6.15) may be absent.
    static let required: [Field] = [
      .memTotal, .unevictable, .mlocked, .swapTotal, .anonPages, .shmem, .sUnreclaim,
      .kernelStack, .pageTables,
    ]

    /// `required` as bits of `rawValue`, a constant (no lazy global on the
    /// tick's path); MeminfoReaderTests checks it against `required`.
    static var requiredMask: UInt32 {
      let fields: (Field, Field, Field, Field, Field, Field, Field, Field, Field) = (
        .memTotal, .unevictable, .mlocked, .swapTotal, .anonPages, .shmem, .sUnreclaim,
        .kernelStack, .pageTables
      )
      return 1 << UInt32(fields.0.rawValue) | 1 << UInt32(fields.1.rawValue)
        | 1 << UInt32(fields.2.rawValue) | 1 << UInt32(fields.3.rawValue)
        | 1 << UInt32(fields.4.rawValue) | 1 << UInt32(fields.5.rawValue)
        | 1 << UInt32(fields.6.rawValue) | 1 << UInt32(fields.7.rawValue)
        | 1 << UInt32(fields.8.rawValue)
    }

    /// The field named by the `count` bytes at `key`, compared only with
    /// the keys of that length (no table, no allocation: the tick's path).
    @inline(__always)
    static func known(_ key: UnsafePointer<UInt8>, count: Int) -> Field? {
      func named(_ literal: StaticString) -> Bool { memcmp(key, literal.utf8Start, count) == 0 }
      switch count {
      case 5: return named("Shmem") ? .shmem : nil
      case 6: return named("Percpu") ? .percpu : nil
      case 7:
        return named("MemFree")
          ? .memFree
          : named("Mlocked")
            ? .mlocked : named("Balloon") ? .balloon : named("Hugetlb") ? .hugetlb : nil
      case 8: return named("MemTotal") ? .memTotal : named("SwapFree") ? .swapFree : nil
      case 9: return named("SwapTotal") ? .swapTotal : named("AnonPages") ? .anonPages : nil
      case 10: return named("SUnreclaim") ? .sUnreclaim : named("PageTables") ? .pageTables : nil
      case 11:
        return named("Unevictable") ? .unevictable : named("KernelStack") ? .kernelStack : nil
      case 12:
        return named("MemAvailable") ? .memAvailable : named("Hugepagesize") ? .hugepagesize : nil
      case 13: return named("SecPageTables") ? .secPageTables : nil
      case 15: return named("HugePages_Total") ? .hugePagesTotal : nil
      default: return nil
      }
    }

    /// The fields by key length: a line is compared only with keys as long as
    /// its own (most meminfo lines match none).
    static let byLength: [[Field]] = {
      var table = [[Field]](repeating: [], count: 32)
      for field in allCases { table[field.key.utf8CodeUnitCount].append(field) }
      return table
    }()

    static func match(_ bytes: UnsafeBufferPointer<UInt8>, _ key: Range<Int>) -> Field? {
      guard key.count < byLength.count else { return nil }
      for field in byLength[key.count] where KernelText.equals(bytes, key, field.key) {
        return field
      }
      return nil
    }
  }
}
