import BalloonKit
import SystemPackage
import Testing

/// `balloonctl readmit` (what the package's prerm runs on removal) on state
/// directories under /tmp. Only states with nothing held: a held one would
/// write the live /sys (the re-admit itself is Controller.readmitAll, proven
/// on the simulated kernel in DaemonLifecycleTests).
@Suite("balloonctl readmit")
struct ReadmitCommandTests {
  @Test("no state file: exit 0, nothing held, and the state directory is not created")
  func noState() throws {
    let tree = try TemporaryTree()
    let stateDir = tree.base.appending("run/balloonctl").string
    let result = try Balloonctl.run(["readmit", "--state-dir", stateDir])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stdout.contains("nothing held"))
    #expect(!SystemFile.exists(FilePath(stateDir)))
  }

  @Test("a state with no held balloon: exit 0, nothing held")
  func nothingHeld() throws {
    let tree = try TemporaryTree()
    let store = StateStore(directory: tree.base.appending("balloonctl"))
    try store.ensureDirectory()
    try store.save(
      DaemonState(pid: 999_999, mode: "enforce", intervalMilliseconds: 1000, startedAt: 1))
    let result = try Balloonctl.run(["readmit", "--state-dir", store.directory.string])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stdout == "nothing held\n")
  }

  @Test("refuses while a daemon holds the lock: exit 1, naming the lock")
  func lockHeld() throws {
    let tree = try TemporaryTree()
    let store = StateStore(directory: tree.base.appending("balloonctl"))
    try store.ensureDirectory()
    try store.save(
      DaemonState(pid: 999_999, mode: "enforce", intervalMilliseconds: 1000, startedAt: 1))
    let daemon = try InstanceLock(directory: store.directory)
    #expect(try daemon.acquire())
    let result = try Balloonctl.run(["readmit", "--state-dir", store.directory.string])
    #expect(result.status == 1)
    #expect(result.stderr.contains("another balloonctl run holds \(daemon.path.string)"))
    #expect(result.stdout.isEmpty)
  }

  @Test("an unreadable state file: exit 1, one line naming it")
  func badState() throws {
    let tree = try TemporaryTree()
    try tree.write("/balloonctl/state.json", "{ not json")
    let stateDir = tree.base.appending("balloonctl").string
    let result = try Balloonctl.run(["readmit", "--state-dir", stateDir])
    #expect(result.status == 1)
    #expect(result.stderr.contains("\(stateDir)/state.json"), "\(result.stderr)")
    #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
  }
}
