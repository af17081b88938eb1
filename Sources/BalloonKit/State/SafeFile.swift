import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The system calls behind the files balloonctl writes (the state file, the
/// lock, the metrics file): one thin typed wrapper per C function, its errno
/// as the error, EINTR retried, nothing more. Names are resolved relative to
/// a directory descriptor so that a path checked once cannot be swapped for a
/// symlink before it is used.
enum Syscall {
  static func openat(
    _ directory: Int32, _ path: String, _ flags: Int32, _ mode: mode_t = 0
  ) throws(Errno) -> FileDescriptor {
    while true {
      let fd = Glibc.openat(directory, path, flags, mode)
      if fd >= 0 { return FileDescriptor(rawValue: fd) }
      if errno != EINTR { throw Errno(rawValue: errno) }
    }
  }

  static func fstat(_ fd: FileDescriptor) throws(Errno) -> stat {
    var info = stat()
    guard Glibc.fstat(fd.rawValue, &info) == 0 else { throw Errno(rawValue: errno) }
    return info
  }

  /// The entry itself, a symlink not followed; nil when absent.
  static func lstatat(_ directory: Int32, _ path: String) throws(Errno) -> stat? {
    var info = stat()
    guard Glibc.fstatat(directory, path, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
      if errno == ENOENT { return nil }
      throw Errno(rawValue: errno)
    }
    return info
  }

  /// Creates a directory; false when something already has that name.
  static func mkdirat(_ directory: Int32, _ path: String, _ mode: mode_t) throws(Errno) -> Bool {
    guard Glibc.mkdirat(directory, path, mode) == 0 else {
      if errno == EEXIST { return false }
      throw Errno(rawValue: errno)
    }
    return true
  }

  static func renameat(_ directory: Int32, _ from: String, _ to: String) throws(Errno) {
    guard Glibc.renameat(directory, from, directory, to) == 0 else { throw Errno(rawValue: errno) }
  }

  static func unlinkat(_ directory: Int32, _ path: String) throws(Errno) {
    guard Glibc.unlinkat(directory, path, 0) == 0 else { throw Errno(rawValue: errno) }
  }

  /// Reads into `buffer`; 0 at the end of the file.
  static func read(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer) throws(Errno)
    -> Int
  {
    while true {
      let count = Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count)
      if count >= 0 { return count }
      if errno != EINTR { throw Errno(rawValue: errno) }
    }
  }

  /// Writes all of `bytes` (a short write continues where it stopped).
  static func write(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer) throws(Errno) {
    var offset = 0
    while offset < bytes.count {
      let count = Glibc.write(fd.rawValue, bytes.baseAddress! + offset, bytes.count - offset)
      if count > 0 {
        offset += count
      } else if count < 0 && errno != EINTR {
        throw Errno(rawValue: errno)
      } else if count == 0 {
        throw Errno.noSpace
      }
    }
  }

  static func fsync(_ fd: FileDescriptor) throws(Errno) {
    while Glibc.fsync(fd.rawValue) != 0 {
      if errno != EINTR { throw Errno(rawValue: errno) }
    }
  }

  static func fchmod(_ fd: FileDescriptor, _ mode: mode_t) throws(Errno) {
    guard Glibc.fchmod(fd.rawValue, mode) == 0 else { throw Errno(rawValue: errno) }
  }

  /// An exclusive lock without waiting; false when another process holds it.
  static func flockExclusive(_ fd: FileDescriptor) throws(Errno) -> Bool {
    while flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
      if errno == EWOULDBLOCK { return false }
      if errno != EINTR { throw Errno(rawValue: errno) }
    }
    return true
  }
}

/// A directory balloonctl keeps files in, opened without following a symlink
/// and checked on its descriptor: a real directory, owned by an allowed user,
/// writable by nobody else (so no other user can plant or swap a file in it).
/// Files in it are read, created, renamed and synced relative to that
/// descriptor.
final class CheckedDirectory {
  let path: FilePath
  let fd: FileDescriptor

  private init(path: FilePath, fd: FileDescriptor) {
    self.path = path
    self.fd = fd
  }

  deinit { try? fd.close() }

  /// The users a directory or file may belong to: ourselves (the effective
  /// uid), or also root (a file root made is as trusted as our own).
  enum Owners: Sendable {
    case us
    case usOrRoot

    func allows(_ uid: uid_t) -> Bool {
      uid == geteuid() || (self == .usOrRoot && uid == 0)
    }

    var expected: String {
      let euid = geteuid()
      return self == .us || euid == 0 ? "uid \(euid)" : "root or uid \(euid)"
    }
  }

