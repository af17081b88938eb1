import BalloonKit
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A temporary directory that holds a state directory, and the files
/// planted in it. Paths are absolute.
final class StateSandbox {
  let tree: TemporaryTree
  var base: String { tree.base.string }
  /// The state directory (not created: each test decides what it is).
  var stateDir: String { base + "/state" }
  var store: StateStore { StateStore(directory: FilePath(stateDir)) }
  /// A file outside the state directory that a planted link points at.
  var victim: String { base + "/victim" }

  init() throws { tree = try TemporaryTree() }

  func makeStateDir(mode: mode_t = 0o755) throws {
    guard mkdir(stateDir, mode) == 0, chmod(stateDir, mode) == 0 else {
      throw FixtureError("mkdir", stateDir)
    }
  }

  func write(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
    try Self.writeFile(path, text, mode: mode)
  }

  static func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw FixtureError("open", path) }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard Glibc.write(fd, bytes, bytes.count) == bytes.count, fchmod(fd, mode) == 0 else {
      throw FixtureError("write", path)
    }
  }

  func read(_ path: String) -> String? {
    guard let fd = Optional(open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)), fd >= 0 else {
      return nil
    }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    let count = Glibc.read(fd, &buffer, buffer.count)
    return count < 0 ? nil : String(decoding: buffer[0..<count], as: UTF8.self)
  }

  func link(_ path: String, to target: String) throws {
    guard symlink(target, path) == 0 else { throw FixtureError("symlink", path) }
  }

  func entries(_ directory: String) -> [String] {
    ((try? SystemFile.list(FilePath(directory))) ?? nil)?.sorted() ?? []
  }

  func lstatMode(_ path: String) -> mode_t? {
    var info = stat()
    return lstat(path, &info) == 0 ? info.st_mode : nil
  }

  static func sampleState() -> DaemonState {
    var state = DaemonState(pid: 4242, mode: "enforce", intervalMilliseconds: 1000, startedAt: 5)
    var hold = HoldState(backoffSeconds: 30)
    hold.held = true
    hold.since = 1
    hold.reason = "over"
    state.update(BalloonRecord(kind: .virtio, name: "virtio0", sysPath: "/sys/x", hold: hold))
    return state
  }
}

func message(_ body: () throws -> Void) -> String {
  do {
    try body()
    return "no error"
  } catch {
    return "\(error)"
  }
}

@Suite("State directory, state file, lock and metrics file: safe on any file system")
struct StateFileSafetyTests {
  static let asRoot = geteuid() == 0

  // MARK: Writing the state file

  @Test(
    "save: a new file with a unique name, synced, renamed; no temporary left; 0644 whatever the umask"
  )
  func saveIsAtomicAndClean() throws {
    let box = try StateSandbox()
    let old = umask(0o077)
    defer { umask(old) }
    try box.store.save(StateSandbox.sampleState())
    #expect(box.entries(box.stateDir) == ["state.json"])
    #expect(box.lstatMode(box.stateDir + "/state.json").map { $0 & 0o7777 } == 0o644)
    #expect(box.lstatMode(box.stateDir).map { $0 & 0o7777 } == 0o755)
    #expect(try box.store.load() == StateSandbox.sampleState())
  }

