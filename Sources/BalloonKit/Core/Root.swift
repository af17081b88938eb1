public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The file system every reader reads from: `/` on a live system, or a captured
/// snapshot (a fixture tree, or `--root DIR`) laid out like `/`.
///
/// Like node_exporter's `--path.rootfs`: readers ask for absolute kernel paths
/// (`/proc/meminfo`) and `Root` joins them below its base. Joining always uses
/// `FilePath.appending`, which drops the argument's leading `/`.
public struct Root: Sendable, Equatable, CustomStringConvertible {
  /// The directory that plays `/`.
  public let base: FilePath
  /// True when `base` is the running system's `/`: only then do live-only
  /// sources (libudev, the PCI config window, actuators) apply.
  public let isLive: Bool
  /// The kernel's page size in bytes, the unit of `/proc/vmstat` page counters.
  /// The running kernel's on a live system; 4096 for a snapshot (a snapshot
  /// does not record it, and every balloon-capable architecture we support
  /// captures with 4 KiB pages).
  public let pageSize: UInt64

  /// The running system.
  public static var live: Root {
    let size = sysconf(Int32(_SC_PAGESIZE))
    return Root(base: "/", isLive: true, pageSize: size > 0 ? UInt64(size) : 4096)
  }

  /// A snapshot below `directory`. `"/"` means the live system.
  public static func snapshot(_ directory: FilePath, pageSize: UInt64 = 4096) -> Root {
    let normal = directory.lexicallyNormalized()
    if normal == "/" { return .live }
    return Root(base: normal, isLive: false, pageSize: pageSize)
  }

  public init(base: FilePath, isLive: Bool, pageSize: UInt64) {
    self.base = base
    self.isLive = isLive
    self.pageSize = pageSize
  }

  /// `absolute` (a kernel path such as `/proc/meminfo`) below this root.
  public func path(_ absolute: String) -> FilePath {
    isLive ? FilePath(absolute) : base.appending(FilePath(absolute).components)
  }

  public var description: String { isLive ? "/" : base.string }
}
