import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Follows the kernel log from its end: `/dev/kmsg` opened read-only and
/// non-blocking, positioned after the last record (only new records), its fd
/// in the daemon's poll(). Each read returns one record; see
/// docs/kernel-interfaces.md ("/dev/kmsg") for the errors handled here.
public final class KmsgFollower {
  public let fileDescriptor: Int32
  public let path: String
  private var capacity = KmsgFollower.recordBytes
  private var buffer: [UInt8]

  /// One record fits: the kernel's record limit is 1 KiB of text, plus the
  /// header and the continuation lines.
  static let recordBytes = 8192
  /// Tried once when a read says the buffer is too small (EINVAL).
  static let largestRecordBytes = 65536
  /// A drain stops after this many reads, so a flood of log lines cannot
  /// keep the daemon from ticking; the rest is read on the next wake-up.
  static let readsPerDrain = 1024

  /// What one drain read.
  public struct Drained: Sendable {
    public var records: [KmsgRecord] = []
    /// Records were overwritten before they could be read (EPIPE), or one
    /// too large to read was skipped.
    public var lost = false
    /// A record that does not parse, or a read that failed (logged by the caller).
    public var problems: [SourceError] = []
  }

  /// nil with the reason when it cannot be opened (no /dev/kmsg, EPERM under
  /// a sandbox without CAP_SYSLOG when dmesg_restrict=1).
  public static func open(root: Root) -> Result<KmsgFollower, SourceError> {
    let path = root.path(KmsgReader.path)
    let fd = path.withPlatformString { Glibc.open($0, O_RDONLY | O_NONBLOCK | O_CLOEXEC) }
    guard fd >= 0 else {
      return .failure(SourceError(path: path.string, .unreadable(Errno(rawValue: errno))))
    }
    // From the end: the records already in the buffer are history, not news.
    if lseek(fd, 0, SEEK_END) < 0 {
      let error = Errno(rawValue: errno)
      Glibc.close(fd)
      return .failure(SourceError(path: path.string, .unreadable(error)))
    }
    return .success(KmsgFollower(fileDescriptor: fd, path: path.string))
  }

  private init(fileDescriptor: Int32, path: String) {
    self.fileDescriptor = fileDescriptor
    self.path = path
    buffer = [UInt8](repeating: 0, count: KmsgFollower.recordBytes)
  }

  deinit { Glibc.close(fileDescriptor) }

  /// Whether the bytes read hold "Killed process" or "oom-kill:" (the two
  /// records OOMRecordMatcher takes); no allocation.
  public static func mentionsOOMKill(_ bytes: [UInt8], _ count: Int) -> Bool {
    bytes.withUnsafeBufferPointer { buffer in
      let text = UnsafeBufferPointer(rebasing: buffer[0..<min(count, buffer.count)])
      return contains(text, "Killed process") || contains(text, "oom-kill:")
    }
  }

  static func contains(_ text: UnsafeBufferPointer<UInt8>, _ needle: StaticString) -> Bool {
    let length = needle.utf8CodeUnitCount
    guard text.count >= length else { return false }
    let first = needle.utf8Start[0]
    for start in 0...(text.count - length) where text[start] == first {
      if KernelText.equals(text, start..<(start + length), needle) { return true }
    }
    return false
  }

  /// Reads every record available now, without blocking.
  public func drain() -> Drained {
    var drained = Drained()
    var reads = 0
    while reads < Self.readsPerDrain {
      reads += 1
      let count = buffer.withUnsafeMutableBytes { read(fileDescriptor, $0.baseAddress, capacity) }
      if count > 0 {
        // Only records about an OOM kill are parsed: the rest of an OOM
        // report (60 records or more, each a wake-up) arrives when memory is
        // shortest, and the daemon must not spend it on strings it drops.
        guard Self.mentionsOOMKill(buffer, count) else { continue }
        do throws(SourceError) {
          drained.records += try buffer.withUnsafeBufferPointer { whole throws(SourceError) in
            try KmsgReader.parse(UnsafeBufferPointer(rebasing: whole[0..<count]), path: path)
          }
        } catch {
          drained.problems.append(error)
        }
        continue
      }
      if count == 0 { break }  // a plain file at its end (a test's stand-in)
      switch errno {
      case EAGAIN: return drained
      case EINTR: continue
      case EPIPE:
        // The ring buffer overwrote records before we read them; the next
        // read returns the oldest one still there.
        drained.lost = true
      case EINVAL where capacity < Self.largestRecordBytes:
        capacity = Self.largestRecordBytes
        buffer = [UInt8](repeating: 0, count: capacity)
      case EINVAL:
        // Still too large: skip to the end rather than read it forever.
        drained.lost = true
        if lseek(fileDescriptor, 0, SEEK_END) < 0 {
          drained.problems.append(SourceError(path: path, .unreadable(Errno(rawValue: errno))))
          return drained
        }
      default:
        drained.problems.append(SourceError(path: path, .unreadable(Errno(rawValue: errno))))
        return drained
      }
    }
    return drained
  }
}
