public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Reads kernel files the way procfs and sysfs want to be read: no size from
/// `stat` (they report 0 or 4096; `fstat` only checks the file's type), one
/// `pread` loop from offset 0, a hard size cap. Never blocks: see
/// `openForReading`.
public enum SystemFile {
  /// No procfs/sysfs/debugfs file balloonctl reads comes near this; a larger
  /// one is not the kernel's file.
  public static let sizeLimit = 1 << 20

  /// The whole file, or nil when it does not exist (ENOENT, ENOTDIR: the kernel
  /// or driver does not provide it). Any other failure throws, naming the file.
  public static func read(_ path: FilePath) throws(SourceError) -> [UInt8]? {
    // One reader of kernel files: a KeptOpenFile read once and closed.
    let file = KeptOpenFile(path, capacity: 4096)
    defer { file.close() }
    guard try file.refresh() else { return nil }
    return try file.withBytes { Array($0) }
  }

  /// Like `read`, for files that must exist: absent is an error too.
  public static func readRequired(_ path: FilePath) throws(SourceError) -> [UInt8] {
    guard let bytes = try read(path) else {
      throw SourceError(path: path.string, .unreadable(.noSuchFileOrDirectory))
    }
    return bytes
  }

  /// Whether a path exists (any type). Uses `access`, which follows links.
  public static func exists(_ path: FilePath) -> Bool {
    path.withPlatformString { access($0, F_OK) == 0 }
  }

  /// The target of a symbolic link, or nil when `path` is absent or not a link.
  public static func readLink(_ path: FilePath) -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = path.withPlatformString { readlink($0, &buffer, buffer.count - 1) }
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// The names in a directory (no `.`/`..`), or nil when it does not exist.
  /// Something else in its place (a FIFO, a regular file) is `wrongType`:
  /// reporting it as absent would hide it.
  public static func list(_ path: FilePath) throws(SourceError) -> [String]? {
    // glibc's opendir opens with O_NONBLOCK | O_DIRECTORY: a FIFO cannot block it.
    guard let dir = path.withPlatformString({ opendir($0) }) else {
      let error = Errno(rawValue: errno)
      if error == .noSuchFileOrDirectory { return nil }
      if error == .notDirectory {
        // ENOTDIR: a parent is not a directory (absent), or the path itself is not one.
        guard let kind = kind(of: path), kind != "directory" else { return nil }
        throw SourceError(path: path.string, .wrongType("is a \(kind); expected a directory"))
      }
      throw SourceError(path: path.string, .unreadable(error))
    }
    defer { closedir(dir) }
    var names: [String] = []
    while true {
      errno = 0
      guard let entry = readdir(dir) else { break }
      let name = withUnsafePointer(to: entry.pointee.d_name) {
        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
      }
      if name != "." && name != ".." { names.append(name) }
    }
    // readdir returns NULL both at the end and on an error; errno tells them apart.
    if errno != 0 { throw SourceError(path: path.string, .unreadable(Errno(rawValue: errno))) }
    return names
  }

  /// Opens `path` read-only; nil when it does not exist (ENOENT, ENOTDIR).
  /// Only a regular file is accepted: procfs, sysfs (including binary
  /// attributes such as a PCI `config`) and debugfs files are all regular
  /// files, and anything else (a FIFO, whose open would block forever, a
  /// socket, a device, a directory) is not the kernel's file. O_NONBLOCK
  /// makes the open itself return for a FIFO; fstat then rejects it.
  static func openForReading(_ path: FilePath) throws(SourceError) -> FileDescriptor? {
    switch openRegular(path, flags: O_RDONLY) {
    case .opened(let fd): return fd
    case .absent: return nil
    case .failed(let error): throw SourceError(path: path.string, .unreadable(error))
    case .wrongType(let kind):
      throw SourceError(path: path.string, .wrongType("is a \(kind); expected a regular file"))
    }
  }

  /// The outcome of `openRegular`.
  enum OpenOutcome {
    case opened(FileDescriptor)
    /// ENOENT or ENOTDIR: the file is not there.
    case absent
    case failed(Errno)
    /// Something other than a regular file is there; the payload names it
    /// ("FIFO", "socket", "character device", "block device", "directory").
    case wrongType(String)
  }

