import BalloonKit
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The daemon's effective settings: recorded in state.json by `run`, shown
/// by `status` as `daemon.settings`, and used for the hold's re-admit
/// threshold instead of `status`'s own fraction and the default margin.
@Suite("balloonctl status: the daemon's settings")
struct DaemonSettingsTests {
  /// A virtio guest whose daemon (state under <root>/run/balloonctl, where
  /// `status --root` looks) released the balloon, run with `configuration`.
  func heldGuest(_ settings: RecordedSettings?, fraction: Double, margin: Double) throws
    -> Harness
  {
    let h = try Harness("virtio-6.18")
    try h.guest.addDriverControlFiles()
    let limit = try h.limit()
    let store = StateStore(
      directory: h.guest.root.path(StateStore.defaultDirectory.string))
    let config = ControllerConfig(
      mode: .enforce, fraction: fraction, policy: PolicyConfig(margin: margin),
      settings: settings)
    let controller = Controller(
      root: h.guest.root, config: config, actuators: Actuators(root: h.guest.root),
      probe: HostConfigProbe(targetBytes: limit * 2), store: store, previous: nil,
      pid: 999_999, logger: h.logger)
    #expect(try controller.tick().decisions.map(\.action) == [.release])
    try h.guest.kernelUnbinds()
    return h
  }

  func status(_ h: Harness, _ extra: [String] = []) throws -> (json: JSONValue, text: String) {
    let root = h.guest.tree.base.string
    let json = try Balloonctl.run(["status", "--json", "--root", root] + extra)
    #expect(json.status == 0, "\(json.stderr)")
    let text = try Balloonctl.run(["status", "--root", root] + extra)
    #expect(text.status == 0, "\(text.stderr)")
    return (try JSONParser.parse(json.stdout), text.stdout)
  }

  /// The limit a daemon with `fraction` computes from what `status` read.
  func limit(_ doc: JSONValue, fraction: Double) throws -> UInt64 {
    let memory = try #require(doc["memory"])
    return BalloonLimit.compute(
      guestBytes: try #require(memory["guest_bytes"]?.uint64),
      pinnedBytes: try #require(memory["pinned_bytes"]?.uint64),
      swapTotalBytes: try #require(memory["swap_total_bytes"]?.uint64), fraction: fraction
    ).bytes
  }

  @Test(
    "a daemon run with --margin 0.2 --fraction 0.5: status shows its settings and its re-admit threshold, not one from the defaults"
  )
  func nonDefaultMarginAndFraction() throws {
    var flags = RunSettings()
    flags.mode = .enforce
    flags.margin = 0.2
    flags.fraction = 0.5
    flags.levers = [.virtio]
    let configuration = RunConfiguration(flags: flags)
    let h = try heldGuest(configuration.recorded, fraction: 0.5, margin: 0.2)

    let (doc, text) = try status(h)
    let daemon = try #require(doc["daemon"])
    let settings = try #require(daemon["settings"])
    #expect(settings["mode"] == .string("enforce"))
    #expect(settings["interval_s"]?.double == 1)
    #expect(settings["fraction"]?.double == 0.5)
    #expect(settings["margin"]?.double == 0.2)
    #expect(settings["probe_target"] == .bool(true))
    #expect(settings["levers"] == .array([.string("virtio")]))
    #expect(settings["on_exit"] == .string("hold"))
    if case .object(let members) = settings {
      #expect(
        members.map(\.0).sorted() == [
          "fraction", "interval_s", "levers", "margin", "mode", "on_exit", "probe_target",
        ])
    } else {
      Issue.record("daemon.settings is not an object: \(settings)")
    }

    let daemonLimit = try limit(doc, fraction: 0.5)
    let threshold = Policy.readmitThreshold(daemonLimit, PolicyConfig(margin: 0.2))
    // What status showed before: its own limit (0.65) and the default margin.
    let statusLimit = try #require(doc["limit"]?["bytes"]?.uint64)
    #expect(statusLimit == (try limit(doc, fraction: 0.65)))
    let wrong = Policy.readmitThreshold(statusLimit, .default)
    #expect(threshold < wrong)

    #expect(daemon["limit_bytes"]?.uint64 == daemonLimit)
    let balloon = try #require(daemon["balloons"]?.array?.first)
    #expect(balloon["held"] == .bool(true))
    #expect(balloon["readmit_threshold_bytes"]?.uint64 == threshold)

    #expect(text.contains("fraction 0.5, margin 0.2, probe target on, levers virtio, on exit hold"))
    #expect(
      text.contains("re-admit when the target is at or below \(ByteFormat.human(threshold)) "),
      "\(text)")
    #expect(!text.contains(ByteFormat.human(wrong)), "\(text)")

    // status's own --fraction changes its limit, not the daemon's threshold.
    let (other, _) = try status(h, ["--fraction", "0.3"])
    #expect(other["limit"]?["fraction"]?.double == 0.3)
    #expect(
      other["daemon"]?["balloons"]?.array?.first?["readmit_threshold_bytes"]?.uint64 == threshold)
  }

  @Test(
    "a state file without settings (an older balloonctl): shown as not recorded, defaults assumed")
  func oldStateFile() throws {
    let h = try heldGuest(nil, fraction: 0.65, margin: 0.05)
    let (doc, text) = try status(h)
    let daemon = try #require(doc["daemon"])
    #expect(daemon["settings"] == .null)
    let threshold = Policy.readmitThreshold(try limit(doc, fraction: 0.65), .default)
    #expect(daemon["balloons"]?.array?.first?["readmit_threshold_bytes"]?.uint64 == threshold)
    #expect(text.contains("settings not recorded"))
    #expect(text.contains("re-admit when the target is at or below \(ByteFormat.human(threshold))"))
  }

  @Test("run records its effective settings in state.json: flag over settings file over default")
  func runRecordsSettings() throws {
    let box = try StateSandbox()
    try box.makeStateDir()
    let config = box.base + "/balloonctl"
    try box.write(
      config,
      "BALLOONCTL_INTERVAL=5\nBALLOONCTL_LEVERS=virtio,xen\nBALLOONCTL_ON_EXIT=readmit\nBALLOONCTL_MARGIN=0.3\n"
    )
    // Report mode, no probe: the live system is only read.
    let daemon = try Balloonctl.start([
      "run", "--mode", "report", "--no-probe-target", "--no-events", "--interval", "0.1",
      "--fraction", "0.5",
      "--config", config, "--state-dir", box.stateDir,
    ])
    usleep(1_000_000)
    daemon.signal(SIGTERM)
    let result = daemon.wait()
    #expect(result.status == 0, "\(result.stderr)")
    let state = try #require(try box.store.load())
    #expect(
      state.settings
        == RecordedSettings(
          mode: .report, intervalSeconds: 0.1, fraction: 0.5, margin: 0.3, probeTarget: false,
          levers: [.virtio, .xen], onExit: .readmit))
    #expect(state.mode == "report")
    #expect(state.intervalMilliseconds == 100)
  }
}
