import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A corrupt state file, and the field its one-line error must name.
struct CorruptState: CustomTestStringConvertible, Sendable {
  var label: String
  var text: String
  var names: String
  var testDescription: String { label }

  /// The valid document with `original` replaced by `replacement`.
  init(_ label: String, replacing original: String, with replacement: String, names: String) {
    precondition(StateDocuments.valid.contains(original), "\(original) not in the document")
    self.label = label
    self.text = StateDocuments.valid.replacing(original, with: replacement)
    self.names = names
  }

  init(_ label: String, text: String, names: String) {
    self.label = label
    self.text = text
    self.names = names
  }
}

enum StateDocuments {
  /// What balloonctl writes, with every field set.
  static let valid = """
    {"version": 1, "pid": 4242, "mode": "enforce", "interval_ms": 1000,
     "started_at": 1700000000, "updated_at": 1700000100, "updated_boottime": 500.5,
     "limit_bytes": 4294967296,
     "balloons": [
      {"kind": "virtio", "name": "virtio0", "sys_path": "/sys/devices/pci0000:00/0000:00:05.0/virtio0",
       "held": true, "since_boottime": 400.25, "reason": "host target above the limit",
       "readmit_not_before_boottime": 430.25, "backoff_seconds": 30.0,
       "blind_readmit_at_boottime": 12.5, "xen_written_target_kib": null,
       "xen_host_balloon_target_bytes": null, "releases": 2,
       "last_decision": {"action": "release", "balloon": "virtio0", "reason": "over", "at": 1700000050},
       "a_field_from_a_newer_version": [1, 2, 3]},
      {"kind": "xen", "name": "xen_memory0", "sys_path": "/sys/devices/system/xen_memory/xen_memory0",
       "held": false, "since_boottime": null, "reason": null,
       "readmit_not_before_boottime": null, "backoff_seconds": 30,
       "blind_readmit_at_boottime": null, "xen_written_target_kib": 1048576,
       "xen_host_balloon_target_bytes": 2147483648, "xen_granted_bytes": 4294967296,
       "releases": 0, "last_decision": null}
     ]}
    """

