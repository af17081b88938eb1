import BalloonKit
import SystemPackage
import Testing

/// The built `balloonctl` run on fixture trees: the documented JSON, the
/// decisions, exit statuses and one-line errors. Reads only; with --root
/// nothing is written anywhere.
@Suite("balloonctl command line")
struct CommandLineTests {
  func json(_ arguments: [String]) throws -> JSONValue {
    let result = try Balloonctl.run(arguments)
    #expect(result.status == 0, "\(arguments): \(result.stderr)")
    return try JSONParser.parse(result.stdout)
  }

  func limit(of root: String) throws -> UInt64 {
    try #require(try json(["status", "--json", "--root", root])["limit"]?["bytes"]?.uint64)
  }

  @Test("status --json has the documented shape, with null for unknown")
  func statusShape() throws {
    let doc = try json(["status", "--json", "--root", Fixtures.directory("virtio-6.18").string])
    let balloon = try #require(doc["balloons"]?.array?.first)
    for key in [
      "kind", "name", "driver", "bound", "current_bytes", "target_bytes", "current_source",
      "target_source", "features",
    ] {
      #expect(balloon[key] != nil, "balloon.\(key)")
    }
    #expect(balloon["kind"] == .string("virtio"))
    #expect(balloon["target_bytes"] == .null)
    #expect(balloon["target_source"] == .null)
    let memory = try #require(doc["memory"])
    for key in ["total_bytes", "guest_bytes", "swap_total_bytes", "pinned_bytes"] {
      #expect(memory[key]?.uint64 != nil, "memory.\(key)")
    }
    for key in [
      "hugetlb_bytes", "locked_bytes", "dma_pinned_bytes", "kernel_bytes", "unswappable_bytes",
    ] {
      #expect(memory["pinned"]?[key]?.uint64 != nil, "memory.pinned.\(key)")
    }
    let limit = try #require(doc["limit"])
    #expect(limit["fraction"]?.double == 0.65)
    #expect(limit["bounded_by"]?.string == "fraction" || limit["bounded_by"]?.string == "swap")
    #expect(limit["maxmemctl_mb"]?.uint64 == (limit["bytes"]?.uint64 ?? 0) >> 20)
    #expect(doc["over_limit"]?.bool == false)
  }

  @Test("the KB example tree gives sched.mem.maxmemctl = 1331")
  func kbExample() throws {
    let root = Fixtures.directory("kb-example").string
    let doc = try json(["status", "--json", "--root", root])
    #expect(doc["limit"]?["maxmemctl_mb"]?.uint64 == 1331)
    let text = try Balloonctl.run(["limit", "--root", root])
    #expect(text.status == 0)
    #expect(text.stdout.contains("sched.mem.maxmemctl = \"1331\""))
  }

  // MARK: run --once --mode report --root DIR --json, each kind

