public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Reads kernel files the way procfs and sysfs want to be read: no `stat` (they
/// report sizes of 0 or 4096), one `pread` loop from offset 0, a hard size cap.
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
  public static func list(_ path: FilePath) throws(SourceError) -> [String]? {
    guard let dir = path.withPlatformString({ opendir($0) }) else {
      let error = Errno(rawValue: errno)
      if error == .noSuchFileOrDirectory || error == .notDirectory { return nil }
      throw SourceError(path: path.string, .unreadable(error))
    }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafePointer(to: entry.pointee.d_name) {
        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names
  }

  /// Opens `path` read-only; nil when it does not exist (ENOENT, ENOTDIR).
  static func openForReading(_ path: FilePath) throws(SourceError) -> FileDescriptor? {
    do {
      return try FileDescriptor.open(path, .readOnly, options: .closeOnExec, retryOnInterrupt: true)
    } catch let error as Errno {
      if error == .noSuchFileOrDirectory || error == .notDirectory { return nil }
      throw SourceError(path: path.string, .unreadable(error))
    } catch {
      throw SourceError(path: path.string, .malformed(line: nil, "\(error)"))
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

  public init(_ path: FilePath, capacity: Int = 16384) {
    self.path = path
    self.buffer = [UInt8](repeating: 0, count: capacity)
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
      total += count
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
