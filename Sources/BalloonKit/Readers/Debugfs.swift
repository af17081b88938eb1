import SystemPackage

/// Whether the debugfs stats files (`vmmemctl`, `hv-balloon`) can be read.
public enum DebugfsState: Sendable, Equatable {
  case mounted
  case notMounted
  /// Mounted (or present in the snapshot) but the directory cannot be
  /// listed; the payload is the reason, e.g. `Permission denied`.
  case notReadable(String)
}

/// debugfs at `/sys/kernel/debug`, where vmw_balloon and hv_balloon put their
/// stats. It is often not mounted (the development machines), and its root is
/// normally mode 0700, so readers treat it as an optional source.
public enum Debugfs {
  public static let mountPoint = "/sys/kernel/debug"

  /// Live: is a `debugfs` mounted at `/sys/kernel/debug` (per
  /// `/proc/self/mountinfo`), and can it be listed. Snapshot: does
  /// `DIR/sys/kernel/debug` exist as a non-empty, listable directory (an
  /// unmounted mount point is an empty directory).
  public static func state(root: Root) -> DebugfsState {
    // Live: mountinfo decides; if it cannot be read, judge by the directory.
    var mounted: Bool?
    if root.isLive, let mountinfo = try? SystemFile.read(root.path("/proc/self/mountinfo")) {
      mounted = isMounted(mountinfo: mountinfo)
      if mounted == false { return .notMounted }
    }
    do {
      guard let names = try SystemFile.list(root.path(mountPoint)) else { return .notMounted }
      // An empty directory is the bare mount point (nothing mounted on it).
      return names.isEmpty && mounted != true ? .notMounted : .mounted
    } catch {
      if case .unreadable(let errno) = error.problem { return .notReadable(errno.description) }
      return .notReadable(error.description)
    }
  }

  /// Whether `mountinfo` (the `/proc/self/mountinfo` format: mount point in
  /// field 5, file system type after the ` - ` separator) lists a debugfs
  /// mounted at `/sys/kernel/debug`.
  static func isMounted(mountinfo: [UInt8]) -> Bool {
    var found = false
    mountinfo.withUnsafeBufferPointer { bytes in
      var start = 0
      while start < bytes.count, !found {
        var end = start
        while end < bytes.count, bytes[end] != 0x0a { end += 1 }
        let fields = splitFields(bytes, start..<end)
        if fields.count >= 7, KernelText.equals(bytes, fields[4], "/sys/kernel/debug"),
          let separator = fields.firstIndex(where: { KernelText.equals(bytes, $0, "-") }),
          separator > 5, separator + 1 < fields.count,
          KernelText.equals(bytes, fields[separator + 1], "debugfs")
        {
          found = true
        }
        start = end + 1
      }
    }
    return found
  }

  private static func splitFields(_ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>)
    -> [Range<Int>]
  {
    var fields: [Range<Int>] = []
    var index = line.lowerBound
    while index < line.upperBound {
      while index < line.upperBound, bytes[index] == 0x20 { index += 1 }
      let start = index
      while index < line.upperBound, bytes[index] != 0x20 { index += 1 }
      if start < index { fields.append(start..<index) }
    }
    return fields
  }
}

/// Shared parsing of the `key: value` stats files debugfs drivers print
/// (`vmmemctl`, `hv-balloon`).
enum DebugfsStats {
  /// Calls `body(lineNumber, key, value, column)` for every non-blank line;
  /// `key` is the text before the first `:` and `value` the text after it,
  /// both trimmed; `column` is the `:`'s offset in its line (it tells the
  /// `"%-22s: "` layout from `"key:"`). A non-blank line without `:` is
  /// malformed, and so is a last line without its newline (a file cut off).
  static func forEachField(
    _ bytes: UnsafeBufferPointer<UInt8>, path: String,
    _ body: (Int, Range<Int>, Range<Int>, Int) throws(SourceError) -> Void
  ) throws(SourceError) {
    try KernelText.forEachLine(bytes, path: path) { number, line throws(SourceError) in
      if KernelText.trimmed(bytes, line).isEmpty { return }
      guard let colon = KernelText.firstIndex(of: 0x3a, in: bytes, line) else {
        throw .malformed(path, line: number, "no \":\" in \(KernelText.quoted(bytes, line))")
      }
      let key = KernelText.trimmed(bytes, line.lowerBound..<colon)
      let value = KernelText.trimmed(bytes, (colon + 1)..<line.upperBound)
      try body(number, key, value, colon - line.lowerBound)
    }
    try KernelText.requireFinalNewline(bytes, path: path)
  }
}
