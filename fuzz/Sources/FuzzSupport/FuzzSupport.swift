public import BalloonKit
import FuzzerDriver
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// What every fuzzer shares: the entry point, the input as a byte array, and
/// the checks. A failed check calls `fatalError`, whose message survives `-O`
/// (a `precondition` message does not), and libFuzzer saves the input.
public enum Fuzz {
  /// The executable's `main`: runs libFuzzer with the command line.
  public static func main() -> Never {
    exit(balloonctl_fuzzer_main(CommandLine.argc, CommandLine.unsafeArgv))
  }

  public static func bytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
    Array(UnsafeBufferPointer(start: data, count: size))
  }

  public static func require(
    _ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID,
    line: UInt = #line
  ) {
    if !condition { fatalError("invariant: \(message())", file: file, line: line) }
  }

  /// Every bad input gives a one-line error that starts with the file's name.
  public static func requireOneLine(_ error: SourceError, naming path: String) {
    let text = error.description
    require(!text.contains("\n") && !text.contains("\r"), "error is not one line: \(text)")
    require(text.hasPrefix(path), "error does not start with the file \(path): \(text)")
  }

  /// Whether some line of `bytes` starts with `prefix`.
  public static func hasLine(_ bytes: [UInt8], startingWith prefix: String) -> Bool {
    let prefix = Array(prefix.utf8)
    var start = 0
    while start < bytes.count {
      if bytes[start...].starts(with: prefix) { return true }
      guard let newline = bytes[start...].firstIndex(of: 0x0a) else { return false }
      start = newline + 1
    }
    return false
  }

  /// Splits `bytes` at `separator` into at most `count` parts (the last takes
  /// the rest), padding with empty parts: several small files from one input.
  public static func split(_ bytes: ArraySlice<UInt8>, at separator: UInt8, into count: Int)
    -> [[UInt8]]
  {
    var parts = bytes.split(
      separator: separator, maxSplits: count - 1, omittingEmptySubsequences: false
    ).map { Array($0) }
    while parts.count < count { parts.append([]) }
    return parts
  }
}

/// A directory tree below `$TMPDIR` for the fuzzers whose reader takes a root
/// of several small files (Xen, the firmware memmap). One per process; fuzz/run
/// gives each run its own `$TMPDIR` and removes it afterwards.
public enum ScratchTree {
  public static let base: String = {
    let parent = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(parent)/balloonctl-fuzz-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
      fatalError("mkdtemp below \(parent): errno \(errno)")
    }
    return String(cString: made)
  }()

  public static var root: Root { .snapshot(FilePath(base)) }

  /// Writes `bytes` to `base + absolute`, creating the directories.
  public static func write(_ absolute: String, _ bytes: [UInt8]) {
    var directory = base
    for component in absolute.split(separator: "/").dropLast() {
      directory += "/" + component
      if mkdir(directory, 0o755) != 0 && errno != EEXIST {
        fatalError("mkdir \(directory): errno \(errno)")
      }
    }
    let path = base + absolute
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if fd < 0 { fatalError("open \(path): errno \(errno)") }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    if written != bytes.count { fatalError("write \(path): errno \(errno)") }
  }

  /// Removes `base + absolute` (a file or an empty directory), if it exists.
  public static func remove(_ absolute: String) {
    let path = base + absolute
    if unlink(path) != 0 && errno == EISDIR { rmdir(path) }
  }
}