  /// Opens and checks `path`. Absent: nil, or with `create` made with its
  /// missing parents (mode 0755, like `mkdir -p`).
  static func open(_ path: FilePath, owners: Owners, create: Bool) throws(SourceError)
    -> CheckedDirectory?
  {
    let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
    var fd: FileDescriptor
    var created = false
    do {
      fd = try Syscall.openat(AT_FDCWD, path.string, flags)
    } catch .noSuchFileOrDirectory where create {
      try makeDirectories(path)
      do {
        fd = try Syscall.openat(AT_FDCWD, path.string, flags)
        created = true
      } catch {
        throw describeOpenFailure(path, error)
      }
    } catch .noSuchFileOrDirectory {
      return nil
    } catch {
      throw describeOpenFailure(path, error)
    }
    let directory = CheckedDirectory(path: path, fd: fd)
    let info: stat
    do {
      info = try Syscall.fstat(fd)
    } catch {
      throw SourceError(path: path.string, .unreadable(error))
    }
    try check(info, path: path.string, owners: owners)
    if created {
      // 0755 whatever the umask: `status` run by any user reads the state.
      do {
        try Syscall.fchmod(fd, 0o755)
      } catch {
        throw SourceError(path: path.string, .unwritable(error))
      }
    }
    return directory
  }

  /// ENOTDIR covers a regular file, a symlink (O_NOFOLLOW with O_DIRECTORY)
  /// and a parent that is not a directory: lstat says which.
  private static func describeOpenFailure(_ path: FilePath, _ error: Errno) -> SourceError {
    guard error == .notDirectory || error == .tooManySymbolicLinkLevels else {
      return SourceError(path: path.string, .unreadable(error))
    }
    if let info = try? Syscall.lstatat(AT_FDCWD, path.string),
      info.st_mode & S_IFMT == S_IFLNK
    {
      let target = SystemFile.readLink(path).map { " to \($0)" } ?? ""
      return SourceError(
        path: path.string,
        .wrongType("a symbolic link\(target); expected a real directory"))
    }
    return SourceError(path: path.string, .wrongType("not a directory"))
  }

  private static func makeDirectories(_ path: FilePath) throws(SourceError) {
    var partial = FilePath(path.root.map { $0.string } ?? "")
    for component in path.components {
      partial.append(component)
      do {
        _ = try Syscall.mkdirat(AT_FDCWD, partial.string, 0o755)
      } catch {
        throw SourceError(path: partial.string, .unwritable(error))
      }
    }
  }

  /// Owner and mode: no one but an allowed owner may write it.
  static func check(_ info: stat, path: String, owners: Owners) throws(SourceError) {
    guard owners.allows(info.st_uid) else {
      throw SourceError(
        path: path, .wrongType("owned by uid \(info.st_uid); expected \(owners.expected)"))
    }
    guard info.st_mode & 0o022 == 0 else {
      throw SourceError(
        path: path,
        .wrongType(
          "writable by group or others (mode \(octal(info.st_mode & 0o7777))); expected no write access but the owner's"
        ))
    }
  }

  static func octal(_ mode: mode_t) -> String {
    let digits = String(mode, radix: 8)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
  }

