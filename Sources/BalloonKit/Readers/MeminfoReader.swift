import SystemPackage

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