  @Test("virtio: under the limit → none; over (current, target unknown) → release")
  func virtioOnce() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    let root = guest.tree.base.string
    let under = try json(["run", "--once", "--mode", "report", "--root", root, "--json"])
    #expect(under["decision"]?["action"] == .string("none"))
    #expect(under["decision"]?["balloon"] == .string("virtio0"))
    try guest.setVirtioBalloon(bytes: try limit(of: root) + (16 << 20))
    let over = try json(["run", "--once", "--mode", "report", "--root", root, "--json"])
    #expect(over["decision"]?["action"] == .string("release"))
    #expect(over["decision"]?["balloon"] == .string("virtio0"))
    #expect(over["over_limit"]?.bool == true)
    #expect(over["limit"]?["bytes"]?.uint64 != nil)
  }

  @Test("VMware: target over the limit → release")
  func vmwareOnce() throws {
    let guest = try SimulatedGuest("vmw-6.x")
    let root = guest.tree.base.string
    let frames = (try limit(of: root) + (128 << 20)) / 4096
    try guest.set("/sys/kernel/debug/vmmemctl", key: "target", to: " \(frames)")
    let doc = try json(["run", "--once", "--mode", "report", "--root", root, "--json"])
    #expect(doc["decision"]?["action"] == .string("release"))
    #expect(doc["decision"]?["balloon"] == .string("vmw_balloon"))
    #expect(doc["balloons"]?.array?.first?["target_bytes"]?.uint64 == frames * 4096)
  }

  @Test("Xen: target over the limit → set_target with the target_kb that holds it at the limit")
  func xenOnce() throws {
    let guest = try SimulatedGuest("xen")
    let root = guest.tree.base.string
    let limit = try limit(of: root)
    let device = "/sys/devices/system/xen_memory/xen_memory0"
    func kib(_ file: String) throws -> UInt64 {
      try #require(UInt64(try guest.text(device + "/" + file).trimmingSuffixNewline))
    }
    // The grant a fresh process sees: the fixture's target is below its
    // current reservation (docs/kernel-interfaces.md §3.1).
    let reservation = try kib("info/current_kb")
    try guest.tree.write(device + "/target_kb", "\(reservation - limit / 1024 - 262_144)\n")
    let doc = try json(["run", "--once", "--mode", "report", "--root", root, "--json"])
    #expect(doc["decision"]?["action"] == .string("set_target"))
    #expect(doc["decision"]?["balloon"] == .string("xen_memory0"))
    let targetKiB = try #require(doc["decision"]?["target_kb"]?.uint64)
    #expect(targetKiB == (reservation * 1024 - limit + 1023) / 1024)
    // report mode: the file is untouched.
    #expect(try kib("target_kb") == reservation - limit / 1024 - 262_144)
  }

  @Test("Hyper-V: over the limit → alert (no lever)")
  func hypervOnce() throws {
    let guest = try SimulatedGuest("hyperv")
    let root = guest.tree.base.string
    try guest.set(
      "/sys/kernel/debug/hv-balloon", key: "pages_ballooned",
      to: " \(try limit(of: root) * 5 / 4096)")
    let doc = try json(["run", "--once", "--mode", "report", "--root", root, "--json"])
    #expect(doc["decision"]?["action"] == .string("alert"))
    #expect(doc["decision"]?["reason"]?.string?.contains("Hyper-V") == true)
  }

  @Test("no balloon: decision none, balloon null")
  func noBalloonOnce() throws {
    let doc = try json([
      "run", "--once", "--mode", "report", "--root", Fixtures.directory("none").string, "--json",
    ])
    #expect(doc["balloons"]?.array?.isEmpty == true)
    #expect(doc["decision"]?["action"] == .string("none"))
    #expect(doc["decision"]?["balloon"] == .null)
  }

  // MARK: refusals and errors: one line, non-zero

  struct Refusal: Sendable, CustomTestStringConvertible {
    var arguments: [String]
    var status: Int32
    var says: String
    var testDescription: String { arguments.joined(separator: " ") }
  }

  static let refusals: [Refusal] = [
    Refusal(
      arguments: ["run", "--once", "--mode", "enforce", "--root", "ROOT"], status: 64,
      says: "only --mode report"),
    Refusal(
      arguments: ["run", "--once", "--probe-target", "--root", "ROOT"], status: 64,
      says: "--probe-target"),
    Refusal(
      arguments: ["status", "--probe-target", "--root", "ROOT"], status: 64, says: "--probe-target"),
    Refusal(
      arguments: ["run", "--interval", "0.05", "--root", "ROOT"], status: 64, says: "--interval"),
    Refusal(
      arguments: ["run", "--interval", "61", "--root", "ROOT"], status: 64, says: "--interval"),
    Refusal(arguments: ["run", "--margin", "0.9", "--root", "ROOT"], status: 64, says: "--margin"),
    Refusal(
      arguments: ["status", "--fraction", "0", "--root", "ROOT"], status: 64, says: "--fraction"),
    Refusal(
      arguments: ["status", "--fraction", "1.5", "--root", "ROOT"], status: 64, says: "--fraction"),
    Refusal(
      arguments: ["run", "--levers", "hyperv", "--root", "ROOT"], status: 64, says: "--levers"),
    Refusal(
      arguments: ["run", "--json", "--root", "ROOT"], status: 64, says: "--json goes with --once"),
    Refusal(
      arguments: ["status", "--root", "/nonexistent/dir"], status: 64, says: "no such directory"),
  ]

  @Test("refused with a one-line reason and exit 64", arguments: refusals)
  func refused(_ refusal: Refusal) throws {
    let root = Fixtures.directory("virtio-6.18").string
    let result = try Balloonctl.run(refusal.arguments.map { $0 == "ROOT" ? root : $0 })
    #expect(result.status == refusal.status, "\(result.stderr)")
    #expect(result.stderr.contains(refusal.says), "\(result.stderr)")
    #expect(result.stdout.isEmpty)
  }

  @Test("a malformed kernel file: exit 1, one line naming the file and line")
  func malformedFile() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    try guest.set("/proc/meminfo", key: "MemTotal", to: "    12x4 kB")
    let result = try Balloonctl.run(["status", "--root", guest.tree.base.string])
    #expect(result.status == 1)
    let lines = result.stderr.split(separator: "\n")
    #expect(lines.count == 1, "\(result.stderr)")
    #expect(result.stderr.contains(guest.root.path("/proc/meminfo").string))
    #expect(result.stderr.contains("line 1"))
  }

  @Test("a bad config file: exit 64, naming the file, the line and the key")
  func badConfig() throws {
    let config = try TemporaryTree()
    try config.write("/balloonctl", "# comment\nBALLOONCTL_MODE=report\nBALLOONCTL_INTERVAL=fast\n")
    let result = try Balloonctl.run([
      "run", "--once", "--config", config.path("/balloonctl"), "--root",
      Fixtures.directory("none").string,
    ])
    #expect(result.status == 64)
    #expect(result.stderr.contains(config.path("/balloonctl") + ": line 3"), "\(result.stderr)")
    #expect(result.stderr.contains("BALLOONCTL_INTERVAL"))
  }

  @Test("flags win over the config file")
  func flagsWin() throws {
    let config = try TemporaryTree()
    try config.write("/balloonctl", "BALLOONCTL_MODE=enforce\nBALLOONCTL_FRACTION=0.5\n")
    // The file asks for enforce, which --root refuses; the flag's report wins.
    let doc = try json([
      "run", "--once", "--json", "--mode", "report", "--fraction", "0.6", "--config",
      config.path("/balloonctl"),
      "--root", Fixtures.directory("kb-example").string,
    ])
    #expect(doc["mode"] == .string("report"))
    #expect(doc["limit"]?["fraction"]?.double == 0.6)
    let fromFile = try Balloonctl.run([
      "run", "--once", "--config", config.path("/balloonctl"), "--root",
      Fixtures.directory("kb-example").string,
    ])
    #expect(fromFile.status == 64)
    #expect(fromFile.stderr.contains("only --mode report"))
  }
}

