import Synchronization

/// Everything balloonctl knows about one kind of balloon: how discovery
/// matches it, how it is read, how the policy decides on it, and how its
/// lever is pulled. The pipeline's shared stages ask the kind's driver and
/// never branch on the kind themselves.
///
/// Adding a kind is one new file conforming to this protocol (plus fixture
/// trees and tests); see README.md, "Adding a balloon kind".
public protocol BalloonDriver: Sendable {
  var kind: BalloonKind { get }

  // MARK: Match

  /// Its balloons in a sysfs tree (a snapshot, a fixture, or `/`), without libudev.
  func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice]
  /// Whether `name` is what discovery names a balloon of this kind (the
  /// state file is untrusted input; a record with another name is corrupt).
  func isValid(name: String) -> Bool
  /// A held balloon discovery does not list whose lever can still be pulled,
  /// by a fixed name rather than a path (an unloaded vmw_balloon module). nil: none.
  func unlistedDevice(named name: String) -> BalloonDevice?

  // MARK: Read

  func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError) -> BalloonReading
  /// Facts of its own the kind's policy needs beyond the sizes (Xen: the
  /// reservation and target_kb), read with the balloon. nil: none.
  func payload(_ device: BalloonDevice, reading: BalloonReading, root: Root) -> (
    any BalloonPayload
  )?
  /// Whether the driver takes ballooned pages out of MemTotal (then the
  /// guest's size is MemTotal plus the balloon).
  func removesFromMemTotal(_ device: BalloonDevice) -> Bool
  /// Its size comes from /proc/vmstat's balloon counters when meminfo has
  /// no `Balloon:` (kernels before 6.15), so vmstat is read every tick then.
  var sizedByVmstat: Bool { get }
  /// Its size may come from the vmstat event counters (which lead the
  /// lagging gauge) when the device's own count is unknown.
  func sizedByCounters(_ reading: BalloonReading) -> Bool
  /// Lines `status` adds under the balloon (after its target).
  func statusLines(_ reading: BalloonReading) -> [String]
  /// Whether, with no probe, no lever and no process list, its reading comes
  /// from the kernel's counters alone (meminfo's `Balloon:`, vmstat) and its
  /// decision is `Policy.releasable`'s: then a tick whose counters did not
  /// move may reuse the last reading (TickReader.readsCountersOnly).
  var steadyFromCounters: Bool { get }

  // MARK: Decide (pure)

  func decide(
    _ observation: BalloonObservation, limit: UInt64, state: HoldState, now: Double,
    config: PolicyConfig
  ) -> (Decision, HoldState)
  /// Stopping with `--on-exit readmit`: give a held balloon back.
  func giveBack(_ observation: BalloonObservation, state: HoldState, config: PolicyConfig) -> (
    Decision, HoldState
  )
  /// Why a hold resumed from the state file is not ours (nil: it is), given
  /// the device as discovery lists it now.
  func resumedHoldProblem(_ hold: HoldState, device: BalloonDevice, observation: BalloonObservation)
    -> ResumedHoldProblem?
  /// Lines `status` shows under a held balloon when the kind's hold has its
  /// own (nil: the blind back-off or the re-admit threshold).
  func heldDetail(_ hold: HoldState) -> [String]?

  // MARK: Lever

  /// Whether the kind has a lever at all (Hyper-V: none), so that the
  /// `levers` setting may name it.
  var hasLever: Bool { get }
  /// Whether the lever exists here (the file or program it needs); the
  /// caller has checked that configuration enables it.
  func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool
  /// Pulls the lever for `decision` (release, readmit or set_target).
  func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)

  // MARK: State file

  /// The members the kind adds to a held balloon's state-file record.
  func holdJSON(_ hold: HoldState) -> [(String, JSONValue)]
  /// Reads them back (the file is untrusted: ranges checked, one error naming the field).
  func parseHold(_ record: StateFields, into hold: inout HoldState) throws(SourceError)
  /// The decision member naming the number its lever writes (Xen: `target_kb`).
  var leverArgumentName: String? { get }

  // MARK: Memory of a balloon (held or not)

  /// What the kind keeps of a balloon from tick to tick, given this tick's
  /// observation and what it kept before (Xen: the largest grant seen). Pure.
  func remember(_ observation: BalloonObservation, kept: (any RecordPayload)?) -> (
    any RecordPayload
  )?
  /// A restarted daemon takes up what the previous run kept: `sameBoot` when
  /// that run was in this boot. Returns what to keep (nil: drop it).
  func resume(_ kept: (any RecordPayload)?, sysPath: String, root: Root, sameBoot: Bool) -> (
    any RecordPayload
  )?
  /// The members the kind adds to every record of its balloons in the state file.
  func recordJSON(_ kept: (any RecordPayload)?) -> [(String, JSONValue)]
  /// Reads them back (the file is untrusted: ranges checked, one error naming the field).
  func parseRecord(_ record: StateFields) throws(SourceError) -> (any RecordPayload)?
  /// Whether a hold resumed from the state file can be told ours only from
  /// a reading of the balloon (Xen: target_kb), not from discovery alone.
  var verifiesResumedHoldByReading: Bool { get }
  /// Whether a held balloon is re-admitted once its target falls under the
  /// re-admit threshold (false: the kind's hold follows the limit, Xen).
  var readmitsAtThreshold: Bool { get }

  // MARK: Events

  /// Functions of the kind's driver that run when the host asks for a new
  /// size, for the daemon to wake on (a kprobe on each; Daemon/BalloonEvents.swift).
  /// Each is named with the module the driver is when built as one; a
  /// driver built into the kernel has them without a module. Only functions
  /// the kernel calls through a pointer (callbacks, work items), which the
  /// compiler cannot inline away: docs/kernel-interfaces.md, "Kprobe perf events".
  var eventSymbols: [KernelSymbol] { get }
  /// Whether a target read right after one of those functions is hit is
  /// already the host's new one. Then a daemon woken by the event decides on
  /// it at once and need not watch the size (DaemonLoop.watchAfterEvent);
  /// otherwise the driver learns the target inside the function, after the
  /// hit, and only the size tells in time.
  var targetCurrentAtEvent: Bool { get }
}