  static let corrupt: [CorruptState] = [
    // Every number field above its range (1. in the brief: these trapped).
    .init(
      "pid above Int64.max", replacing: #""pid": 4242"#, with: #""pid": 99999999999999999999"#,
      names: "pid"),
    .init(
      "pid = Int64.max + 1", replacing: #""pid": 4242"#, with: #""pid": 9223372036854775808"#,
      names: "pid"),
    .init("pid -1", replacing: #""pid": 4242"#, with: #""pid": -1"#, names: "pid"),
    .init("pid 0", replacing: #""pid": 4242"#, with: #""pid": 0"#, names: "pid"),
    .init("pid above pid_max", replacing: #""pid": 4242"#, with: #""pid": 4194305"#, names: "pid"),
    .init("pid 1e300", replacing: #""pid": 4242"#, with: #""pid": 1e300"#, names: "pid"),
    .init(
      "started_at above Int64.max", replacing: #""started_at": 1700000000"#,
      with: #""started_at": 18446744073709551615"#, names: "started_at"),
    .init(
      "started_at 1e300", replacing: #""started_at": 1700000000"#, with: #""started_at": 1e300"#,
      names: "started_at"),
    .init(
      "updated_at above Int64.max", replacing: #""updated_at": 1700000100"#,
      with: #""updated_at": 99999999999999999999"#, names: "updated_at"),
    .init(
      "updated_at -1", replacing: #""updated_at": 1700000100"#, with: #""updated_at": -1"#,
      names: "updated_at"),
    .init(
      "last_decision.at above Int64.max", replacing: #""at": 1700000050"#,
      with: #""at": 9223372036854775808"#, names: "balloons[0].last_decision.at"),
    .init(
      "last_decision.at 1e300", replacing: #""at": 1700000050"#, with: #""at": 1e300"#,
      names: "balloons[0].last_decision.at"),
    .init(
      "updated_boottime 1e300", replacing: #""updated_boottime": 500.5"#,
      with: #""updated_boottime": 1e300"#, names: "updated_boottime"),
    .init(
      "updated_boottime -1", replacing: #""updated_boottime": 500.5"#,
      with: #""updated_boottime": -1"#, names: "updated_boottime"),
    .init(
      "updated_boottime \"nan\"", replacing: #""updated_boottime": 500.5"#,
      with: #""updated_boottime": "nan""#, names: "updated_boottime"),
    .init(
      "since_boottime 1e300", replacing: #""since_boottime": 400.25"#,
      with: #""since_boottime": 1e300"#, names: "balloons[0].since_boottime"),
    .init(
      "since_boottime \"inf\"", replacing: #""since_boottime": 400.25"#,
      with: #""since_boottime": "inf""#, names: "balloons[0].since_boottime"),
    .init(
      "readmit_not_before_boottime -0.5", replacing: #""readmit_not_before_boottime": 430.25"#,
      with: #""readmit_not_before_boottime": -0.5"#,
      names: "balloons[0].readmit_not_before_boottime"),
    .init(
      "blind_readmit_at_boottime 1e11", replacing: #""blind_readmit_at_boottime": 12.5"#,
      with: #""blind_readmit_at_boottime": 1e11"#, names: "balloons[0].blind_readmit_at_boottime"),
    .init(
      "backoff_seconds 1e300", replacing: #""backoff_seconds": 30.0"#,
      with: #""backoff_seconds": 1e300"#, names: "balloons[0].backoff_seconds"),
    .init(
      "backoff_seconds -1", replacing: #""backoff_seconds": 30.0"#, with: #""backoff_seconds": -1"#,
      names: "balloons[0].backoff_seconds"),
    .init(
      "backoff_seconds \"NaN\"", replacing: #""backoff_seconds": 30.0"#,
      with: #""backoff_seconds": "NaN""#, names: "balloons[0].backoff_seconds"),
    .init(
      "releases above 2^32", replacing: #""releases": 2"#, with: #""releases": 4294967297"#,
      names: "balloons[0].releases"),
    .init(
      "xen_granted_bytes above 2^60", replacing: #""xen_granted_bytes": 4294967296"#,
      with: #""xen_granted_bytes": 1152921504606846977"#, names: "balloons[1].xen_granted_bytes"),
    .init(
      "xen_granted_bytes negative", replacing: #""xen_granted_bytes": 4294967296"#,
      with: #""xen_granted_bytes": -1"#, names: "balloons[1].xen_granted_bytes"),
    .init(
      "xen_granted_bytes a string", replacing: #""xen_granted_bytes": 4294967296"#,
      with: #""xen_granted_bytes": "4 GiB""#, names: "balloons[1].xen_granted_bytes"),
    .init(
      "xen_written_target_kib above 2^50", replacing: #""xen_written_target_kib": 1048576"#,
      with: #""xen_written_target_kib": 1125899906842625"#,
      names: "balloons[1].xen_written_target_kib"),
    .init(
      "xen_host_balloon_target_bytes 1e300",
      replacing: #""xen_host_balloon_target_bytes": 2147483648"#,
      with: #""xen_host_balloon_target_bytes": 1e300"#,
      names: "balloons[1].xen_host_balloon_target_bytes"),
    .init(
      "interval_ms 0", replacing: #""interval_ms": 1000"#, with: #""interval_ms": 0"#,
      names: "interval_ms"),
    .init(
      "interval_ms above 60 s", replacing: #""interval_ms": 1000"#, with: #""interval_ms": 60001"#,
      names: "interval_ms"),
    .init(
      "limit_bytes -1", replacing: #""limit_bytes": 4294967296"#, with: #""limit_bytes": -1"#,
      names: "limit_bytes"),
    // Versions, words, names (2. in the brief).
    .init("version 2", replacing: #""version": 1"#, with: #""version": 2"#, names: "version 2"),
    .init("no version", replacing: #""version": 1, "#, with: "", names: "version"),
    .init(
      "unknown mode", replacing: #""mode": "enforce""#, with: #""mode": "turbo""#, names: "mode"),
    .init(
      "unknown kind", replacing: #""kind": "virtio""#, with: #""kind": "floppy""#,
      names: "balloons[0].kind"),
    .init(
      "a path as a name", replacing: #""name": "virtio0""#, with: #""name": "../../../etc""#,
      names: "balloons[0].name"),
    .init(
      "a vmware name on a virtio record", replacing: #""name": "virtio0""#,
      with: #""name": "vmw_balloon""#, names: "balloons[0].name"),
    .init(
      "a xen name with a suffix", replacing: #""name": "xen_memory0""#,
      with: #""name": "xen_memory0x""#, names: "balloons[1].name"),
    .init(
      "a name with an escape sequence", replacing: #""name": "virtio0""#,
      with: #""name": "virtio0\u001b[2J""#, names: "balloons[0].name"),
    .init(
      "a reason with an escape sequence", replacing: #""reason": "host target above the limit""#,
      with: #""reason": "\u001b]0;owned\u0007""#, names: "balloons[0].reason"),
    .init(
      "a decision about another kind", replacing: #""balloon": "virtio0""#,
      with: #""balloon": "xen_memory0""#, names: "balloons[0].last_decision.balloon"),
    .init(
      "an unknown action", replacing: #""action": "release""#, with: #""action": "explode""#,
      names: "balloons[0].last_decision.action"),
    .init(
      "sys_path outside /sys",
      replacing: #""sys_path": "/sys/devices/pci0000:00/0000:00:05.0/virtio0""#,
      with: #""sys_path": "/etc""#, names: "balloons[0].sys_path"),
    .init(
      "held as a string", replacing: #""held": true"#, with: #""held": "yes""#,
      names: "balloons[0].held"),
    .init(
      "a duplicate balloon record",
      replacing:
        #""name": "xen_memory0", "sys_path": "/sys/devices/system/xen_memory/xen_memory0""#,
      with: #""name": "xen_memory0", "sys_path": "/sys/x""#, names: "__dup__"),
    // The JSON itself.
    .init(
      "a duplicate key", replacing: #""pid": 4242"#, with: #""pid": 4242, "pid": 1"#,
      names: "duplicate key \"pid\""),
    .init("truncated", text: String(valid.prefix(valid.count / 2)), names: "not JSON"),
    .init("empty", text: "", names: "not JSON"),
    .init("not JSON", text: "pid=4242\n", names: "not JSON"),
    .init(
      "a bare NaN", replacing: #""updated_boottime": 500.5"#, with: #""updated_boottime": NaN"#,
      names: "not JSON"),
    .init(
      "a number too large for a Double", replacing: #""updated_boottime": 500.5"#,
      with: #""updated_boottime": 1e999"#, names: "not JSON"),
    .init("an array at the top", text: "[1]", names: "not a JSON object"),
    .init(
      "nesting 100000 deep", text: String(repeating: "[", count: 100_000),
      names: "nested too deeply"),
    .init(
      "nesting in a field", replacing: #""a_field_from_a_newer_version": [1, 2, 3]"#,
      with: #""a_field_from_a_newer_version": "# + String(repeating: "{\"a\":", count: 5000),
      names: "nested too deeply"),
  ]

  /// The duplicate-record case: the xen record twice.
  static func withDuplicate(_ state: CorruptState) -> CorruptState {
    guard state.names == "__dup__" else { return state }
    let start = valid.firstRange(of: #"{"kind": "xen""#)!.lowerBound
    let end = valid.firstRange(of: #""last_decision": null}"#)!.upperBound
    let record = String(valid[start..<end])
    var copy = state
    copy.text = valid.replacing(record, with: record + ", " + record)
    copy.names = "balloons[2]"
    return copy
  }

  static var all: [CorruptState] { corrupt.map(withDuplicate) }
}

@Suite("State file: parsed as untrusted input")
struct StateFileParseTests {
  static let path = "/run/balloonctl/state.json"

  @Test("the valid document parses, unknown fields tolerated, every value kept")
  func validDocument() throws {
    let state = try DaemonState.parse(Array(StateDocuments.valid.utf8), path: Self.path)
    #expect(state.pid == 4242)
    #expect(state.updatedBoottime == 500.5)
    #expect(state.balloons.map(\.key) == ["virtio:virtio0", "xen:xen_memory0"])
    let virtio = try #require(state.record(forKey: "virtio:virtio0"))
    #expect(virtio.hold.held && virtio.hold.releases == 2 && virtio.hold.backoffSeconds == 30)
    #expect(virtio.lastDecision?.action == .release)
    #expect(virtio.lastDecisionAt == 1_700_000_050)
    #expect(state.record(forKey: "xen:xen_memory0")?.hold.xenWrittenTargetKiB == 1_048_576)
    #expect(state.record(forKey: "xen:xen_memory0")?.xenGrantedBytes == UInt64(4 << 30))
    // Kept for Xen only: another kind's record ignores the key.
    #expect(virtio.kept == nil)
  }

  @Test("what balloonctl writes reads back the same")
  func roundTrip() throws {
    var state = DaemonState(pid: 77, mode: "report", intervalMilliseconds: 500, startedAt: 10)
    state.updatedBoottime = 99.125
    var hold = HoldState(backoffSeconds: 600)
    hold.held = true
    hold.since = 3.5
    hold.reason = "over × 2 — …"
    hold.releases = 9
    var record = BalloonRecord(
      kind: .hyperv, name: "1eccfd72-4b41-45ef-b73a-4a6e44c12924", sysPath: "/sys/bus/vmbus/x",
      hold: hold)
    record.lastDecision = Decision(.alert, balloon: record.name, reason: "no lever")
    record.lastDecisionAt = 12
    state.update(record)
    state.update(
      BalloonRecord(
        kind: .vmware, name: "vmw_balloon", sysPath: "", hold: HoldState(backoffSeconds: 0)))
    var xen = BalloonRecord(
      kind: .xen, name: "xen_memory0", sysPath: "/sys/devices/system/xen_memory/xen_memory0",
      hold: HoldState(backoffSeconds: 30))
    xen.xenGrantedBytes = 1 << 30
    state.update(xen)
    let text = state.json().rendered() + "\n"
    #expect(try DaemonState.parse(Array(text.utf8), path: Self.path) == state)
  }

  @Test(
    "a corrupt document is a one-line error naming the file and the field",
    arguments: StateDocuments.all)
  func corrupt(_ document: CorruptState) throws {
    let error = #expect(throws: SourceError.self) {
      try DaemonState.parse(Array(document.text.utf8), path: Self.path)
    }
    let text = "\(error.map { "\($0)" } ?? "")"
    #expect(text.hasPrefix(Self.path + ": "), "\(text)")
    #expect(text.contains(document.names), "\(text)")
    #expect(!text.contains("\n"), "\(text)")
    #expect(text.count < 300, "\(text)")
  }

  @Test("the JSON parser rejects a repeated key at any depth, and deep nesting without recursion")
  func parserLimits() throws {
    #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(#"{"a": {"b": 1, "b": 2}}"#) }
    #expect(throws: JSONParser.Failure.self) {
      try JSONParser.parse(String(repeating: "[", count: 1_000_000))
    }
    // Many distinct keys stay fast (a set, not a scan per key).
    let many = "{" + (0..<50_000).map { "\"k\($0)\": 0" }.joined(separator: ",") + "}"
    #expect(try JSONParser.parse(many)["k49999"] == .integer(0))
  }

  @Test("a state built in code with absurd clocks renders without trapping")
  func absurdStateRenders() {
    var state = DaemonState(pid: 1, mode: "enforce", intervalMilliseconds: 1000, startedAt: .max)
    state.updatedAt = .max
    state.updatedBoottime = 1e300
    var hold = HoldState(backoffSeconds: .nan)
    hold.held = true
    hold.since = -1e300
    hold.readmitNotBefore = .infinity
    var record = BalloonRecord(kind: .virtio, name: "virtio0", sysPath: "", hold: hold)
    record.lastDecision = Decision(.release, balloon: "virtio0", reason: "x")
    record.lastDecisionAt = .min
    state.update(record)
    #expect(state.wallTime(ofBoottime: -1e300) == nil)
    #expect(state.wallTime(ofBoottime: .nan) == nil)
    let report = DaemonReport(state: state, file: Self.path, running: false)
    let lines = report.lines(limitBytes: nil)
    #expect(lines.contains { $0.contains("HELD since ?") })
    #expect(lines.contains { $0.contains("back-off ? s") })
    #expect(report.json()["balloons"]?.array?.first?["since"] == .null)
  }
}
