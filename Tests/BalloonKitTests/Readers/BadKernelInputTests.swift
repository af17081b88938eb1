import Dispatch
import SystemPackage
import Testing

@testable import BalloonKit

#if canImport(Glibc)
  import Glibc
#endif

/// Hands a result from a worker thread to the waiting test (the semaphore
/// orders the write before the read).
final class ResultBox<T>: @unchecked Sendable {
  var value: T?
}

/// Runs `run` on a new detached thread; `done` is signalled when it returns.
final class ThreadJob: @unchecked Sendable {
  let run: () -> Void
  let done = DispatchSemaphore(value: 0)

  init(_ run: @escaping () -> Void) { self.run = run }

  func start() {
    var thread = pthread_t()
    let created = pthread_create(
      &thread, nil,
      { raw in
        let job = Unmanaged<ThreadJob>.fromOpaque(raw!).takeRetainedValue()
        job.run()
        job.done.signal()
        return nil
      }, Unmanaged.passRetained(self).toOpaque())
    if created == 0 {
      pthread_detach(thread)
    } else {
      run()
      done.signal()
    }
  }
}

/// What replaces the file under test in a copy of a fixture tree.
enum BadInput: Sendable {
  /// A named pipe: a plain blocking open() of it waits for a writer forever.
  case fifo
  case directory
  /// A link to itself: open() fails with ELOOP.
  case symlinkLoop
  /// A bound Unix socket: open() fails with ENXIO.
  case socket
  /// A link to /dev/null (a character device that needs no module).
  case characterDevice
  /// A 100 MB file (sparse: its first 2 MiB are text, the rest a hole).
  case hugeFile
  /// One 100 MB line: 2 MiB of digits without a newline, then a hole.
  case hugeLine
  /// The whole content.
  case text(String)
  /// The original up to and including the line starting with `prefix`.
  case cutAfter(String)
  /// The original cut `keep` bytes into the line starting with `prefix`.
  case cutInside(String, keep: Int)
  /// The original without the line starting with `prefix`.
  case removeLine(String)
  /// The original with the line starting with `prefix` appended once more.
  case repeatLine(String)
  /// The original with the line starting with `prefix` replaced by `with`.
  case replaceLine(String, with: String)
  /// The original with `text` appended.
  case append(String)
}

/// The readers under test, each through its entry point on a snapshot root.
enum BadInputReader: String, Sendable {
  case meminfo, vmstat, processStatus, vmmemctl, hvBalloon, xenTarget, virtioAttribute
  case firmwareMemmap, stateFile, configFile, pciConfig

  /// Runs the reader; the error's path (nil for a ProbeError) and text, or
  /// nil when it succeeded.
  func failure(root: Root, file: String) -> (path: String?, text: String)? {
    do {
      switch self {
      case .meminfo: _ = try MeminfoReader.read(from: root)
      case .vmstat: _ = try VmstatReader.read(from: root)
      case .processStatus:
        // What scan() does for each process.
        let path = FilePath(file)
        _ = try ProcessStatusReader.parse(SystemFile.readRequired(path), path: file)
      case .vmmemctl: _ = try VmwBalloonReader.read(root: root)
      case .hvBalloon: _ = try HypervBalloonReader.read(root: root)
      case .xenTarget:
        let device = BalloonDevice(
          kind: .xen, name: "xen_memory0", sysPath: SysfsDiscovery.xenDevice,
          driver: "xen-balloon")
        _ = try XenBalloonReader.read(device: device, root: root)
      case .virtioAttribute: _ = try SysfsDiscovery(root: root).discover()
      case .firmwareMemmap: _ = try FirmwareMemmapReader.systemRAMBytes(root: root)
      case .stateFile:
        _ = try StateStore(directory: root.path("/run/balloonctl")).load()
      case .configFile: _ = try RunSettings.load(FilePath(file))
      case .pciConfig:
        do {
          let space = try SysfsPCIConfigSpace(root: root, pciAddress: "0000:00:01.0")
          _ = try space.read(offset: 0, count: 64)
        } catch {
          return (nil, error.description)
        }
      }
      return nil
    } catch {
      return (error.path, error.description)
    }
  }
}