/// What every reader gets: the root and the files read once per tick.
public struct ReadContext: Sendable {
  public var root: Root
  public var meminfo: Meminfo
  public var vmstat: Vmstat
  public var probe: (any VirtioConfigProbe)?

  public init(root: Root, meminfo: Meminfo, vmstat: Vmstat, probe: (any VirtioConfigProbe)?) {
    self.root = root
    self.meminfo = meminfo
    self.vmstat = vmstat
    self.probe = probe
  }
}

/// A kind's own facts in an observation (typed by its driver).
public protocol BalloonPayload: Sendable {
  func isEqual(to other: any BalloonPayload) -> Bool
}

extension BalloonPayload where Self: Equatable {
  public func isEqual(to other: any BalloonPayload) -> Bool {
    (other as? Self) == self
  }
}

/// A kind's own memory of a hold (typed by its driver), kept in HoldState
/// and the state file.
public protocol HoldPayload: Sendable {
  func isEqual(to other: any HoldPayload) -> Bool
}

extension HoldPayload where Self: Equatable {
  public func isEqual(to other: any HoldPayload) -> Bool {
    (other as? Self) == self
  }
}

/// A kind's own memory of a balloon beyond its hold (typed by its driver),
/// kept in its BalloonRecord and the state file.
public protocol RecordPayload: Sendable {
  func isEqual(to other: any RecordPayload) -> Bool
}

extension RecordPayload where Self: Equatable {
  public func isEqual(to other: any RecordPayload) -> Bool {
    (other as? Self) == self
  }
}

