import BalloonKit
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite("balloonctl run: shutdown and the hold at exit")
struct DaemonLifecycleTests {
  static let signals: [Int32] = [SIGTERM, SIGINT]

  @Test("SIGTERM and SIGINT stop the daemon gracefully: exit 0, said once", arguments: signals)
  func gracefulStop(signal: Int32) throws {
    // Report mode on a snapshot: the loop runs for real and writes nothing.
    let daemon = try Balloonctl.start([
      "run", "--mode", "report", "--interval", "0.1", "--root",
      Fixtures.directory("virtio-6.18").string,
      "--log-level", "info",
    ])
    usleep(700_000)
    daemon.signal(signal)
    let result = daemon.wait()
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stderr.contains("balloonctl run started"))
    #expect(result.stderr.contains("signal=\(SignalChannel.name(signal))"))
    #expect(result.stderr.contains("balloonctl run stopped"))
    // It ticked and decided while it ran, and logged the steady state once.
    let steady = result.stderr.split(separator: "\n").filter { $0.hasSuffix("] steady") }
    #expect(steady.count == 1, "\(result.stderr)")
  }

  @Test("--on-exit readmit gives a held balloon back; hold (the default) leaves it released")
  func exitPolicy() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let controller = h.controller(probe: HostConfigProbe(targetBytes: limit * 2))
    #expect(try controller.tick(now: 1, wall: 1).decisions.map(\.action) == [.release])
    try h.guest.kernelUnbinds()

    let results = controller.readmitAll()
    #expect(results.map(\.0.action) == [.readmit])
    #expect(results.allSatisfy { $0.1 == nil })
    #expect(try h.guest.text(SimulatedGuest.driverDirectory + "/bind") == "virtio0")
    #expect(controller.heldBalloons.isEmpty)
    #expect(try h.store.load()?.record(forKey: "virtio:virtio0")?.hold.held == false)

    // A report-mode controller has no levers: nothing to give back.
    let report = h.controller(mode: .report)
    #expect(report.readmitAll().isEmpty)
  }

  @Test("status shows the daemon's hold from its state file alone")
  func statusShowsHold() throws {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    // A daemon whose state lives where `status --root` looks: <root>/run/balloonctl.
    let store = StateStore(directory: h.guest.root.path("/run/balloonctl"))
    let controller = Controller(
      root: h.guest.root, config: ControllerConfig(mode: .enforce),
      actuators: Actuators(root: h.guest.root), probe: HostConfigProbe(targetBytes: limit * 2),
      store: store, previous: nil, pid: 999_999, logger: h.logger)
    _ = try controller.tick()
    try h.guest.kernelUnbinds()

    let root = h.guest.tree.base.string
    let doc = try JSONParser.parse(try Balloonctl.run(["status", "--json", "--root", root]).stdout)
    let daemon = try #require(doc["daemon"])
    #expect(daemon["pid"]?.double == 999_999)
    #expect(daemon["mode"] == .string("enforce"))
    #expect(daemon["running"] == .null)  // a snapshot cannot tell
    let balloon = try #require(daemon["balloons"]?.array?.first)
    #expect(balloon["held"] == .bool(true))
    #expect(balloon["reason"]?.string?.contains("preventive") == true)
    #expect(balloon["last_decision"]?["action"] == .string("release"))
    #expect(doc["balloons"]?.array?.first?["bound"] == .bool(false))

    let text = try Balloonctl.run(["status", "--root", root]).stdout
    #expect(text.contains("virtio0  HELD since"))
    #expect(text.contains("re-admit when the target is at or below"))
  }
}
