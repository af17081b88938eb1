import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The built binary's `status --check`, `--watch`, colour on a real
/// pseudo-terminal, the locale's bar and `--help` at 80 columns.
@Suite("balloonctl status on a terminal, --check and --watch")
struct StatusTerminalCommandTests {
  static let utf8 = ["LANG=C.UTF-8"]

  // MARK: --check

  struct CheckRun: Sendable, CustomTestStringConvertible {
    var tree: String
    var status: Int32
    var label: String
    var testDescription: String { tree }
  }

  static let checkRuns: [CheckRun] = [
    .init(tree: "vmw-6.x", status: 0, label: "OK"),
    .init(tree: "none", status: 0, label: "OK"),
    .init(tree: "virtio-6.18", status: 1, label: "WARNING"),
    .init(tree: "xen", status: 0, label: "OK"),
    .init(tree: Self.xenOverLimit, status: 2, label: "CRITICAL"),
  ]

  /// The xen tree with the host asking for 2 GiB of the domain's 3 GiB
  /// (target_kb 1 GiB): a target far over the limit, so CRITICAL and red.
  static let xenOverLimit = "xen, the host asks 2 GiB"

  static func treeRoot(_ tree: String) throws -> (root: String, keep: TemporaryTree?) {
    guard tree == xenOverLimit else { return (Fixtures.directory(tree).string, nil) }
    let copy = try Fixtures.copy("xen")
    try copy.write("/sys/devices/system/xen_memory/xen_memory0/target_kb", "1048576\n")
    try copy.write("/sys/devices/system/xen_memory/xen_memory0/target", "1073741824\n")
    return (copy.base.string, copy)
  }

  @Test(
    "status --check: one line and the plugin's exit status; plain status exits 0",
    arguments: checkRuns)
  func check(_ run: CheckRun) throws {
    let (root, keep) = try Self.treeRoot(run.tree)
    defer { withExtendedLifetime(keep) {} }
    let result = try Balloonctl.run(["status", "--check", "--root", root])
    #expect(result.status == run.status, "\(result.stdout)\(result.stderr)")
    let lines = result.stdout.split(separator: "\n")
    #expect(lines.count == 1, "\(result.stdout)")
    #expect(lines.first?.hasPrefix("BALLOONCTL \(run.label) - ") == true, "\(result.stdout)")
    #expect(result.stdout.contains(" | ") && result.stdout.contains("limit="))
    #expect(try Balloonctl.run(["status", "--root", root]).status == 0)
  }

