public import SystemPackage

/// A kernel file could not be used: it could not be read, or its content is not
/// the format the kernel writes. Every reader throws only this, so every
/// failure prints as one line that names the file:
///
///     /proc/meminfo: line 3: "MemTotal" value "12x4" is not a number
public struct SourceError: Error, Sendable, Equatable, CustomStringConvertible {
  public enum Problem: Sendable, Equatable {
    /// open/read failed with this errno (other than "absent", which readers
    /// report as nil).
    case unreadable(Errno)
    /// The content is not in the kernel's format. `line` is 1-based.
    case malformed(line: Int?, String)
    /// A field every kernel writes is missing.
    case missingField(String)
    /// The file is larger than any version of it the kernel writes.
    case tooLarge(limit: Int)
    /// Creating, writing, syncing or renaming failed with this errno.
    case unwritable(Errno)
    /// The path is not the kind of file expected there (a FIFO, a socket, a
    /// device, a directory, a symlink where none may be, a file owned by
    /// another user); the text says what it is and what was expected.
    case wrongType(String)
  }

  /// The path that was read, as opened (below `--root` when one is given).
  public var path: String
  public var problem: Problem

  public init(path: String, _ problem: Problem) {
    self.path = path
    self.problem = problem
  }

  public static func malformed(_ path: String, line: Int? = nil, _ what: String) -> SourceError {
    SourceError(path: path, .malformed(line: line, what))
  }

  public var description: String {
    switch problem {
    case .unreadable(let errno): return "\(path): cannot read: \(errno)"
    case .malformed(let line?, let what): return "\(path): line \(line): \(what)"
    case .malformed(nil, let what): return "\(path): \(what)"
    case .missingField(let field): return "\(path): missing \"\(field)\""
    case .tooLarge(let limit): return "\(path): larger than \(limit) bytes"
    case .unwritable(let errno): return "\(path): cannot write: \(errno)"
    case .wrongType(let what): return "\(path): \(what)"
    }
  }
}