// MARK: the settings file: one line on stderr, exit 64 (content) or 1 (unreadable)

extension CommandLineTests {
  /// `run --once` on a fixture tree with `--config file` and `extra` flags.
  func runWithConfig(_ file: String, _ extra: [String] = []) throws -> CommandResult {
    try Balloonctl.run(
      ["run", "--once", "--config", file] + extra + [
        "--root", Fixtures.directory("virtio-6.18").string,
      ])
  }

  func expectOneLine(_ result: CommandResult, status: Int32, _ line: String) {
    #expect(result.status == status, "\(result.stderr)")
    #expect(result.stderr == "balloonctl: " + line + "\n", "\(result.stderr)")
    #expect(result.stdout.isEmpty)
  }

  @Test("a bad settings file: one line (no usage text), exit 64")
  func badConfigOneLine() throws {
    let config = try TemporaryTree()
    try config.write("/balloonctl", "# comment\nBALLOONCTL_MODE=report\nBALLOONCTL_INTERVAL=fast\n")
    let path = config.path("/balloonctl")
    expectOneLine(
      try runWithConfig(path), status: 64,
      "\(path): line 3: BALLOONCTL_INTERVAL=\"fast\": expected seconds between ticks, 0.1 to 60")
  }

  @Test("a key set twice: one line naming both lines, exit 64")
  func duplicateKey() throws {
    let config = try TemporaryTree()
    try config.write("/balloonctl", "BALLOONCTL_MODE=report\nBALLOONCTL_MODE=report\n")
    let path = config.path("/balloonctl")
    expectOneLine(
      try runWithConfig(path), status: 64,
      "\(path): line 2: BALLOONCTL_MODE is set again (first set on line 1)")
  }

