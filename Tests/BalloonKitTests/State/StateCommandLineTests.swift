import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The built binary with a bad state file or directory: `status` reports it
/// and exits 1 without moving anything; `run` refuses an unusable directory
/// and moves a corrupt file aside.
@Suite("balloonctl with a bad state file or directory")
struct StateCommandLineTests {
  /// A fixture copy whose `/run/balloonctl` (where `status --root` looks) holds `setup`'s files.
  func statusRoot(_ setup: (String) throws -> Void) throws -> TemporaryTree {
    let tree = try Fixtures.copy("virtio-6.18")
    try tree.mkdir("/run")
    try setup(tree.path("/run/balloonctl"))
    return tree
  }

  @Test(
    "status with a corrupt state.json: the status, then \"Daemon state: <path>: <what>\", exit 1, nothing moved"
  )
  func statusCorrupt() throws {
    let tree = try statusRoot { dir in
      #expect(mkdir(dir, 0o755) == 0)
      let text = StateDocuments.valid.replacing(
        #""pid": 4242"#, with: #""pid": 99999999999999999999"#)
      try StateSandbox.writeFile(dir + "/state.json", text)
    }
    let file = tree.path("/run/balloonctl/state.json")
    let result = try Balloonctl.run(["status", "--root", tree.base.string])
    #expect(result.status == 1, "\(result.stderr)")
    #expect(result.stdout.contains("Limit") || result.stdout.contains("limit"))
    #expect(result.stdout.contains("Daemon state: \(file): \"pid\" is 1e+20"), "\(result.stdout)")
    #expect(
      result.stderr == "Error: \(file): \"pid\" is 1e+20; expected an integer from 1 to 4194304\n",
      "\(result.stderr)")
    #expect(try SystemFile.list(FilePath(tree.path("/run/balloonctl"))) == ["state.json"])

    let json = try Balloonctl.run(["status", "--json", "--root", tree.base.string])
    #expect(json.status == 1)
    let doc = try JSONParser.parse(json.stdout)
    #expect(doc["daemon"] == .null)
    #expect(doc["daemon_error"]?.string?.hasPrefix(file + ": \"pid\"") == true)
  }

  @Test("status with a state directory that is a file: \"<dir>: not a directory\", exit 1")
  func statusDirIsFile() throws {
    let tree = try statusRoot { dir in try StateSandbox.writeFile(dir, "x") }
    let dir = tree.path("/run/balloonctl")
    let result = try Balloonctl.run(["status", "--root", tree.base.string])
    #expect(result.status == 1)
    #expect(result.stdout.contains("Daemon state: \(dir): not a directory"), "\(result.stdout)")
    #expect(result.stderr == "Error: \(dir): not a directory\n", "\(result.stderr)")
  }

  @Test("status with no state at all is not an error")
  func statusNoState() throws {
    let tree = try statusRoot { _ in }
    let result = try Balloonctl.run(["status", "--root", tree.base.string])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stdout.contains("no state: balloonctl run has not run since boot"))
  }

  @Test("run refuses a state directory that is a file: exit 1 before any tick")
  func runDirIsFile() throws {
    let box = try StateSandbox()
    try StateSandbox.writeFile(box.stateDir, "x")
    // Report mode, no probe: even if it got further it would only read.
    let result = try Balloonctl.run([
      "run", "--mode", "report", "--no-probe-target", "--no-events", "--state-dir", box.stateDir,
    ])
    #expect(result.status == 1)
    #expect(result.stderr == "Error: \(box.stateDir): not a directory\n", "\(result.stderr)")
  }

  @Test(
    "run (report mode, live, reading only) moves a corrupt state aside, logs an error, starts clean, never exits"
  )
  func runMovesCorruptAside() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    try StateSandbox.writeFile(box.stateDir + "/state.json", "{\"version\": 1, \"pid\": 1e300}")
    let daemon = try Balloonctl.start([
      "run", "--mode", "report", "--no-probe-target", "--no-events", "--interval", "0.1",
      "--state-dir", box.stateDir, "--log-level", "info",
    ])
    usleep(1_500_000)
    daemon.signal(SIGTERM)
    let result = daemon.wait()
    #expect(result.status == 0, "\(result.stderr)")
    let errorLine = result.stderr.split(separator: "\n").first {
      $0.contains("state file unusable")
    }
    #expect(errorLine?.contains("error") == true, "\(result.stderr)")
    #expect(errorLine?.contains("\"pid\" is 1e+300") == true, "\(result.stderr)")
    let entries = box.entries(box.stateDir)
    #expect(entries.contains { $0.hasPrefix("state.json.corrupt-") }, "\(entries)")
    #expect(entries.contains("state.json") && entries.contains("lock"), "\(entries)")
    let fresh = try #require(try box.store.load())
    #expect(fresh.mode == "report")
  }
}
