public import SystemPackage

/// One `balloonctl run` at a time: an exclusive `flock` on
/// `/run/balloonctl/lock`, released by the kernel when the process dies.
/// The lock file is never opened through a symlink and must be a regular
/// file of ours (CheckedDirectory.openLockFile).
public final class InstanceLock {
  private let fd: FileDescriptor
  public let path: FilePath

  public struct Held: Error, Sendable, CustomStringConvertible {
    public var path: String
    public init(path: String) { self.path = path }
    public var description: String {
      "another balloonctl run holds \(path); only one may govern the balloon"
    }
  }

  public init(directory: FilePath) throws(SourceError) {
    let dir = try StateStore(directory: directory).openForWriting()
    path = directory.appending("lock")
    fd = try dir.openLockFile("lock")
  }

  /// Takes the lock; false when another process holds it.
  public func acquire() throws(SourceError) -> Bool {
    do {
      return try Syscall.flockExclusive(fd)
    } catch {
      throw SourceError(path: path.string, .unwritable(error))
    }
  }

  deinit { try? fd.close() }
}