  /// What a file is, for "… ; expected a regular file".
  static func kind(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: "a regular file"
    case S_IFDIR: "a directory"
    case S_IFIFO: "a FIFO"
    case S_IFSOCK: "a socket"
    case S_IFCHR: "a character device"
    case S_IFBLK: "a block device"
    case S_IFLNK: "a symbolic link"
    default: "a file of unknown type"
    }
  }

  func path(of name: String) -> String { path.appending(name).string }

  // MARK: Reading

  /// The whole of `name`, or nil when it does not exist. Refused: a symlink,
  /// anything but a regular file (a FIFO is opened non-blocking, so it cannot
  /// hang us), a file of another owner or writable by others, a file larger
  /// than `limit`.
  func read(_ name: String, owners: Owners, limit: Int) throws(SourceError) -> [UInt8]? {
    let file = path(of: name)
    let fd: FileDescriptor
    do {
      fd = try Syscall.openat(
        self.fd.rawValue, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    } catch .noSuchFileOrDirectory {
      return nil
    } catch .tooManySymbolicLinkLevels {
      let target = SystemFile.readLink(FilePath(file)).map { " to \($0)" } ?? ""
      throw SourceError(
        path: file, .wrongType("is a symbolic link\(target); expected a regular file"))
    } catch {
      throw SourceError(path: file, .unreadable(error))
    }
    defer { try? fd.close() }
    let info: stat
    do {
      info = try Syscall.fstat(fd)
    } catch {
      throw SourceError(path: file, .unreadable(error))
    }
    guard info.st_mode & S_IFMT == S_IFREG else {
      throw SourceError(
        path: file, .wrongType("is \(Self.kind(info.st_mode)); expected a regular file"))
    }
    try Self.check(info, path: file, owners: owners)
    guard info.st_size <= limit else { throw SourceError(path: file, .tooLarge(limit: limit)) }
    // Read to one byte past the limit: the file may grow after fstat.
    var bytes = [UInt8](repeating: 0, count: limit + 1)
    var total = 0
    while total < bytes.count {
      let count: Int
      do {
        count = try bytes.withUnsafeMutableBytes { raw in
          Result { () throws(Errno) in
            try Syscall.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[total...]))
          }
        }.get()
      } catch {
        throw SourceError(path: file, .unreadable(error))
      }
      if count == 0 { break }
      total += count
    }
    guard total <= limit else { throw SourceError(path: file, .tooLarge(limit: limit)) }
    bytes.removeSubrange(total...)
    return bytes
  }

  // MARK: Writing

  /// Replaces `name` atomically: a new file with a unique name (O_EXCL,
  /// O_NOFOLLOW: nothing planted is ever opened), written, fsynced, renamed
  /// over `name`, then the directory fsynced. A crash at any point leaves the
  /// old content or the new; a failure removes the temporary file.
  func replace(_ name: String, with bytes: [UInt8], mode: mode_t = 0o644)
    throws(SourceError)
  {
    var temporary = ""
    var fd: FileDescriptor?
    for _ in 0..<8 {
      temporary = ".\(name).\(getpid()).\(String(UInt64.random(in: .min ... .max), radix: 16))"
      do {
        fd = try Syscall.openat(
          self.fd.rawValue, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        break
      } catch .fileExists {
        continue
      } catch {
        throw SourceError(path: path(of: temporary), .unwritable(error))
      }
    }
    guard let fd else {
      throw SourceError(path: path(of: temporary), .unwritable(.fileExists))
    }
    var renamed = false
    defer { if !renamed { try? Syscall.unlinkat(self.fd.rawValue, temporary) } }
    do {
      defer { try? fd.close() }
      // The umask may have taken bits away: readers (status as any user) need them.
      try Syscall.fchmod(fd, mode)
      try bytes.withUnsafeBytes { raw in
        Result { () throws(Errno) in try Syscall.write(fd, raw) }
      }.get()
      try Syscall.fsync(fd)
    } catch {
      throw SourceError(path: path(of: temporary), .unwritable(error))
    }
    do {
      try Syscall.renameat(self.fd.rawValue, temporary, name)
      renamed = true
      try Syscall.fsync(self.fd)
    } catch {
      throw SourceError(path: path(of: name), .unwritable(error))
    }
  }

  /// Opens (creating) `name` for a lock: never through a symlink, and only a
  /// regular file of ours with one link (not a hard link to some other file).
  func openLockFile(_ name: String) throws(SourceError) -> FileDescriptor {
    let file = path(of: name)
    let fd: FileDescriptor
    do {
      fd = try Syscall.openat(
        self.fd.rawValue, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o644)
    } catch .tooManySymbolicLinkLevels {
      let target = SystemFile.readLink(FilePath(file)).map { " to \($0)" } ?? ""
      throw SourceError(
        path: file, .wrongType("is a symbolic link\(target); expected a regular file"))
    } catch {
      throw SourceError(path: file, .unwritable(error))
    }
    do {
      try Self.checkLockFile(fd, path: file)
    } catch {
      try? fd.close()
      throw error
    }
    return fd
  }

  private static func checkLockFile(_ fd: FileDescriptor, path file: String) throws(SourceError) {
    let info: stat
    do {
      info = try Syscall.fstat(fd)
    } catch {
      throw SourceError(path: file, .unreadable(error))
    }
    guard info.st_mode & S_IFMT == S_IFREG else {
      throw SourceError(path: file, .wrongType("is \(kind(info.st_mode)); expected a regular file"))
    }
    guard info.st_nlink == 1 else {
      throw SourceError(
        path: file, .wrongType("has \(info.st_nlink) hard links; expected a file of its own"))
    }
    try check(info, path: file, owners: .us)
  }

  /// Renames `name` to `base` (or `base-2`, `base-3`, … when taken: a
  /// previous file moved aside is never overwritten). Returns the new path.
  func moveAside(_ name: String, to base: String) throws(SourceError) -> FilePath {
    var target = base
    var suffix = 1
    while (try? Syscall.lstatat(fd.rawValue, target)) != nil, suffix < 100 {
      suffix += 1
      target = "\(base)-\(suffix)"
    }
    do {
      try Syscall.renameat(fd.rawValue, name, target)
      try Syscall.fsync(fd)
    } catch {
      throw SourceError(path: path(of: name), .unwritable(error))
    }
    return path.appending(target)
  }
}
