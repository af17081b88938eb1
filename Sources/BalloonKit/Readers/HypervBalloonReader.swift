import SystemPackage

/// hv_balloon's debugfs `hv-balloon` (≥ 6.0), the fields balloonctl needs.
/// Counts are Hyper-V pages of `pageSize` bytes.
public struct HypervBalloonStats: Sendable, Equatable {
  /// `pages_ballooned`: pages given back to the host.
  public var pagesBallooned: UInt64
  /// `page_size` (HV_HYP_PAGE_SIZE); 4096 when the line is absent.
  public var pageSize: UInt64
  /// `total_pages_committed` (or the original patch's `total_pages_commited`).
  public var totalPagesCommitted: UInt64?
  /// `max_dynamic_page_count`.
  public var maxDynamicPageCount: UInt64?

  public init(
    pagesBallooned: UInt64, pageSize: UInt64 = 4096, totalPagesCommitted: UInt64? = nil,
    maxDynamicPageCount: UInt64? = nil
  ) {
    self.pagesBallooned = pagesBallooned
    self.pageSize = pageSize
    self.totalPagesCommitted = totalPagesCommitted
    self.maxDynamicPageCount = maxDynamicPageCount
  }

  /// The balloon's size in bytes. `parse` guarantees the product fits; a
  /// value built by hand that does not saturates at `UInt64.max`.
  public var balloonedBytes: UInt64 {
    let (product, overflow) = pagesBallooned.multipliedReportingOverflow(by: pageSize)
    return overflow ? .max : product
  }
}

/// Source: drivers/hv/hv_balloon.c `hv_balloon_debug_show()`: every line is
/// `"%-22s: …"` (docs/kernel-interfaces.md §4). No target is exposed.
public enum HypervBalloonReader {
  public static let path = "/sys/kernel/debug/hv-balloon"

  /// The file under `root`, or nil when it does not exist.
  public static func read(root: Root) throws(SourceError) -> HypervBalloonStats? {
    let file = root.path(path)
    guard let bytes = try SystemFile.read(file) else { return nil }
    return try parse(bytes, path: file.string)
  }

  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError)
    -> HypervBalloonStats
  {
    if bytes.isEmpty { throw .malformed(path, "empty") }
    return try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      var ballooned: (value: UInt64, line: Int)?
      var pageSize: UInt64 = 4096
      var committed: UInt64?
      var maxDynamic: UInt64?
      // The line each parsed key was first seen on, for the duplicate check.
      var firstLines: [String: Int] = [:]
      try DebugfsStats.forEachField(buffer, path: path) {
        number, key, value, _ throws(SourceError) in
        func decimal(_ name: String) throws(SourceError) -> UInt64 {
          // Both spellings of "committed" are one field: the second of them
          // is a duplicate too.
          let slot = name == "total_pages_commited" ? "total_pages_committed" : name
          if let first = firstLines[slot] {
            throw .malformed(
              path, line: number, "\"\(name)\" appears again (first on line \(first))")
          }
          firstLines[slot] = number
          return try KernelField.decimal(buffer, value, key: name, path: path, line: number)
        }
        if KernelText.equals(buffer, key, "pages_ballooned") {
          ballooned = (try decimal("pages_ballooned"), number)
        } else if KernelText.equals(buffer, key, "page_size") {
          pageSize = try decimal("page_size")
          if pageSize == 0 { throw .malformed(path, line: number, "\"page_size\" is 0") }
        } else if KernelText.equals(buffer, key, "total_pages_committed") {
          committed = try decimal("total_pages_committed")
        } else if KernelText.equals(buffer, key, "total_pages_commited") {
          committed = try decimal("total_pages_commited")
        } else if KernelText.equals(buffer, key, "max_dynamic_page_count") {
          maxDynamic = try decimal("max_dynamic_page_count")
        }
      }
      guard let ballooned else { throw SourceError(path: path, .missingField("pages_ballooned")) }
      _ = try KernelField.bytes(
        ballooned.value, unit: pageSize, key: "pages_ballooned", path: path, line: ballooned.line)
      return HypervBalloonStats(
        pagesBallooned: ballooned.value, pageSize: pageSize, totalPagesCommitted: committed,
        maxDynamicPageCount: maxDynamic)
    }
  }
}