/// The defaults most kinds share.
extension BalloonDriver {
  public func unlistedDevice(named name: String) -> BalloonDevice? { nil }
  public func payload(_ device: BalloonDevice, reading: BalloonReading, root: Root) -> (
    any BalloonPayload
  )? { nil }
  public var sizedByVmstat: Bool { false }
  public func sizedByCounters(_ reading: BalloonReading) -> Bool { false }
  public func statusLines(_ reading: BalloonReading) -> [String] { [] }
  public var steadyFromCounters: Bool { false }
  public var hasLever: Bool { true }
  public func heldDetail(_ hold: HoldState) -> [String]? { nil }
  public func holdJSON(_ hold: HoldState) -> [(String, JSONValue)] { [] }
  public func parseHold(_ record: StateFields, into hold: inout HoldState) throws(SourceError) {}
  public var leverArgumentName: String? { nil }
  public func remember(_ observation: BalloonObservation, kept: (any RecordPayload)?) -> (
    any RecordPayload
  )? { kept }
  public func resume(_ kept: (any RecordPayload)?, sysPath: String, root: Root, sameBoot: Bool)
    -> (any RecordPayload)?
  { kept }
  public func recordJSON(_ kept: (any RecordPayload)?) -> [(String, JSONValue)] { [] }
  public func parseRecord(_ record: StateFields) throws(SourceError) -> (any RecordPayload)? { nil }
  public var verifiesResumedHoldByReading: Bool { false }
  public var readmitsAtThreshold: Bool { true }
  public var eventSymbols: [KernelSymbol] { [] }
  public var targetCurrentAtEvent: Bool { false }

  /// A kind whose lever releases the whole balloon and re-admits it (virtio,
  /// VMware): given back by its re-admit.
  public func giveBack(_ o: BalloonObservation, state: HoldState, config: PolicyConfig) -> (
    Decision, HoldState
  ) {
    guard state.held else { return (Decision(.none, balloon: o.name, why: .exiting), state) }
    var released = config.freshState
    released.releases = state.releases
    return (Decision(.readmit, balloon: o.name, why: .exiting), released)
  }

  /// A kind whose release unbinds the balloon's device or unloads its module
  /// (virtio, VMware): a resumed hold is ours only while it is not bound.
  public func resumedHoldProblem(
    _ hold: HoldState, device: BalloonDevice, observation: BalloonObservation
  ) -> ResumedHoldProblem? {
    device.bound ? .bound(driver: device.driver) : nil
  }
}

/// The drivers balloonctl knows, in discovery order. Tests may register
/// another (a fixture-only kind), as a new driver file would be added here.
public enum BalloonDrivers {
  /// The built-in kinds, looked up without a lock (every tick asks).
  static let builtIn: [any BalloonDriver] = [
    VirtioDriver(), VMwareDriver(), XenDriver(), HyperVDriver(),
  ]
  /// Drivers registered after them.
  private static let registered = Mutex<[any BalloonDriver]>([])

  public static var all: [any BalloonDriver] { builtIn + registered.withLock { $0 } }

  /// Adds a driver after the built-in ones (a no-op for a kind already known).
  public static func register(_ driver: any BalloonDriver) {
    guard !builtIn.contains(where: { $0.kind == driver.kind }) else { return }
    registered.withLock { drivers in
      guard !drivers.contains(where: { $0.kind == driver.kind }) else { return }
      drivers.append(driver)
    }
  }

  public static func driver(for kind: BalloonKind) -> any BalloonDriver {
    if let driver = builtIn.first(where: { $0.kind == kind }) { return driver }
    return registered.withLock { drivers in
      drivers.first { $0.kind == kind } ?? UnknownDriver(kind: kind)
    }
  }
}

/// A kind no driver is registered for (a record from a build that knew
/// more kinds): never read, never acted on, never held.
struct UnknownDriver: BalloonDriver {
  let kind: BalloonKind

  func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice] { [] }
  func isValid(name: String) -> Bool { false }
  func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError) -> BalloonReading {
    throw .malformed(device.sysPath, "no driver for balloons of kind \(kind.rawValue)")
  }
  func removesFromMemTotal(_ device: BalloonDevice) -> Bool { false }
  func decide(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig
  ) -> (Decision, HoldState) {
    Policy.alertOnly(
      o, limit: limit, state: state, why: { .noLever(.currentOverLimit(current: $0, limit: $1)) })
  }
  func resumedHoldProblem(_ hold: HoldState, device: BalloonDevice, observation: BalloonObservation)
    -> ResumedHoldProblem?
  { .neverHeld }
  var hasLever: Bool { false }
  func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool { false }
  func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)
  {
    throw ActuatorError("\(kind.rawValue) balloons have no lever")
  }
}