  @Test("a byte order mark before a key: one line with it escaped, exit 64")
  func invisibleCharacter() throws {
    let config = try TemporaryTree()
    try config.write("/balloonctl", "BALLOONCTL_MODE=report\n\u{FEFF}BALLOONCTL_LEVERS=none\n")
    let path = config.path("/balloonctl")
    let result = try runWithConfig(path)
    #expect(result.status == 64)
    #expect(
      result.stderr.hasPrefix(
        "balloonctl: \(path): line 2: character \\u{FEFF} (byte order mark) at column 1"),
      "\(result.stderr)")
    #expect(result.stderr.split(separator: "\n").count == 1)
  }

  @Test("the shipped settings file saved with CRLF still selects enforce (refused on a snapshot)")
  func shippedCRLF() throws {
    let shipped = try SystemFile.readRequired(
      FilePath(#filePath).removingLastComponent().removingLastComponent()
        .removingLastComponent().removingLastComponent().appending("udev/balloonctl.default"))
    let config = try TemporaryTree()
    try config.write("/balloonctl", shipped.flatMap { $0 == 0x0A ? [0x0D, 0x0A] : [$0] })
    let result = try runWithConfig(config.path("/balloonctl"))
    #expect(result.status == 64, "\(result.stderr)")
    #expect(result.stderr.contains("enforce mode acts on the live system"), "\(result.stderr)")
    // With the mode from the command line, every other line is read as before.
    #expect(try runWithConfig(config.path("/balloonctl"), ["--mode", "report"]).status == 0)
  }

  @Test("a --config that is missing, a directory or a FIFO: one line, exit 1, no hang")
  func unreadableConfig() throws {
    let config = try TemporaryTree()
    let missing = config.path("/missing")
    expectOneLine(
      try runWithConfig(missing), status: 1, "\(missing): cannot read: No such file or directory")
    try config.mkdir("/directory")
    let directory = config.path("/directory")
    expectOneLine(
      try runWithConfig(directory), status: 1,
      "\(directory): is a directory; expected a regular file")
    let fifo = config.path("/fifo")
    #expect(makeFIFO(fifo))
    expectOneLine(try runWithConfig(fifo), status: 1, "\(fifo): is a FIFO; expected a regular file")
  }

  @Test("--metrics-file with --root is refused in one line, and nothing is written")
  func metricsFileWithRoot() throws {
    let output = try TemporaryTree()
    let file = output.path("/balloonctl.prom")
    let root = Fixtures.directory("virtio-6.18").string
    let result = try Balloonctl.run([
      "run", "--once", "--mode", "report", "--metrics-file", file, "--root", root,
    ])
    #expect(result.status == 64, "\(result.stderr)")
    #expect(
      result.stderr
        == "balloonctl: --metrics-file cannot be used with --root \(root) (a snapshot run writes nothing)\n",
      "\(result.stderr)")
    #expect(!SystemFile.exists(FilePath(file)))
  }

  @Test("BALLOONCTL_METRICS_FILE from the settings file is not written on a --root run")
  func metricsSettingWithRoot() throws {
    let output = try TemporaryTree()
    let file = output.path("/balloonctl.prom")
    try output.write("/balloonctl", "BALLOONCTL_MODE=report\nBALLOONCTL_METRICS_FILE=\(file)\n")
    let result = try runWithConfig(output.path("/balloonctl"), ["--json"])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(!SystemFile.exists(FilePath(file)))
  }

  @Test("a command-line error still prints the usage, exit 64")
  func commandLineErrorKeepsUsage() throws {
    let result = try Balloonctl.run([
      "run", "--interval", "0.05", "--root", Fixtures.directory("none").string,
    ])
    #expect(result.status == 64)
    #expect(result.stderr.hasPrefix("Error: --interval must be 0.1 to 60 seconds"))
    #expect(result.stderr.contains("Usage:"))
  }
}