struct BadInputCase: Sendable, CustomTestStringConvertible {
  var reader: BadInputReader
  var tree: String
  var kernelPath: String
  var input: BadInput
  var name: String
  /// Text the error must contain (after the path).
  var says: String
  /// The line the error must name, when it is about one line.
  var line: Int?
  /// The path the error must name, when not `kernelPath`.
  var names: String?

  init(
    _ reader: BadInputReader, _ tree: String, _ kernelPath: String, _ name: String,
    _ input: BadInput, says: String, line: Int? = nil, names: String? = nil
  ) {
    self.names = names
    self.reader = reader
    self.tree = tree
    self.kernelPath = kernelPath
    self.input = input
    self.name = name
    self.says = says
    self.line = line
  }

  var testDescription: String { "\(reader.rawValue) \(kernelPath): \(name)" }

  var isFIFO: Bool {
    if case .fifo = input { return true }
    return false
  }
}

private let meminfo = "/proc/meminfo"
private let vmstat = "/proc/vmstat"
private let status = "/proc/812/status"
private let vmmemctl = "/sys/kernel/debug/vmmemctl"
private let hvBalloon = "/sys/kernel/debug/hv-balloon"
private let targetKB = "/sys/devices/system/xen_memory/xen_memory0/target_kb"
private let virtioDevice = "/sys/devices/pci0000:00/0000:00:01.0/virtio0/device"
private let memmapEnd = "/sys/firmware/memmap/1/end"
private let stateFile = "/run/balloonctl/state.json"
private let configFile = "/etc/balloonctl"
private let pciConfig = "/sys/bus/pci/devices/0000:00:01.0/config"
private let huge = "99999999999999999999"  // > UInt64.max
private let notRegular = "; expected a regular file"

