import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The built binary against hostile trees: every case replaces one file of a
/// fixture copy with bad input and runs a command on it. Each case asserts
/// the exit status, that the message names the file, that no signal ended
/// the process and that it finished in time (a FIFO must not block open()).
@Suite("bad input, through the command line")
struct BadInputTableTests {
  /// What replaces the file.
  enum Content: Sendable, CustomStringConvertible {
    case bytes([UInt8])
    case text(String)
    case fifo
    case directory
    case symlinkLoop
    /// One line of this many bytes, no newline.
    case longLine(Int)
    /// The file is removed.
    case absent
    /// Mode 000, and the command runs as `nobody`.
    case unreadable

    var description: String {
      switch self {
      case .bytes(let bytes): "\(bytes.count) bytes"
      case .text(let text): "\"\(text.prefix(40))\""
      case .fifo: "a FIFO"
      case .directory: "a directory"
      case .symlinkLoop: "a symlink loop"
      case .longLine(let count): "a \(count >> 20) MiB line"
      case .absent: "absent"
      case .unreadable: "unreadable (mode 000, run as nobody)"
      }
    }
  }

  struct Case: Sendable, CustomTestStringConvertible {
    var tree: String
    var file: String
    var content: Content
    /// Arguments; "{root}" is the tree, "{file}" the replaced file's path.
    var arguments: [String]
    var status: Int32
    /// Text the output must contain besides the file's path (lowercased match).
    var mentions: String? = nil
    /// The file's path need not appear (the answer is a partial one, marked).
    var partial: Bool = false

    var testDescription: String {
      "\(arguments.first ?? "") \(tree)\(file) = \(content) → \(status)"
    }
  }

  static let status = ["status", "--json", "--root", "{root}"]
  static let statusText = ["status", "--root", "{root}"]
  static let once = ["run", "--once", "--mode", "report", "--json", "--root", "{root}"]
  static let limit = ["limit", "--explain", "--root", "{root}"]
  static let settings = [
    "run", "--once", "--mode", "report", "--json", "--root", "{root}", "--config", "{file}",
  ]

  /// One kernel file's bad variants, each run through `commands`.
  static func cases(
    _ tree: String, _ file: String, _ contents: [(Content, String?)], status: Int32 = 1,
    commands: [[String]] = [status, once]
  ) -> [Case] {
    contents.flatMap { content, mentions in
      commands.map {
        Case(
          tree: tree, file: file, content: content, arguments: $0, status: status,
          mentions: mentions)
      }
    }
  }

  /// debugfs is optional (not mounted, or root-only): a debugfs file that is
  /// not a regular file makes the size or target unknown, with the file and
  /// the reason in the answer, and the command succeeds.
  static let debugfsUnknown: Int32 = 0

  static let meminfoLines =
    "MemTotal:        1000000 kB\nMemFree:          500000 kB\nSwapTotal:             0 kB\n"

  static let all: [Case] =
    cases(
      "virtio-6.18", "/proc/meminfo",
      [
        (.fifo, "fifo"), (.directory, "directory"), (.symlinkLoop, nil),
        (.longLine(100 << 20), "larger than"), (.bytes([]), "memtotal"),
        (.text(meminfoLines), "missing"),
        (.text("MemTotal: 1 kB\nMemTotal: 2 kB\n"), "line 2"),
        (.text("MemTotal: 12x4 kB\n"), "line 1"),
        (.text("MemTotal: 99999999999999999999999 kB\n"), "line 1"),
        (.bytes(Array("MemTotal: 1\0 kB\n".utf8)), nil),
        (.absent, nil), (.unreadable, "permission denied"),
      ], commands: [status, once, limit])
    + cases(
      "virtio-6.18", "/proc/vmstat",
      [
        (.fifo, "fifo"), (.directory, "directory"), (.symlinkLoop, nil),
        (.text("balloon_inflate 12x\nballoon_deflate 0\n"), "line 1"),
        (.text("balloon_inflate 1\nballoon_deflate 0\nballoon_inflate 2\n"), "line 3"),
        (.text("balloon_inflate 1\n"), "balloon_deflate"),
        (.longLine(100 << 20), "larger than"),
      ])
    + cases(
      "vmw-6.x", "/sys/kernel/debug/vmmemctl",
      [
        (.text("target: 1x\n"), nil),
        (.text("target : 1\ncurrent : 1\ntarget : 2\ncurrent : 2\n"), nil),
      ])
    + cases(
      "vmw-6.x", "/sys/kernel/debug/vmmemctl", [(.fifo, "fifo"), (.directory, "directory")],
      status: debugfsUnknown)
    + cases("hyperv", "/sys/kernel/debug/hv-balloon", [(.text("state: x\n"), nil)])
    + cases(
      "hyperv", "/sys/kernel/debug/hv-balloon", [(.fifo, "fifo"), (.directory, "directory")],
      status: debugfsUnknown)
    + cases(
      "xen", "/sys/devices/system/xen_memory/xen_memory0/target_kb",
      [(.fifo, "fifo"), (.text("12x\n"), nil), (.directory, "directory")])
    + cases(
      "xen", "/sys/devices/system/xen_memory/xen_memory0/info/current_kb",
      [(.fifo, "fifo"), (.text("-1\n"), nil)])
    + cases(
      "virtio-6.18", "/sys/devices/pci0000:00/0000:00:01.0/virtio0/features",
      [(.fifo, "fifo"), (.text("01x\n"), nil)])
    // The daemon's own state file: status reports it and exits 1.
    + cases(
      "virtio-6.18", "/run/balloonctl/state.json",
      [
        (.fifo, "fifo"), (.directory, "directory"), (.symlinkLoop, nil), (.text("{"), "json"),
        (.text("{\"version\": 1, \"pid\": 1e300}"), "pid"), (.longLine(100 << 20), nil),
      ], commands: [status, statusText])
    // The settings file: bad content is 64 with file:line, an unreadable file 1.
    + cases(
      "virtio-6.18", "/etc/default/balloonctl",
      [
        (.text("BALLOONCTL_MODE=report\nBALLOONCTL_MODE=report\n"), "line 2"),
        (.text("BALLOONCTL_INTERVAL=fast\n"), "line 1"),
        (.bytes([0xEF, 0xBB, 0xBF, 0x42, 0xEF, 0xBB, 0xBF, 0x3D, 0x31, 0x0A]), "line 1"),
        (.bytes([0x42, 0x3D, 0xFF, 0x0A]), "line 1"),
        (.text("BALLOONCTL_MODE='report\n"), "line 1"),
      ], status: 64, commands: [settings])
    + cases(
      "virtio-6.18", "/etc/default/balloonctl",
      [(.fifo, "fifo"), (.directory, "directory"), (.absent, nil), (.symlinkLoop, nil)],
      commands: [settings])