  /// Opens `path` with `flags` (O_RDONLY or O_RDWR) plus O_NONBLOCK,
  /// O_CLOEXEC and O_NOCTTY, and accepts it only if it is a regular file.
  /// Shared by every open of an input file (`SystemFile`, `KeptOpenFile`, the
  /// PCI config and I/O BAR files).
  static func openRegular(_ path: FilePath, flags: Int32) -> OpenOutcome {
    var fd: Int32
    repeat {
      fd = path.withPlatformString { open($0, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) }
    } while fd < 0 && errno == EINTR
    guard fd >= 0 else {
      let error = Errno(rawValue: errno)
      if error == .noSuchFileOrDirectory || error == .notDirectory { return .absent }
      // A socket fails with ENXIO, a device without a driver with ENXIO or
      // ENODEV: say what is there rather than only the errno.
      if error != .tooManySymbolicLinkLevels, let kind = kind(of: path), kind != "regular file" {
        return .wrongType(kind)
      }
      return .failed(error)
    }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      let error = Errno(rawValue: errno)
      _ = Glibc.close(fd)
      return .failed(error)
    }
    guard info.st_mode & S_IFMT == S_IFREG else {
      _ = Glibc.close(fd)
      return .wrongType(kindName(info.st_mode))
    }
    return .opened(FileDescriptor(rawValue: fd))
  }

  /// What `path` is (following links), e.g. "FIFO"; nil when stat fails.
  static func kind(of path: FilePath) -> String? {
    var info = stat()
    guard path.withPlatformString({ stat($0, &info) }) == 0 else { return nil }
    return kindName(info.st_mode)
  }

  static func kindName(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: "regular file"
    case S_IFDIR: "directory"
    case S_IFIFO: "FIFO"
    case S_IFSOCK: "socket"
    case S_IFCHR: "character device"
    case S_IFBLK: "block device"
    case S_IFLNK: "symbolic link"
    default: "file of unknown type"
    }
  }
}

/// A kernel file kept open and re-read from offset 0 on every tick, as earlyoom
/// does with /proc/meminfo: procfs and sysfs regenerate the content on each
/// read from offset 0, so one `pread` per tick replaces open/read/close.
/// The buffer is reused, so a steady tick allocates nothing here.
public final class KeptOpenFile {
  public let path: FilePath
  private var fd: FileDescriptor?
  private var buffer: [UInt8]
  private var length = 0
  /// A read that returns less than the buffer holds has read the whole file
  /// (no second read to see the end). True of regular files, and of procfs
  /// files the kernel writes as one record, such as /proc/meminfo
  /// (docs/kernel-interfaces.md, section 5.1); not of /proc/vmstat.
  private let shortReadIsEnd: Bool

  public init(_ path: FilePath, capacity: Int = 16384, shortReadIsEnd: Bool = false) {
    self.path = path
    self.buffer = [UInt8](repeating: 0, count: capacity)
    self.shortReadIsEnd = shortReadIsEnd
  }

  deinit { try? fd?.close() }

  /// Re-reads the file. Returns false when it does not exist (now); the next
  /// call tries to open it again, so a file that appears later is picked up.
  public func refresh() throws(SourceError) -> Bool {
    if fd == nil { fd = try SystemFile.openForReading(path) }
    guard let fd else { return false }
    var total = 0
    while true {
      if total == buffer.count {
        guard buffer.count < SystemFile.sizeLimit else {
          throw SourceError(path: path.string, .tooLarge(limit: SystemFile.sizeLimit))
        }
        buffer.append(contentsOf: repeatElement(0, count: buffer.count))
      }
      let count: Int
      do {
        count = try buffer.withUnsafeMutableBytes { raw in
          try fd.read(
            fromAbsoluteOffset: Int64(total),
            into: UnsafeMutableRawBufferPointer(rebasing: raw[total...]),
            retryOnInterrupt: true)
        }
      } catch let error as Errno {
        // ENODEV: the device behind a sysfs/debugfs file went away. Close so
        // the next tick re-opens (or finds it absent).
        try? fd.close()
        self.fd = nil
        if error == .noSuchFileOrDirectory || error == .operationNotSupportedByDevice {
          return false
        }
        throw SourceError(path: path.string, .unreadable(error))
      } catch {
        throw SourceError(path: path.string, .malformed(line: nil, "\(error)"))
      }
      if count == 0 { break }
      let asked = buffer.count - total
      total += count
      if shortReadIsEnd && count < asked { break }
    }
    length = total
    return true
  }

  /// The content read by the last successful `refresh()`.
  public func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) throws(SourceError) -> R)
    throws(SourceError) -> R
  {
    try buffer.withUnsafeBufferPointer { all throws(SourceError) in
      try body(UnsafeBufferPointer(rebasing: all[0..<length]))
    }
  }

  /// Closes the descriptor; the next `refresh()` opens the file again.
  public func close() {
    try? fd?.close()
    fd = nil
  }
}
