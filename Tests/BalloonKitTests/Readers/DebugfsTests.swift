import Testing

@testable import BalloonKit

@Suite("Debugfs state and the readers' fallbacks when it is missing")
struct DebugfsTests {
  static let mounted = ["vmw-4.19", "vmw-6.x", "kb-example", "hyperv", "hyperv-committed"]

  @Test("snapshot: a non-empty sys/kernel/debug is mounted", arguments: Fixtures.allTrees)
  func state(tree: String) {
    let expected: DebugfsState = Self.mounted.contains(tree) ? .mounted : .notMounted
    #expect(Debugfs.state(root: Fixtures.root(tree)) == expected)
  }

  @Test("snapshot: an empty mount point is not mounted") func emptyMountPoint() throws {
    let tree = try Fixtures.copy("vmw-no-debugfs")
    try tree.mkdir("/sys/kernel/debug")
    #expect(Debugfs.state(root: tree.root) == .notMounted)
  }

  @Test("snapshot: a directory that cannot be listed is not readable") func unlistable() throws {
    let tree = try Fixtures.copy("vmw-no-debugfs")
    // A link loop: opendir fails with ELOOP (as root, permissions never fail).
    try tree.symlink("/sys/kernel/debug", to: "debug")
    let state = Debugfs.state(root: tree.root)
    guard case .notReadable(let why) = state else {
      Issue.record("expected notReadable, got \(state)")
      return
    }
    #expect(why.contains("symbolic links"))
  }

  static let mountinfo = """
    22 27 0:21 / /proc rw,relatime - proc proc rw
    23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
    """

  @Test(
    "mountinfo: debugfs exactly at /sys/kernel/debug",
    arguments: [
      ("", false),
      (
        "44 23 0:7 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:16 - debugfs debugfs rw",
        true
      ),
      ("44 23 0:7 / /sys/kernel/debug rw,relatime - debugfs none rw", true),
      ("45 44 0:12 / /sys/kernel/debug/tracing rw,relatime - tracefs tracefs rw", false),
      ("46 23 0:7 / /debug rw,relatime - debugfs debugfs rw", false),
      ("47 23 0:7 / /sys/kernel/debug rw,relatime - tmpfs tmpfs rw", false),
      ("48 23 0:7 / /sys/kernel/debug rw,relatime master:1 shared:2 - debugfs debugfs rw", true),
    ])
  func mountinfo(extra: String, mounted: Bool) {
    let text = Self.mountinfo + "\n" + extra + "\n"
    #expect(Debugfs.isMounted(mountinfo: Array(text.utf8)) == mounted)
  }

  // MARK: vmw fallbacks

  @Test("vmw: debugfs mounted but vmmemctl absent") func vmmemctlAbsent() throws {
    let tree = try Fixtures.copy("vmw-6.x")
    tree.remove("/sys/kernel/debug/vmmemctl")
    try tree.write("/sys/kernel/debug/bdi/253:0/stats", "BdiWriteback:            0 kB\n")
    let reading = try #require(try readAll(tree.root).first)
    #expect(reading.target == .unknown(reason: "vmmemctl absent"))
    #expect(
      reading.current
        == .known(bytes: 1024 * 1024, source: BalloonReaders.meminfoBalloonVMwareSource))
    #expect(reading.extraFeatures.isEmpty)
  }

  @Test("vmw: debugfs not readable") func debugfsUnreadable() throws {
    let tree = try Fixtures.copy("vmw-6.x")
    tree.remove("/sys/kernel/debug")
    try tree.symlink("/sys/kernel/debug", to: "debug")
    let reading = try #require(try readAll(tree.root).first)
    let reason = try #require(reading.target.reason)
    #expect(reason.hasPrefix("debugfs not readable: "))
    #expect(reading.current.source == BalloonReaders.meminfoBalloonVMwareSource)
  }

  @Test("vmw: vmmemctl itself unreadable counts as not readable") func vmmemctlUnreadable() throws {
    let tree = try Fixtures.copy("vmw-6.x")
    tree.remove("/sys/kernel/debug/vmmemctl")
    try tree.symlink("/sys/kernel/debug/vmmemctl", to: "vmmemctl")
    let reading = try #require(try readAll(tree.root).first)
    #expect(reading.target.reason?.hasPrefix("debugfs not readable: ") == true)
  }

  @Test("vmw: no debugfs and no Balloon: line (4.19) → both unknown") func vmwOld() throws {
    let tree = try Fixtures.copy("vmw-4.19")
    tree.remove("/sys/kernel/debug")
    let reading = try #require(try readAll(tree.root).first)
    #expect(reading.current == .unknown(reason: "debugfs not mounted"))
    #expect(reading.target == .unknown(reason: "debugfs not mounted"))
  }

  @Test("vmw: a malformed vmmemctl is an error, not a fallback") func vmwMalformed() throws {
    let tree = try Fixtures.copy("vmw-6.x")
    try tree.write("/sys/kernel/debug/vmmemctl", "target                :           26x144\n")
    do {
      _ = try readAll(tree.root)
      Issue.record("malformed vmmemctl was accepted")
    } catch let error as SourceError {
      #expect(error.description.hasPrefix(tree.path("/sys/kernel/debug/vmmemctl") + ": line 1: "))
    }
  }

  // MARK: Hyper-V fallbacks

  @Test("hyperv: no debugfs → nr_balloon_pages (≥ 6.15)") func hypervGauge() throws {
    let tree = try Fixtures.copy("hyperv-committed")
    tree.remove("/sys/kernel/debug")
    let reading = try #require(try readAll(tree.root).first)
    #expect(reading.current == .known(bytes: 1 << 30, source: "nr_balloon_pages"))
    #expect(reading.target == .unknown(reason: BalloonReaders.hyperVTargetReason))
  }

  @Test("hyperv: no debugfs before 6.15 → unknown") func hypervOld() throws {
    let tree = try Fixtures.copy("hyperv")
    tree.remove("/sys/kernel/debug")
    let reading = try #require(try readAll(tree.root).first)
    #expect(reading.current == .unknown(reason: "debugfs not mounted"))
  }

  @Test("hyperv: debugfs mounted, hv-balloon absent") func hvBalloonAbsent() throws {
    let tree = try Fixtures.copy("hyperv")
    tree.remove("/sys/kernel/debug/hv-balloon")
    try tree.write("/sys/kernel/debug/bdi/253:0/stats", "BdiWriteback:            0 kB\n")
    let reading = try #require(try readAll(tree.root).first)
    #expect(reading.current == .unknown(reason: "hv-balloon absent"))
  }
}