  @Test(
    "a bad input file fails with one line naming it (or is named as unknown); no signal, no hang",
    arguments: all)
  func badInputFile(_ item: Case) throws {
    let tree = try Fixtures.copy(item.tree)
    let file = tree.path(item.file)
    try Self.replace(file, in: tree, with: item.content)
    let arguments = item.arguments.map {
      $0 == "{root}" ? tree.base.string : $0 == "{file}" ? file : $0
    }
    let asNobody: Bool
    if case .unreadable = item.content { asNobody = true } else { asNobody = false }
    let result = try Balloonctl.run(arguments, asNobody: asNobody, timeoutSeconds: 20)
    #expect(!result.timedOut, "\(item.testDescription): still running after 20 s")
    #expect(result.status < 128, "\(item.testDescription): killed by signal \(result.status - 128)")
    #expect(
      result.status == item.status,
      "\(item.testDescription): exit \(result.status); stderr: \(result.stderr.prefix(300))")
    let output = (result.stderr + result.stdout).lowercased()
    if !item.partial {
      #expect(output.contains(item.file.lowercased()), "\(item.testDescription): names the file")
    }
    if let mentions = item.mentions {
      #expect(output.contains(mentions), "\(item.testDescription): mentions \"\(mentions)\"")
    }
    if item.status != 0 {
      let lines = result.stderr.split(separator: "\n")
      #expect(
        lines.count <= 2, "\(item.testDescription): one line, got \(result.stderr.prefix(500))")
    }
  }

  static func replace(_ file: String, in tree: TemporaryTree, with content: Content) throws {
    TemporaryTree.removeRecursively(file)
    // The file's directory, for files no fixture has (state, settings).
    let parent = FilePath(file).removingLastComponent().string
    guard parent.hasPrefix(tree.base.string) else { throw FixtureError("outside", file) }
    try tree.mkdir(String(parent.dropFirst(tree.base.string.count)))
    switch content {
    case .bytes(let bytes): try write(file, bytes)
    case .text(let text): try write(file, Array(text.utf8))
    case .fifo:
      guard mkfifo(file, 0o644) == 0 else { throw FixtureError("mkfifo", file) }
    case .directory:
      guard mkdir(file, 0o755) == 0 else { throw FixtureError("mkdir", file) }
    case .symlinkLoop:
      guard symlink(file + ".loop", file) == 0, symlink(file, file + ".loop") == 0 else {
        throw FixtureError("symlink", file)
      }
    case .longLine(let count):
      try write(file, [UInt8](repeating: 0x41, count: count))
    case .absent:
      break
    case .unreadable:
      try write(file, Array("x\n".utf8))
      guard chmod(file, 0) == 0 else { throw FixtureError("chmod", file) }
      // nobody must reach the file: the temporary tree is 0700.
      guard chmod(tree.base.string, 0o755) == 0 else { throw FixtureError("chmod", file) }
    }
  }

  static func write(_ file: String, _ bytes: [UInt8]) throws {
    let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FixtureError("open", file) }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
      let written = bytes.withUnsafeBytes {
        Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset)
      }
      guard written > 0 else { throw FixtureError("write", file) }
      offset += written
    }
  }
}
