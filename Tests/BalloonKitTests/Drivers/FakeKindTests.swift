import BalloonKit
import InMemoryLogging
import Logging
import SystemPackage
import Testing

/// A fifth balloon kind, as the next contributor would add one: this driver
/// and the trees in Tests/Fixtures/fake-kind/, nothing else. A device
/// `/sys/devices/platform/fakeballoon0` with `size_bytes`, `target_bytes`,
/// `state` (`inflating` or `released`) and a `control` file its lever writes.
struct FakeBalloonDriver: BalloonDriver {
  static let kind = BalloonKind(named: "fake")
  static let directory = "/sys/devices/platform/fakeballoon0"
  static let name = "fakeballoon0"

  var kind: BalloonKind { Self.kind }

  func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice] {
    guard let state = try sysfs.attribute(Self.directory + "/state") else { return [] }
    return [
      BalloonDevice(
        kind: kind, name: Self.name, sysPath: Self.directory,
        driver: state == "inflating" ? "fakeballoon" : nil)
    ]
  }

  func isValid(name: String) -> Bool { name == Self.name }

  func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError) -> BalloonReading {
    func bytes(_ file: String) throws(SourceError) -> UInt64 {
      let path = device.sysPath + "/" + file
      guard let text = try SysfsDiscovery(root: context.root).attribute(path) else {
        throw SourceError(path: context.root.path(path).string, .unreadable(.noSuchFileOrDirectory))
      }
      guard let value = UInt64(text) else {
        throw .malformed(context.root.path(path).string, "\"\(text)\" is not a number of bytes")
      }
      return value
    }
    return BalloonReading(
      device: device, current: .known(bytes: try bytes("size_bytes"), source: "size_bytes"),
      target: .known(bytes: try bytes("target_bytes"), source: "target_bytes"))
  }

  func removesFromMemTotal(_ device: BalloonDevice) -> Bool { false }

  func decide(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig
  ) -> (Decision, HoldState) {
    Policy.releasable(
      o, limit: limit, state: state, now: now, config: config,
      lever: .init(listedWhileHeld: true, releaseHidesTarget: false))
  }

  func resumedHoldProblem(_ hold: HoldState, device: BalloonDevice, observation: BalloonObservation)
    -> ResumedHoldProblem?
  {
    device.bound ? .bound(driver: device.driver) : nil
  }

  func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool {
    SystemFile.exists(actuators.root.path(device.sysPath + "/control"))
  }

  func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)
  {
    try actuators.write(
      decision.action.rawValue, to: device.sysPath + "/control", alreadyDone: nil)
  }
}

@Suite("A fifth kind: one driver file plus fixtures")
struct FakeKindTests {
  init() { BalloonDrivers.register(FakeBalloonDriver()) }

  static let tree = Fixtures.roots.removingLastComponent().appending("fake-kind").appending("fake")

  func copy() throws -> TemporaryTree {
    let copy = try TemporaryTree()
    try TemporaryTree.copyDirectory(from: Self.tree.string, to: copy.base.string)
    return copy
  }

  @Test("discovered, read and shown like any kind")
  func discoveredAndRead() throws {
    let root = Root.snapshot(Self.tree)
    let devices = try Discovery.discover(root: root)
    #expect(devices.map(\.kind) == [FakeBalloonDriver.kind])
    let snapshot = try GuestSnapshotReader.read(root: root, options: .init())
    let balloon = try #require(snapshot.balloons.first)
    #expect(balloon.current.bytes == 0)
    #expect(SnapshotJSON.document(snapshot)["balloons"]?.array?.first?["kind"] == .string("fake"))
    #expect(StatusText(snapshot: snapshot).render().contains("Balloon   fakeballoon0  fake"))
  }

  @Test("released over the limit, held, saved and resumed, re-admitted under it")
  func cycle() throws {
    let tree = try copy()
    let root = tree.root
    let directory = FakeBalloonDriver.directory
    let state = try TemporaryTree()
    let store = StateStore(directory: state.base)
    let logger = Logger(label: "test", factory: { _ in InMemoryLogHandler() })
    func controller(previous: DaemonState?) -> Controller {
      Controller(
        root: root, config: ControllerConfig(mode: .enforce),
        actuators: Actuators(root: root, enabledLevers: [FakeBalloonDriver.kind]), probe: nil,
        store: store, previous: previous, pid: 4242, logger: logger)
    }
    let first = controller(previous: nil)
    let limit = try first.tick(now: 0, wall: 0).snapshot.limit.bytes

    // The host asks for more than the limit: released (preventive), by the driver's lever.
    try tree.write(directory + "/target_bytes", "\(limit + (64 << 20))\n")
    let release = try first.tick(now: 1, wall: 1)
    #expect(release.decisions.map(\.action) == [.release])
    #expect(release.decisions.first?.why.trigger == .preventive)
    #expect(release.performed.first?.error == nil)
    #expect(
      try String(
        decoding: SystemFile.readRequired(root.path(directory + "/control")), as: UTF8.self)
        == "release")

    // The device releases; the state file names the fifth kind and reads back.
    try tree.write(directory + "/state", "released\n")
    try tree.write(directory + "/control", "")
    first.invalidateDevices()
    #expect(try first.tick(now: 2, wall: 2).decisions.map(\.action) == [.none])
    let saved = try #require(try store.load())
    #expect(saved.record(forKey: "fake:fakeballoon0")?.hold.held == true)

    // A restarted daemon resumes the hold (unbound, as a release leaves it),
    // then re-admits once the target is under the re-admit threshold.
    let restarted = controller(previous: saved)
    #expect(try restarted.tick(now: 3, wall: 3).decisions.map(\.action) == [.none])
    #expect(restarted.heldBalloons.map(\.name) == ["fakeballoon0"])
    try tree.write(directory + "/target_bytes", "\(limit / 2)\n")
    #expect(try restarted.tick(now: 4, wall: 4).decisions.map(\.action) == [.readmit])
    #expect(
      try String(
        decoding: SystemFile.readRequired(root.path(directory + "/control")), as: UTF8.self)
        == "readmit")
    #expect(restarted.heldBalloons.isEmpty)
  }
}
