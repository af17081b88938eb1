import BalloonKit
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The fixture trees in `Tests/Fixtures/roots/<scenario>/`, found from this
/// source file. They live outside every target directory on purpose: like
/// real sysfs they contain symlink cycles (`subsystem`, `driver`), and
/// SwiftPM's source scan follows links into them without end, even when the
/// directory is excluded. Each tree plays `/` for a `Root.snapshot`.
enum Fixtures {
  static let roots = FilePath(#filePath).removingLastComponent().removingLastComponent()
    .removingLastComponent().appending("Fixtures").appending("roots")

  /// Every scenario, by directory name.
  static let allTrees = [
    "hugetlb-multi", "hyperv", "hyperv-committed", "kb-example", "none", "pre-4.16",
    "virtio-6.1", "virtio-6.18", "virtio-unbound", "vmw-4.19", "vmw-6.x", "vmw-no-debugfs", "xen",
  ]

  static func directory(_ tree: String) -> FilePath { roots.appending(tree) }

  /// A tree as a read-only snapshot root.
  static func root(_ tree: String) -> Root { .snapshot(directory(tree)) }

  /// The bytes of a file in a tree, by kernel path.
  static func bytes(_ tree: String, _ kernelPath: String) throws -> [UInt8] {
    try SystemFile.readRequired(root(tree).path(kernelPath))
  }

  /// A writable copy of `tree` in a fresh temporary directory (symlinks kept
  /// as symlinks), for tests that change or remove files.
  static func copy(_ tree: String) throws -> TemporaryTree {
    let copy = try TemporaryTree()
    try TemporaryTree.copyDirectory(from: directory(tree).string, to: copy.base.string)
    return copy
  }
}

struct FixtureError: Error, CustomStringConvertible {
  var description: String
  init(_ what: String, _ path: String) {
    description = "\(what) \(path): \(Errno(rawValue: errno))"
  }
}

/// A directory under `/tmp` that plays `/`; removed (recursively) on deinit.
/// Paths given to its methods are kernel paths (`/proc/meminfo`).
final class TemporaryTree {
  let base: FilePath
  var root: Root { .snapshot(base) }

  /// An empty tree.
  init() throws {
    var template = Array("/tmp/balloonkit-tests.XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard let made else { throw FixtureError("mkdtemp", "/tmp") }
    base = FilePath(String(cString: made))
  }

  deinit { Self.removeRecursively(base.string) }

  func path(_ kernelPath: String) -> String { root.path(kernelPath).string }

  /// Writes `text` to `kernelPath`, creating parent directories.
  func write(_ kernelPath: String, _ text: String) throws {
    try write(kernelPath, Array(text.utf8))
  }

  func write(_ kernelPath: String, _ bytes: [UInt8]) throws {
    let file = path(kernelPath)
    try makeParents(of: file)
    let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FixtureError("open", file) }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    guard written == bytes.count else { throw FixtureError("write", file) }
  }

  /// Creates the symbolic link `kernelPath` → `target` (target verbatim).
  func symlink(_ kernelPath: String, to target: String) throws {
    let file = path(kernelPath)
    try makeParents(of: file)
    guard Glibc.symlink(target, file) == 0 else { throw FixtureError("symlink", file) }
  }

  func mkdir(_ kernelPath: String) throws {
    let directory = path(kernelPath)
    try makeParents(of: directory + "/x")
  }

  /// Removes a file, link or directory tree.
  func remove(_ kernelPath: String) {
    Self.removeRecursively(path(kernelPath))
  }

  private func makeParents(of file: String) throws {
    var current = ""
    let components = file.split(separator: "/", omittingEmptySubsequences: true).dropLast()
    for component in components {
      current += "/" + component
      if Glibc.mkdir(current, 0o755) != 0 && errno != EEXIST {
        throw FixtureError("mkdir", current)
      }
    }
  }

  static func copyDirectory(from source: String, to destination: String) throws {
    guard let dir = opendir(source) else { throw FixtureError("opendir", source) }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
      let name = withUnsafePointer(to: entry.pointee.d_name) {
        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
      }
      if name == "." || name == ".." { continue }
      let from = source + "/" + name
      let to = destination + "/" + name
      var info = stat()
      guard lstat(from, &info) == 0 else { throw FixtureError("lstat", from) }
      switch info.st_mode & S_IFMT {
      case S_IFDIR:
        guard Glibc.mkdir(to, 0o755) == 0 else { throw FixtureError("mkdir", to) }
        try copyDirectory(from: from, to: to)
      case S_IFLNK:
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(from, &buffer, buffer.count - 1)
        guard count >= 0 else { throw FixtureError("readlink", from) }
        let target = String(
          decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard Glibc.symlink(target, to) == 0 else { throw FixtureError("symlink", to) }
      default:
        let bytes = try SystemFile.readRequired(FilePath(from))
        let fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FixtureError("open", to) }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw FixtureError("write", to) }
      }
    }
  }

  static func removeRecursively(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT == S_IFDIR {
      if let dir = opendir(path) {
        var names: [String] = []
        while let entry = readdir(dir) {
          let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
          }
          if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names { removeRecursively(path + "/" + name) }
      }
      rmdir(path)
    } else {
      unlink(path)
    }
  }
}