  @Test("status --check with a hold in the daemon's state: WARNING, said plainly")
  func checkHeld() throws {
    let tree = try Fixtures.copy("virtio-6.18")
    try tree.write("/run/balloonctl/state.json", StateDocuments.valid)
    let result = try Balloonctl.run(["status", "--check", "--root", tree.base.string])
    #expect(result.status == 1, "\(result.stderr)")
    #expect(
      result.stdout.hasPrefix("BALLOONCTL WARNING - virtio0 held: balloon "), "\(result.stdout)")
    let text = try Balloonctl.run(["status", "--root", tree.base.string], environment: Self.utf8)
    #expect(text.status == 0)
    #expect(
      text.stdout.contains(
        "\n  held      at 1.0 GiB, under the limit; the host's target is unknown\n"),
      "\(text.stdout)")
    #expect(
      text.stdout.contains(
        "\nHELD: virtio0 is released and held by the daemon; nothing is over the limit."))
  }

  @Test("status --check on an unreadable kernel file or state file: UNKNOWN, exit 3")
  func checkUnknown() throws {
    let broken = try Fixtures.copy("virtio-6.18")
    try broken.write("/proc/meminfo", "MemTotal: lots\n")
    let result = try Balloonctl.run(["status", "--check", "--root", broken.base.string])
    #expect(result.status == 3, "\(result.stderr)")
    #expect(
      result.stdout.hasPrefix("BALLOONCTL UNKNOWN - \(broken.path("/proc/meminfo")): "),
      "\(result.stdout)")
    #expect(result.stdout.split(separator: "\n").count == 1)

    let state = try Fixtures.copy("virtio-6.18")
    try state.write("/run/balloonctl/state.json", "{")
    let bad = try Balloonctl.run(["status", "--check", "--root", state.base.string])
    #expect(bad.status == 3, "\(bad.stderr)")
    #expect(
      bad.stdout.hasPrefix("BALLOONCTL UNKNOWN - \(state.path("/run/balloonctl/state.json")): "),
      "\(bad.stdout)")
  }

  @Test("--check, --watch and --json are refused together; --watch out of range is refused")
  func refusals() throws {
    let root = Fixtures.directory("vmw-6.x").string
    for arguments in [
      ["--check", "--json"], ["--check", "--watch"], ["--watch", "5", "--json"],
      ["--watch", "0"], ["--watch", "99999"],
    ] {
      let result = try Balloonctl.run(["status"] + arguments + ["--root", root])
      #expect(result.status == 64, "\(arguments): \(result.stderr)")
      #expect(result.stdout.isEmpty)
    }
  }

  // MARK: the locale's bar, and 80 columns from the binary

  @Test("a UTF-8 locale gets block characters, the C locale an ASCII bar; both fit 80 columns")
  func localeBar() throws {
    let root = Fixtures.directory("vmw-6.x").string
    let utf8 = try Balloonctl.run(["status", "--root", root], environment: Self.utf8)
    #expect(utf8.stdout.contains("█"), "\(utf8.stdout)")
    let c = try Balloonctl.run(["status", "--root", root], environment: ["LANG=C"])
    let bar = try #require(c.stdout.split(separator: "\n").first { $0.hasPrefix("  [") })
    #expect(bar.unicodeScalars.allSatisfy { $0.isASCII }, "\(bar)")
    #expect(bar.contains("#") && bar.contains("="))
    for result in [utf8, c] {
      #expect(TerminalText.widestLine(result.stdout) <= 80, "\(result.stdout)")
    }
  }

  @Test("--help at 80 columns: no example wraps back to column 0, no line but USAGE is wider")
  func helpAt80() throws {
    for command in [[], ["status"], ["limit"], ["run"]] {
      let result = try Balloonctl.run(command + ["--help"], environment: ["COLUMNS=80"])
      #expect(result.status == 0)
      let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
      // ArgumentParser's own USAGE line is the one it never wraps.
      let wide = lines.filter { TerminalText.columns(String($0)) > 80 && !$0.hasPrefix("USAGE:") }
      #expect(wide.isEmpty, "\(command): \(wide)")
      guard let start = lines.firstIndex(where: { $0.hasSuffix("Examples:") }) else {
        Issue.record("\(command): no Examples")
        continue
      }
      let examples = lines[(start + 1)...].prefix { !$0.isEmpty }
      #expect(examples.count >= 3, "\(command)")
      for line in examples {
        // An example, indented under "Examples:"; a wrapped one would
        // continue at column 0.
        #expect(line.hasPrefix("  "), "\(command): \(line)")
        #expect(line.contains("balloonctl"), "\(command): \(line)")
      }
    }
  }

  // MARK: --watch

  /// Reads `fd` until `text` has appeared `count` times, for up to 60 s.
  static func read(_ fd: Int32, until text: String, count: Int) -> String {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = Clock.boottime() + 60
    while Clock.boottime() < deadline {
      let seen = String(decoding: bytes, as: UTF8.self).ranges(of: text).count
      if seen >= count { break }
      var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      guard poll(&descriptor, 1, 1000) >= 0 else { break }
      guard descriptor.revents != 0 else { continue }
      let got = Glibc.read(fd, &buffer, buffer.count)
      if got <= 0 { break }
      bytes += buffer[0..<got]
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  @Test(
    "status --watch without a terminal: frames separated by a blank line; SIGTERM ends it, exit 0")
  func watchFrames() throws {
    let tree = try Fixtures.copy("vmw-6.x")
    let running = try Balloonctl.start(
      ["status", "--watch", "0.2", "--root", tree.base.string], environment: Self.utf8)
    let title = "balloonctl status --watch: every 0.2 s"
    let first = Self.read(running.stdout, until: title, count: 1)
    // The balloon deflates between frames: the next frame and its history show it.
    let vmmemctl = String(
      decoding: try Fixtures.bytes("vmw-6.x", "/sys/kernel/debug/vmmemctl"), as: UTF8.self)
    try tree.write(
      "/sys/kernel/debug/vmmemctl",
      vmmemctl.replacing(/current\s*:\s*\d+/, with: "current               :                0"))
    let more = Self.read(running.stdout, until: title, count: 2)
    running.signal(SIGTERM)
    let result = running.wait()
    #expect(result.status == 0, "\(result.stderr)")
    let output = first + more + result.stdout
    #expect(output.ranges(of: "\n\n" + title).count >= 2, "\(output)")
    #expect(output.hasPrefix(title))
    #expect(!output.contains("\u{1B}"), "no escape sequences without a terminal")
    #expect(output.contains("  history   "))
    #expect(output.contains("  current   0 B"), "\(output)")
    #expect(TerminalText.widestLine(output) <= 80)
  }

  @Test("status --watch with no value, then another option: every 2 s")
  func watchDefault() throws {
    let root = Fixtures.directory("none").string
    let running = try Balloonctl.start(["status", "--watch", "--root", root])
    let first = Self.read(running.stdout, until: "\n\nOK: no balloon", count: 1)
    running.signal(SIGINT)
    let result = running.wait()
    #expect(result.status == 0, "\(result.stderr)")
    #expect(first.hasPrefix("balloonctl status --watch: every 2 s, "), "\(first)")
    #expect(first.contains("Balloon   none found"))
  }

  /// Starts the binary with its stdout on a new pseudo-terminal; returns the
  /// master side to read what it drew.
  static func startOnTerminal(_ arguments: [String], environment: [String]) throws -> (
    pid: pid_t, master: Int32
  ) {
    // posix_openpt, unlockpt and ptsname by hand: Glibc's module does not
    // export them. TIOCSPTLCK and TIOCGPTN are _IOW/_IOR('T', 0x31/0x30, int).
    let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
    var unlock: Int32 = 0
    var number: Int32 = 0
    guard master >= 0, ioctl(master, 0x4004_5431, &unlock) == 0,
      ioctl(master, 0x8004_5430, &number) == 0
    else { throw FixtureError("/dev/ptmx", "") }
    let name = "/dev/pts/\(number)"
    let slave = open(name, O_RDWR | O_NOCTTY)
    guard slave >= 0 else { throw FixtureError("open", name) }
    defer { close(slave) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, slave, 1)
    let argv: [UnsafeMutablePointer<CChar>?] =
      ([Balloonctl.binary] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let env: [UnsafeMutablePointer<CChar>?] =
      (["PATH=/usr/bin:/bin"] + environment).map { strdup($0) } + [nil]
    defer { env.forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, Balloonctl.binary, &actions, nil, argv, env) == 0 else {
      throw FixtureError("posix_spawn", Balloonctl.binary)
    }
    return (pid, master)
  }

  static func finish(_ pid: pid_t, master: Int32) -> (status: Int32, output: String) {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // What is left on the terminal after the exit (EIO once it is drained).
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      var descriptor = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
      guard poll(&descriptor, 1, 200) > 0 else { break }
      let got = Glibc.read(master, &buffer, buffer.count)
      if got <= 0 { break }
      bytes += buffer[0..<got]
    }
    close(master)
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, String(decoding: bytes, as: UTF8.self))
  }

  @Test(
    "on a terminal: red OVER LIMIT, none with NO_COLOR or TERM=dumb, and an empty NO_COLOR does not count",
    arguments: [
      ([String](), true), (["NO_COLOR=1"], false), (["NO_COLOR="], true), (["TERM=dumb"], false),
    ])
  func colourOnTerminal(_ environment: [String], colour: Bool) throws {
    let (root, keep) = try Self.treeRoot(Self.xenOverLimit)
    defer { withExtendedLifetime(keep) {} }
    let (pid, master) = try Self.startOnTerminal(
      ["status", "--root", root], environment: Self.utf8 + environment)
    let output = Self.read(master, until: "Daemon", count: 1)
    let result = Self.finish(pid, master: master)
    #expect(result.status == 0)
    #expect(output.contains("OVER LIMIT"), "\(output)")
    #expect(output.contains("\u{1B}[1;31mOVER LIMIT\u{1B}[0m") == colour, "\(output)")
    #expect(output.contains("\u{1B}") == colour)
  }

  @Test(
    "status --watch on a terminal: the alternate screen, redrawn in place; SIGINT and SIGTERM restore the screen and cursor",
    arguments: [SIGINT, SIGTERM])
  func watchOnTerminal(_ signal: Int32) throws {
    let root = Fixtures.directory("vmw-6.x").string
    let (pid, master) = try Self.startOnTerminal(
      ["status", "--watch", "0.2", "--root", root], environment: Self.utf8)
    let title = "balloonctl status --watch: every 0.2 s"
    var output = Self.read(master, until: title, count: 2)
    kill(pid, signal)
    let result = Self.finish(pid, master: master)
    output += result.output
    #expect(result.status == 0)
    #expect(output.hasPrefix(TerminalScreen.enter), "\(output.debugDescription.prefix(200))")
    #expect(output.contains("\u{1B}[H" + title), "each frame starts at the top-left corner")
    #expect(output.contains("\u{1B}[J"))
    #expect(output.hasSuffix(TerminalScreen.leave), "\(output.debugDescription.suffix(200))")
  }
}
