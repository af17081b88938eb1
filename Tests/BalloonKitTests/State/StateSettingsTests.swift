import BalloonKit
import SystemPackage
import Testing

/// state.json's `settings`: the daemon's effective settings, checked on load
/// like every other field; a state file without them still loads.
@Suite("State file: the daemon's settings")
struct StateSettingsTests {
  static let path = "/run/balloonctl/state.json"

  static let settings = """
    "settings": {"mode": "enforce", "interval_s": 0.5, "fraction": 0.5, "margin": 0.2,
                 "probe_target": true, "levers": ["virtio", "xen"], "on_exit": "readmit"},
    """

  /// The valid document of StateFileParseTests with `settings` added.
  static let withSettings = StateDocuments.valid.replacing(
    #""interval_ms": 1000,"#, with: #""interval_ms": 1000, "# + settings)

  static func parse(_ text: String) throws(SourceError) -> DaemonState {
    try DaemonState.parse(Array(text.utf8), path: path)
  }

  @Test("recorded settings parse to what was written")
  func parses() throws {
    let state = try Self.parse(Self.withSettings)
    #expect(
      state.settings
        == RecordedSettings(
          mode: .enforce, intervalSeconds: 0.5, fraction: 0.5, margin: 0.2, probeTarget: true,
          levers: [.virtio, .xen], onExit: .readmit))
    #expect(state.balloons.count == 2)
  }

  @Test("a state file from before settings were recorded still loads, without them")
  func oldFileLoads() throws {
    #expect(!StateDocuments.valid.contains("settings"))
    #expect(try Self.parse(StateDocuments.valid).settings == nil)
    let explicitNull = StateDocuments.valid.replacing(
      #""interval_ms": 1000,"#, with: #""interval_ms": 1000, "settings": null,"#)
    #expect(try Self.parse(explicitNull).settings == nil)
  }

  @Test("every run configuration round-trips through the state file")
  func roundTrip() throws {
    for levers: Set<BalloonKind> in [[], [.vmware], [.virtio, .vmware, .xen]] {
      var flags = RunSettings()
      flags.mode = .enforce
      flags.intervalSeconds = 0.1
      flags.margin = 0
      flags.fraction = 1
      flags.levers = levers
      var state = DaemonState(pid: 7, mode: "enforce", intervalMilliseconds: 100, startedAt: 1)
      state.settings = RunConfiguration(flags: flags).recorded
      let text = state.json().rendered() + "\n"
      let back = try Self.parse(text)
      #expect(back == state)
      #expect(back.settings?.levers == levers)
    }
  }

  static let corrupt: [CorruptState] =
    [
      ("mode", #""mode": "enforce", "interval_s""#, #""mode": "auto", "interval_s""#),
      ("mode", #""mode": "enforce", "interval_s""#, #""mode": 1, "interval_s""#),
      ("interval_s", #""interval_s": 0.5"#, #""interval_s": 0.05"#),
      ("interval_s", #""interval_s": 0.5"#, #""interval_s": 61"#),
      ("interval_s", #""interval_s": 0.5"#, #""interval_s": "1""#),
      ("interval_s", #""interval_s": 0.5"#, #""interval_s": null"#),
      ("fraction", #""fraction": 0.5"#, #""fraction": 0"#),
      ("fraction", #""fraction": 0.5"#, #""fraction": 1.5"#),
      ("fraction", #""fraction": 0.5"#, #""fraction": -0.5"#),
      ("fraction", #""fraction": 0.5"#, #""fraction": 1e300"#),
      ("margin", #""margin": 0.2"#, #""margin": 0.9"#),
      ("margin", #""margin": 0.2"#, #""margin": -1"#),
      ("probe_target", #""probe_target": true"#, #""probe_target": "yes""#),
      ("levers", #"["virtio", "xen"]"#, #"["hyperv"]"#),
      ("levers", #"["virtio", "xen"]"#, #"["virtio", "virtio"]"#),
      ("levers", #"["virtio", "xen"]"#, #"["none"]"#),
      ("levers", #"["virtio", "xen"]"#, #""virtio,xen""#),
      ("levers", #"["virtio", "xen"]"#, #"[" virtio"]"#),
      ("on_exit", #""on_exit": "readmit""#, #""on_exit": "stay""#),
    ].map { field, original, replacement in
      CorruptState(
        "settings.\(field): \(replacement)",
        text: withSettings.replacing(original, with: replacement), names: "settings.\(field)")
    } + [
      CorruptState(
        "settings is not an object",
        text: StateDocuments.valid.replacing(
          #""interval_ms": 1000,"#, with: #""interval_ms": 1000, "settings": [],"#),
        names: "settings")
    ]

  @Test("bad settings are a one-line error naming the file and the field", arguments: corrupt)
  func corruptSettings(_ document: CorruptState) throws {
    #expect(document.text != Self.withSettings)
    let error = #expect(throws: SourceError.self) { try Self.parse(document.text) }
    let text = "\(error.map { "\($0)" } ?? "")"
    #expect(text.hasPrefix(Self.path + ": \"\(document.names)"), "\(text)")
    #expect(!text.contains("\n"), "\(text)")
    #expect(text.count < 300, "\(text)")
  }
}