  @Test("save: a symlink planted at the old temporary name or at state.json redirects nothing")
  func plantedLinksRedirectNothing() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    try box.write(box.victim, "precious\n")
    try box.link(box.stateDir + "/state.json.tmp", to: box.victim)
    try box.store.save(StateSandbox.sampleState())
    #expect(box.read(box.victim) == "precious\n")
    // state.json itself a link: the rename replaces the link, not its target.
    unlink(box.stateDir + "/state.json")
    try box.link(box.stateDir + "/state.json", to: box.victim)
    try box.store.save(StateSandbox.sampleState())
    #expect(box.read(box.victim) == "precious\n")
    #expect(box.lstatMode(box.stateDir + "/state.json").map { $0 & S_IFMT } == S_IFREG)
  }

  @Test("a state directory that is a symlink is refused for writing, locking and reading")
  func stateDirSymlink() throws {
    let box = try StateSandbox()
    try box.tree.mkdir("/elsewhere")
    try box.link(box.stateDir, to: box.base + "/elsewhere")
    for error in [
      message { try box.store.save(StateSandbox.sampleState()) },
      message { _ = try InstanceLock(directory: FilePath(box.stateDir)) },
      message { _ = try box.store.load() },
      message { _ = try box.store.loadForResume(moveAside: true) },
    ] {
      #expect(error.hasPrefix(box.stateDir + ": a symbolic link"), "\(error)")
    }
    #expect(box.entries(box.base + "/elsewhere").isEmpty)
  }

  @Test("a state directory writable by group or others is refused")
  func stateDirWorldWritable() throws {
    let box = try StateSandbox()
    try box.makeStateDir(mode: 0o777)
    for error in [
      message { try box.store.save(StateSandbox.sampleState()) },
      message { _ = try InstanceLock(directory: FilePath(box.stateDir)) },
      message { _ = try box.store.load() },
    ] {
      #expect(
        error
          == "\(box.stateDir): writable by group or others (mode 0777); expected no write access but the owner's",
        "\(error)")
    }
    #expect(box.entries(box.stateDir).isEmpty)
  }

  @Test(
    "a state directory or state file owned by another user is refused (real only as root: chown)",
    .enabled(if: StateFileSafetyTests.asRoot, "chown needs root"))
  func foreignOwner() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    try box.store.save(StateSandbox.sampleState())
    // The file of another user in our directory.
    #expect(chown(box.stateDir + "/state.json", 12345, 12345) == 0)
    let file = message { _ = try box.store.load() }
    #expect(file == "\(box.stateDir)/state.json: owned by uid 12345; expected uid 0", "\(file)")
    // The directory of another user.
    #expect(chown(box.stateDir, 12345, 12345) == 0)
    for error in [
      message { try box.store.save(StateSandbox.sampleState()) },
      message { _ = try InstanceLock(directory: FilePath(box.stateDir)) },
      message { _ = try box.store.load() },
    ] {
      #expect(error == "\(box.stateDir): owned by uid 12345; expected uid 0", "\(error)")
    }
  }

  @Test("a state directory that is a regular file: \"<dir>: not a directory\" everywhere")
  func stateDirIsAFile() throws {
    let box = try StateSandbox()
    try box.write(box.stateDir, "not a directory\n")
    for error in [
      message { try box.store.save(StateSandbox.sampleState()) },
      message { _ = try InstanceLock(directory: FilePath(box.stateDir)) },
      message { _ = try box.store.load() },
      message { _ = try box.store.loadForResume(moveAside: true) },
    ] {
      #expect(error == "\(box.stateDir): not a directory", "\(error)")
    }
    #expect(box.read(box.stateDir) == "not a directory\n")
  }

  @Test("a write failure says cannot write, not cannot read")
  func writeFailureSaysWrite() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    // A directory where state.json belongs: the rename over it fails.
    #expect(mkdir(box.stateDir + "/state.json", 0o755) == 0)
    #expect(mkdir(box.stateDir + "/state.json/x", 0o755) == 0)
    let error = message { try box.store.save(StateSandbox.sampleState()) }
    #expect(error.hasPrefix("\(box.stateDir)/state.json: cannot write: "), "\(error)")
    #expect(box.entries(box.stateDir) == ["state.json"])  // the temporary file removed
  }

  // MARK: The lock

  @Test("the lock: a planted symlink (dangling or not) is refused and nothing is created")
  func lockSymlink() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    try box.link(box.stateDir + "/lock", to: box.victim)
    let dangling = message { _ = try InstanceLock(directory: FilePath(box.stateDir)) }
    #expect(dangling.hasPrefix("\(box.stateDir)/lock: is a symbolic link"), "\(dangling)")
    #expect(box.read(box.victim) == nil)
    try box.write(box.victim, "precious\n")
    let present = message { _ = try InstanceLock(directory: FilePath(box.stateDir)) }
    #expect(present.hasPrefix("\(box.stateDir)/lock: is a symbolic link"), "\(present)")
    #expect(box.read(box.victim) == "precious\n")
  }

  @Test("the lock: a hard link to another file, a FIFO or a directory is refused")
  func lockNotOurs() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    try box.write(box.victim, "precious\n")
    #expect(Glibc.link(box.victim, box.stateDir + "/lock") == 0)
    let hard = message { _ = try InstanceLock(directory: FilePath(box.stateDir)) }
    #expect(hard == "\(box.stateDir)/lock: has 2 hard links; expected a file of its own", "\(hard)")
    unlink(box.stateDir + "/lock")
    #expect(mkfifo(box.stateDir + "/lock", 0o600) == 0)
    let fifo = message { _ = try InstanceLock(directory: FilePath(box.stateDir)) }
    #expect(fifo == "\(box.stateDir)/lock: is a FIFO; expected a regular file", "\(fifo)")
    unlink(box.stateDir + "/lock")
    let lock = try InstanceLock(directory: FilePath(box.stateDir))
    #expect(try lock.acquire())
    #expect(try InstanceLock(directory: FilePath(box.stateDir)).acquire() == false)
  }

  // MARK: Reading the state file

  @Test("state.json a FIFO: an error at once, never a hang; a directory or symlink: an error")
  func stateFileWrongType() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    let file = box.stateDir + "/state.json"
    #expect(mkfifo(file, 0o644) == 0)
    #expect(message { _ = try box.store.load() } == "\(file): is a FIFO; expected a regular file")
    unlink(file)
    #expect(mkdir(file, 0o755) == 0)
    #expect(message { _ = try box.store.load() } == "\(file): is a directory; expected a regular file")
    rmdir(file)
    try box.write(box.victim, StateSandbox.sampleState().json().rendered())
    try box.link(file, to: box.victim)
    #expect(
      message { _ = try box.store.load() }
        == "\(file): is a symbolic link to \(box.victim); expected a regular file")
    unlink(file)
    try box.write(file, StateSandbox.sampleState().json().rendered(), mode: 0o666)
    #expect(
      message { _ = try box.store.load() }
        == "\(file): writable by group or others (mode 0666); expected no write access but the owner's"
    )
    unlink(file)
    try box.write(file, String(repeating: " ", count: StateStore.sizeLimit + 1))
    #expect(
      message { _ = try box.store.load() } == "\(file): larger than \(StateStore.sizeLimit) bytes")
  }

  // MARK: Daemon start: corrupt state moved aside

  @Test(
    "daemon start: a corrupt state file is moved aside and the daemon starts clean",
    arguments: StateDocuments.all)
  func corruptMovedAside(_ document: CorruptState) throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    let file = box.stateDir + "/state.json"
    try box.write(file, document.text)
    // status (read-only) moves nothing.
    #expect(throws: SourceError.self) { try box.store.load() }
    #expect(box.read(file) == document.text)
    let resume = try box.store.loadForResume(moveAside: true)
    #expect(resume.state == nil)
    #expect(
      resume.problem.map { "\($0)".contains(document.names) } == true,
      "\(String(describing: resume.problem))")
    let moved = try #require(resume.movedTo)
    #expect(moved.lastComponent?.string.hasPrefix("state.json.corrupt-") == true)
    #expect(box.read(moved.string) == document.text)
    #expect(box.lstatMode(file) == nil)
    // The daemon then writes a fresh state where the corrupt one was.
    try box.store.save(StateSandbox.sampleState())
    #expect(try box.store.load() == StateSandbox.sampleState())
  }

  @Test(
    "daemon start: a FIFO, a directory or a foreign symlink as state.json is moved aside too; twice in a second keeps both"
  )
  func wrongTypeMovedAside() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    let file = box.stateDir + "/state.json"
    #expect(mkfifo(file, 0o644) == 0)
    let first = try box.store.loadForResume(moveAside: true)
    #expect(first.problem.map { "\($0)" } == "\(file): is a FIFO; expected a regular file")
    #expect(mkdir(file, 0o755) == 0)
    let second = try box.store.loadForResume(moveAside: true)
    #expect(second.problem.map { "\($0)" } == "\(file): is a directory; expected a regular file")
    try box.link(file, to: box.victim)
    let third = try box.store.loadForResume(moveAside: true)
    #expect(third.problem != nil)
    let moved = box.entries(box.stateDir)
    #expect(
      moved.count == 3 && moved.allSatisfy { $0.hasPrefix("state.json.corrupt-") }, "\(moved)")
    // Without the lock (run --once in report mode) nothing is moved.
    try box.write(file, "garbage")
    let readOnly = try box.store.loadForResume(moveAside: false)
    #expect(readOnly.problem != nil && readOnly.movedTo == nil && readOnly.state == nil)
    #expect(box.read(file) == "garbage")
    // No state file, no directory: a first start.
    let fresh = try StateSandbox()
    let none = try fresh.store.loadForResume(moveAside: true)
    #expect(none.state == nil && none.problem == nil)
  }

  // MARK: Metrics file

  @Test("metrics: a planted .tmp symlink redirects nothing; the file is replaced and synced")
  func metricsPlantedLink() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    let (report, state) = try Self.tickReport()
    try box.write(box.victim, "precious\n")
    let path = box.stateDir + "/balloonctl.prom"
    try box.link(path + ".tmp", to: box.victim)
    try MetricsFile(path: FilePath(path)).write(report, state: state)
    #expect(box.read(box.victim) == "precious\n")
    #expect(box.read(path)?.contains("balloonctl_limit_bytes") == true)
    #expect(box.entries(box.stateDir) == ["balloonctl.prom", "balloonctl.prom.tmp"])
  }

  @Test("metrics: a directory that is a symlink or writable by others is refused; cannot write")
  func metricsDirectoryChecked() throws {
    let box = try StateSandbox()
    let (report, state) = try Self.tickReport()
    try box.makeStateDir(mode: 0o1777)
    let open = message {
      try MetricsFile(path: FilePath(box.stateDir + "/m.prom")).write(report, state: state)
    }
    #expect(open.hasPrefix("\(box.stateDir): writable by group or others (mode 1777)"), "\(open)")
    try box.link(box.base + "/link", to: box.stateDir)
    let link = message {
      try MetricsFile(path: FilePath(box.base + "/link/m.prom")).write(report, state: state)
    }
    #expect(link.hasPrefix("\(box.base)/link: a symbolic link"), "\(link)")
    let absent = message {
      try MetricsFile(path: FilePath(box.base + "/nowhere/m.prom")).write(report, state: state)
    }
    #expect(absent == "\(box.base)/nowhere: cannot write: No such file or directory", "\(absent)")
    #expect(box.entries(box.stateDir).isEmpty)
  }

  static func tickReport() throws -> (TickReport, DaemonState) {
    let controller = Controller(
      root: Fixtures.root("virtio-6.18"), config: ControllerConfig(mode: .report), actuators: nil,
      probe: nil, store: nil, previous: nil, pid: 1,
      logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
    return (try controller.tick(), controller.state)
  }
}