@Suite("Bad kernel input: every reader fails fast with one line naming the file")
struct BadKernelInputTests {
  static let cases: [BadInputCase] = [
    // /proc/meminfo: every file-type problem, then every content problem.
    .init(.meminfo, "virtio-6.18", meminfo, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(
      .meminfo, "virtio-6.18", meminfo, "directory", .directory,
      says: "is a directory" + notRegular),
    .init(
      .meminfo, "virtio-6.18", meminfo, "symlink loop", .symlinkLoop,
      says: "cannot read: Too many levels of symbolic links"),
    .init(.meminfo, "virtio-6.18", meminfo, "socket", .socket, says: "is a socket" + notRegular),
    .init(
      .meminfo, "virtio-6.18", meminfo, "character device", .characterDevice,
      says: "is a character device" + notRegular),
    .init(
      .meminfo, "virtio-6.18", meminfo, "100 MB file", .hugeFile,
      says: "larger than 1048576 bytes"),
    .init(
      .meminfo, "virtio-6.18", meminfo, "one 100 MB line", .hugeLine,
      says: "larger than 1048576 bytes"),
    .init(.meminfo, "virtio-6.18", meminfo, "empty", .text(""), says: "missing \"MemTotal\""),
    .init(
      .meminfo, "virtio-6.18", meminfo, "cut off after SwapTotal", .cutAfter("SwapTotal:"),
      says: "missing \"AnonPages\""),
    .init(
      .meminfo, "virtio-6.18", meminfo, "cut off inside the last line",
      .cutInside("DirectMap1G:", keep: 20), says: "has no newline: the file is cut off", line: 54),
    .init(
      .meminfo, "virtio-6.18", meminfo, "NUL byte",
      .replaceLine("MemFree:", with: "Mem\0Free: 1 kB"),
      says: "NUL byte in text", line: 2),
    .init(
      .meminfo, "virtio-6.18", meminfo, "MemTotal twice", .repeatLine("MemTotal:"),
      says: "\"MemTotal\" appears again (first on line 1)", line: 55),
    .init(
      .meminfo, "virtio-6.18", meminfo, "PageTables missing", .removeLine("PageTables:"),
      says: "missing \"PageTables\""),
    .init(
      .meminfo, "virtio-6.18", meminfo, "non-numeric",
      .replaceLine("Shmem:", with: "Shmem:      12x4 kB"),
      says: "\"Shmem\" value \"12x4\" is not a number"),
    .init(
      .meminfo, "virtio-6.18", meminfo, "overflow",
      .replaceLine("AnonPages:", with: "AnonPages: \(huge) kB"), says: "overflows 64 bits",
      line: 21),
    .init(
      .meminfo, "virtio-6.18", meminfo, "negative",
      .replaceLine("Mlocked:", with: "Mlocked:     -5 kB"),
      says: "\"Mlocked\" value \"-5\" is not a number",
      line: 14),
    // /proc/vmstat
    .init(.vmstat, "virtio-6.18", vmstat, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(
      .vmstat, "virtio-6.18", vmstat, "nr_balloon_pages twice",
      .repeatLine("nr_balloon_pages "),
      says: "\"nr_balloon_pages\" appears again (first on line 67)", line: 193),
    .init(
      .vmstat, "virtio-6.18", vmstat, "cut between the FOLL_PIN counters",
      .removeLine("nr_foll_pin_released "),
      says: "\"nr_foll_pin_acquired\" without \"nr_foll_pin_released\""),
    .init(
      .vmstat, "virtio-6.18", vmstat, "cut inside the last line",
      .cutInside("balloon_migrate ", keep: 17), says: "the file is cut off", line: 178),
    .init(
      .vmstat, "virtio-6.18", vmstat, "negative", .replaceLine("oom_kill ", with: "oom_kill -1"),
      says: "\"oom_kill\" value \"-1\" is not a number", line: 125),
    .init(.vmstat, "virtio-6.18", vmstat, "empty", .text(""), says: "empty"),
    // /proc/<pid>/status
    .init(
      .processStatus, "virtio-6.18", status, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(
      .processStatus, "virtio-6.18", status, "VmPin twice", .repeatLine("VmPin:"),
      says: "\"VmPin\" appears again (first on line 21)"),
    .init(
      .processStatus, "virtio-6.18", status, "Pid twice", .append("Pid:\t1\n"),
      says: "\"Pid\" appears again (first on line 6)"),
    .init(
      .processStatus, "virtio-6.18", status, "Name twice", .append("Name:\tother\n"),
      says: "\"Name\" appears again (first on line 1)"),
    .init(
      .processStatus, "virtio-6.18", status, "cut inside the last line",
      .cutInside("Pid:", keep: 6), says: "the file is cut off", line: 6),
    .init(
      .processStatus, "virtio-6.18", status, "symlink loop", .symlinkLoop,
      says: "cannot read: Too many levels of symbolic links"),
    // debugfs vmmemctl
    .init(.vmmemctl, "vmw-6.x", vmmemctl, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(
      .vmmemctl, "vmw-6.x", vmmemctl, "both layouts",
      .replaceLine("current ", with: "current:              261888 pages"),
      says: "\"current\" is in the ≤ 4.19 (\"key:\") layout, line 2 in the ≥ 4.20", line: 5),
    .init(
      .vmmemctl, "vmw-6.x", vmmemctl, "target twice",
      .append("target                :           999999\n"),
      says: "\"target\" appears again (first on line 4)"),
    .init(
      .vmmemctl, "vmw-4.19", vmmemctl, "used capabilities twice",
      .append("used capabilities:      0x0\n"),
      says: "\"used capabilities\" appears again (first on line 2)"),
    .init(
      .vmmemctl, "vmw-4.19", vmmemctl, "100 MB file", .hugeFile, says: "larger than 1048576 bytes"
    ),
    // debugfs hv-balloon
    .init(.hvBalloon, "hyperv", hvBalloon, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(
      .hvBalloon, "hyperv", hvBalloon, "pages_ballooned twice",
      .append("pages_ballooned       : 1\n"),
      says: "\"pages_ballooned\" appears again (first on line 7)"),
    .init(
      .hvBalloon, "hyperv", hvBalloon, "both spellings of committed",
      .append("total_pages_committed : 845123\n"),
      says: "\"total_pages_committed\" appears again (first on line 8)"),
    .init(
      .hvBalloon, "hyperv", hvBalloon, "cut inside the last line",
      .cutInside("max_dynamic_page_count:", keep: 25), says: "the file is cut off", line: 9),
    // Xen target_kb
    .init(.xenTarget, "xen", targetKB, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(.xenTarget, "xen", targetKB, "overflow", .text("\(huge)\n"), says: "overflows 64 bits"),
    .init(
      .xenTarget, "xen", targetKB, "overflow in bytes", .text("18446744073709551615\n"),
      says: "overflows 64 bits"),
    .init(.xenTarget, "xen", targetKB, "negative", .text("-1\n"), says: "is not a number"),
    .init(
      .xenTarget, "xen", targetKB, "directory", .directory, says: "is a directory" + notRegular),
    // A virtio sysfs attribute, read by discovery.
    .init(
      .virtioAttribute, "virtio-6.18", virtioDevice, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    // The firmware memory map: an entry spanning all 2^64 bytes.
    .init(
      .firmwareMemmap, "virtio-6.18", memmapEnd, "overflow", .text("0xffffffffffffffff\n"),
      says: "System RAM entries add up to more than 64 bits", names: "/sys/firmware/memmap"),
    .init(
      .firmwareMemmap, "virtio-6.18", memmapEnd, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    // Not kernel files, but read the same way.
    .init(.stateFile, "none", stateFile, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(.configFile, "none", configFile, "FIFO", .fifo, says: "is a FIFO" + notRegular),
    .init(.pciConfig, "none", pciConfig, "FIFO", .fifo, says: "is a FIFO" + notRegular),
  ]

  @Test("the error names the file and the problem, within seconds", arguments: cases)
  func badInput(_ c: BadInputCase) throws {
    let tree = try Fixtures.copy(c.tree)
    try Self.prepare(tree, for: c.reader)
    try Self.replace(tree, c.kernelPath, with: c.input)
    let file = tree.path(c.kernelPath)
    let named = tree.path(c.names ?? c.kernelPath)
    let root = tree.root
    let reader = c.reader
    let started = Self.now()
    let outcome = try #require(
      Self.finishes(within: 20, unblocking: c.isFIFO ? file : nil) {
        reader.failure(root: root, file: file)
      }, "hung: the read did not return (a FIFO was opened blocking?)")
    #expect(Self.now() - started < 10, "took \(Self.now() - started) s")
    let failure = try #require(outcome, "no error")
    if let path = failure.path { #expect(path == named) }
    #expect(failure.text.hasPrefix(named + ": "), "\(failure.text)")
    #expect(failure.text.contains(c.says), "\(failure.text)")
    #expect(!failure.text.contains("\n"))
    if let line = c.line {
      #expect(failure.text.hasPrefix("\(named): line \(line): "), "\(failure.text)")
    }
  }

  @Test("at least 30 cases, over every reader")
  func coverage() {
    #expect(Self.cases.count >= 30)
    let readers = Set(Self.cases.map(\.reader.rawValue))
    #expect(readers.count == 11)
  }

  @Test("every fixture tree still reads: meminfo, vmstat, status, debugfs")
  func fixturesStillParse() throws {
    for tree in Fixtures.allTrees {
      let root = Fixtures.root(tree)
      _ = try MeminfoReader.read(from: root)
      _ = try VmstatReader.read(from: root)
      _ = try ProcessStatusReader.scan(root: root)
      _ = try VmwBalloonReader.read(root: root)
      _ = try HypervBalloonReader.read(root: root)
      _ = try SysfsDiscovery(root: root).discover()
    }
  }

  @Test("file kinds are named")
  func kindNames() {
    #expect(SystemFile.kindName(S_IFBLK) == "block device")
    #expect(SystemFile.kindName(S_IFCHR) == "character device")
    #expect(SystemFile.kindName(S_IFSOCK) == "socket")
    #expect(SystemFile.kindName(S_IFIFO) == "FIFO")
    #expect(SystemFile.kindName(S_IFDIR) == "directory")
  }

  @Test("a FIFO is refused by KeptOpenFile too, and a directory by list() is named")
  func keptOpenAndList() throws {
    let tree = try TemporaryTree()
    try Self.replace(tree, "/proc/meminfo", with: .fifo)
    let file = tree.path("/proc/meminfo")
    let outcome = Self.finishes(within: 20, unblocking: file) { () -> String? in
      let kept = KeptOpenFile(FilePath(file))
      return sourceError { () throws(SourceError) in _ = try kept.refresh() }?.description
    }
    let finished = try #require(outcome, "hung")
    let text = try #require(finished)
    #expect(text == "\(file): is a FIFO; expected a regular file")
    // A FIFO where a directory belongs is not "absent".
    let listed = sourceError { () throws(SourceError) in _ = try SystemFile.list(FilePath(file)) }
    #expect(listed?.description == "\(file): is a FIFO; expected a directory")
    // A parent that is not a directory: absent, as before.
    #expect(try SystemFile.list(FilePath(file + "/x")) == nil)
  }

  /// A cut that loses only the lines after SwapTotal used to count AnonPages,
  /// Shmem, SUnreclaim, KernelStack and PageTables as 0: a limit 7.9 % too
  /// high, exit 0. Now every command refuses with one line.
  @Test(
    "meminfo cut after SwapTotal: status, limit and run refuse",
    arguments: [
      ["status"], ["limit"], ["run", "--once"],
    ])
  func truncatedMeminfoRefused(_ command: [String]) throws {
    let tree = try Fixtures.copy("virtio-6.18")
    try Self.replace(tree, "/proc/meminfo", with: .cutAfter("SwapTotal:"))
    let result = try Balloonctl.run(command + ["--root", tree.base.string])
    #expect(result.status == 1, "\(result.stderr)")
    #expect(
      result.stderr.contains("\(tree.path("/proc/meminfo")): missing \"AnonPages\""),
      "\(result.stderr)")
    #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
  }

  /// Run as `nobody` (root reads anything): a mode-000 meminfo is one line,
  /// "cannot read: Permission denied".
  @Test("an unreadable file: cannot read: Permission denied")
  func unreadable() throws {
    guard getuid() == 0 else {
      Issue.record("needs root to switch to nobody; not run")
      return
    }
    let tree = try Fixtures.copy("virtio-6.18")
    chmod(tree.base.string, 0o755)
    chmod(tree.path("/proc/meminfo"), 0)
    let result = try Balloonctl.run(["status", "--root", tree.base.string], asNobody: true)
    #expect(result.status == 1, "\(result.stderr)")
    #expect(
      result.stderr.contains("\(tree.path("/proc/meminfo")): cannot read: Permission denied"),
      "\(result.stderr)")
    #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
  }

  // MARK: Helpers

  static func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
  }

  /// `body`'s result, or nil when it did not return within `seconds`. Then a
  /// FIFO reader stuck in open() is released by opening `unblocking` for
  /// writing, so a regression fails the test instead of hanging it.
  static func finishes<T: Sendable>(
    within seconds: Int, unblocking fifo: String?, _ body: @escaping @Sendable () -> T
  ) -> T? {
    let box = ResultBox<T>()
    let job = ThreadJob { box.value = body() }
    // Its own thread, not a dispatch queue: a dispatch worker blocked in
    // open() is not replaced on a 2-core machine, and the release below
    // needs the blocked reader to be running.
    job.start()
    if job.done.wait(timeout: .now() + .seconds(seconds)) == .success { return box.value }
    if let fifo {
      // Keep releasing until the reader has gone past its open() and read().
      repeat {
        let writer = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        if writer >= 0 { close(writer) }
      } while job.done.wait(timeout: .now() + .milliseconds(100)) != .success
    } else {
      job.done.wait()
    }
    return nil
  }

  /// Files the readers need that the fixture trees lack.
  static func prepare(_ tree: TemporaryTree, for reader: BadInputReader) throws {
    switch reader {
    case .firmwareMemmap:
      try tree.write("/sys/firmware/memmap/0/start", "0x0\n")
      try tree.write("/sys/firmware/memmap/0/end", "0x1fffff\n")
      try tree.write("/sys/firmware/memmap/0/type", "System RAM\n")
      try tree.write("/sys/firmware/memmap/1/start", "0x100000\n")
      try tree.write("/sys/firmware/memmap/1/end", "0xbffdffff\n")
      try tree.write("/sys/firmware/memmap/1/type", "System RAM\n")
    case .pciConfig: try tree.mkdir("/sys/bus/pci/devices/0000:00:01.0")
    case .stateFile: try tree.mkdir("/run/balloonctl")
    case .configFile: try tree.mkdir("/etc")
    default: break
    }
  }

  static func replace(_ tree: TemporaryTree, _ kernelPath: String, with input: BadInput) throws {
    let file = tree.path(kernelPath)
    func original() throws -> [Substring] {
      let text = String(decoding: try SystemFile.readRequired(FilePath(file)), as: UTF8.self)
      return text.split(separator: "\n", omittingEmptySubsequences: false)
    }
    func index(_ lines: [Substring], _ prefix: String) throws -> Int {
      guard let index = lines.firstIndex(where: { $0.hasPrefix(prefix) }) else {
        throw FixtureError("no line \(prefix) in", file)
      }
      return index
    }
    switch input {
    case .text(let text):
      tree.remove(kernelPath)
      try tree.write(kernelPath, text)
      return
    case .cutAfter(let prefix):
      let lines = try original()
      try tree.write(
        kernelPath, lines[...(try index(lines, prefix))].joined(separator: "\n") + "\n")
      return
    case .cutInside(let prefix, let keep):
      let lines = try original()
      let at = try index(lines, prefix)
      let head = lines[..<at].map { $0 + "\n" }.joined()
      try tree.write(kernelPath, head + lines[at].prefix(keep))
      return
    case .removeLine(let prefix):
      var lines = try original()
      lines.remove(at: try index(lines, prefix))
      try tree.write(kernelPath, lines.joined(separator: "\n"))
      return
    case .repeatLine(let prefix):
      let lines = try original()
      let line = lines[try index(lines, prefix)]
      try tree.write(kernelPath, lines.joined(separator: "\n") + line + "\n")
      return
    case .replaceLine(let prefix, let replacement):
      var lines = try original()
      lines[try index(lines, prefix)] = Substring(replacement)
      try tree.write(kernelPath, lines.joined(separator: "\n"))
      return
    case .append(let text):
      let lines = try original()
      try tree.write(kernelPath, lines.joined(separator: "\n") + text)
      return
    default: break
    }
    // The file-type cases replace the file (or create it: state, config).
    tree.remove(kernelPath)
    try tree.write(kernelPath, "")
    tree.remove(kernelPath)
    switch input {
    case .fifo:
      guard mkfifo(file, 0o644) == 0 else { throw FixtureError("mkfifo", file) }
    case .directory: try tree.mkdir(kernelPath)
    case .symlinkLoop: try tree.symlink(kernelPath, to: FilePath(file).lastComponent!.string)
    case .characterDevice: try tree.symlink(kernelPath, to: "/dev/null")
    case .socket:
      let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
      guard fd >= 0 else { throw FixtureError("socket", file) }
      defer { close(fd) }
      var address = sockaddr_un()
      address.sun_family = sa_family_t(AF_UNIX)
      let bytes = Array(file.utf8)
      guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
        throw FixtureError("socket path too long", file)
      }
      withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (offset, byte) in bytes.enumerated() { raw[offset] = byte }
      }
      let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
      }
      guard bound == 0 else { throw FixtureError("bind", file) }
    case .hugeFile, .hugeLine:
      // 2 MiB of real bytes (the reader stops at 1 MiB), then a hole to 100 MB.
      let line: [UInt8] =
        if case .hugeLine = input {
          Array("MemTotal: ".utf8) + [UInt8](repeating: 0x31, count: 2 << 20)
        } else {
          Array(repeatElement(Array("Filler: 1 kB\n".utf8), count: (2 << 20) / 13).joined())
        }
      try tree.write(kernelPath, line)
      guard truncate(file, 100_000_000) == 0 else { throw FixtureError("truncate", file) }
    default: break
    }
  }
}
