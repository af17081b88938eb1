public import Logging
import SystemPackage

/// Enforce acts; report decides, logs and publishes, and changes nothing.
public enum ControlMode: String, Sendable, CaseIterable {
  case enforce, report
}

public struct ControllerConfig: Sendable {
  public var mode: ControlMode
  public var fraction: Double
  public var policy: PolicyConfig
  public var intervalSeconds: Double
  /// The longest Σ VmPin may go unrefreshed. Processes are re-scanned at once
  /// whenever the global FOLL_PIN count moves (RDMA, io_uring and iommufd
  /// pins all move it), so this is only a backstop for the rare pinned_vm
  /// users outside FOLL_PIN (perf ring buffers). A scan of every
  /// /proc/<pid>/status is the one expensive read (~1 ms per 100 processes);
  /// kernels without the counters (< 5.7) use `processScanSecondsWithoutCounters`.
  public var processScanSeconds: Double
  public var processScanSecondsWithoutCounters: Double
  /// Re-run discovery at least this often even without udev events (for
  /// guests where no uevents reach us). udev events trigger it at once.
  public var rediscoverSeconds: Double
  /// The run's settings, recorded in the state file for `status`; nil when
  /// not a run (`balloonctl readmit`, tests).
  public var settings: RecordedSettings?
  /// How the daemon is woken, recorded in the state file for `status`; nil
  /// when not a daemon (`run --once`, `balloonctl readmit`, tests).
  public var wakeups: Wakeups?

  public init(
    mode: ControlMode, fraction: Double = BalloonLimit.defaultFraction,
    policy: PolicyConfig = .default, intervalSeconds: Double = 1, processScanSeconds: Double = 600,
    processScanSecondsWithoutCounters: Double = 30, rediscoverSeconds: Double = 300,
    settings: RecordedSettings? = nil
  ) {
    self.mode = mode
    self.fraction = fraction
    self.policy = policy
    self.intervalSeconds = intervalSeconds
    self.processScanSeconds = processScanSeconds
    self.processScanSecondsWithoutCounters = processScanSecondsWithoutCounters
    self.rediscoverSeconds = rediscoverSeconds
    self.settings = settings
  }
}

/// What one tick saw and did.
public struct TickReport: Sendable {
  public var snapshot: GuestSnapshot
  public var decisions: [Decision]
  /// Decisions that were carried out (enforce mode), with the error if the
  /// lever failed.
  public var performed: [(decision: Decision, error: ActuatorError?)]
  /// Balloons discovery lists whose files could not be read this tick (each
  /// also has a `none` decision saying so).
  public var unreadable: [(device: BalloonDevice, error: SourceError)] = []

  /// The decision worth reporting first: an action over a `none`.
  public var headline: Decision? {
    decisions.first { $0.action != .none } ?? decisions.first
  }
}

/// One control step, wired from the pipeline's stages (Pipeline/):
/// TickReader → GuestSnapshot → TickPolicy (pure) → Executor (re-check, act)
/// → Recorder (state, logs). The daemon calls `tick` every interval and on
/// events; `run --once` calls `tickOnce`; `--on-exit readmit` and `balloonctl
/// readmit` call `readmitAll`, the same tick with the policy told it is
/// exiting. Holds no threads and does no waiting.
public final class Controller {
  public let root: Root
  public let config: ControllerConfig
  let reader: TickReader
  let policy: TickPolicy
  let executor: Executor
  let recorder: Recorder
  let logger: Logger

  /// How often /proc/vmstat is read when nothing needs it every tick.
  public static let vmstatEveryTicks = TickReader.vmstatEveryTicks

  /// - Parameters:
  ///   - actuators: required in enforce mode; must be nil in report mode.
  ///   - store: where the state lives; nil writes nothing (`--once --root`).
  public init(
    root: Root, config: ControllerConfig, actuators: Actuators?, probe: (any VirtioConfigProbe)?,
    store: StateStore?, previous: DaemonState?, pid: Int32, logger: Logger
  ) {
    precondition(
      (config.mode == .enforce) == (actuators != nil), "actuators exist exactly in enforce mode")
    self.root = root
    self.config = config
    self.logger = logger
    reader = TickReader(
      root: root,
      options: TickReader.Options(
        fraction: config.fraction, probe: probe, levers: actuators,
        enforcing: config.mode == .enforce, processScanSeconds: config.processScanSeconds,
        processScanSecondsWithoutCounters: config.processScanSecondsWithoutCounters,
        rediscoverSeconds: config.rediscoverSeconds),
      logger: logger)
    policy = TickPolicy(mode: config.mode, config: config.policy)
    executor = Executor(actuators: actuators, reader: reader, policy: policy)
    var state = DaemonState(
      pid: pid, mode: config.mode.rawValue,
      intervalMilliseconds: UInt64((config.intervalSeconds * 1000).rounded()),
      startedAt: Clock.wall())
    // The effective settings, so `status` judges the hold by this daemon's own.
    state.settings = config.settings
    state.wakeups = config.wakeups
    // What each kind kept of its balloons (Xen: the grant) is taken up from
    // a previous run of this boot; from another boot its driver decides.
    let resumed = previous.map {
      Self.resumeKept($0, root: root, nowWall: Clock.wall(), nowBoottime: Clock.boottime())
    }
    recorder = Recorder(
      state: state,
      previous: resumed, store: store, mode: config.mode,
      intervalSeconds: config.intervalSeconds, logger: logger)
  }

  /// A restarted daemon gives each balloon's driver what the previous run
  /// kept of it (`BalloonDriver.resume`), saying whether that run was in
  /// this boot: its boot began (updated_at − updated_boottime) when this one
  /// did, within `sameBootSeconds`. Xen resumes its grant only then
  /// (XenDriver.swift).
  static func resumeKept(
    _ previous: DaemonState, root: Root, nowWall: Int64, nowBoottime: Double
  ) -> DaemonState {
    var previous = previous
    let trusted = sameBoot(previous, nowWall: nowWall, nowBoottime: nowBoottime)
    for index in previous.balloons.indices {
      let record = previous.balloons[index]
      previous.balloons[index].kept = record.kind.driver.resume(
        record.kept, sysPath: record.sysPath, root: root, sameBoot: trusted)
    }
    return previous
  }

  static let sameBootSeconds = 10.0

  static func sameBoot(_ previous: DaemonState, nowWall: Int64, nowBoottime: Double) -> Bool {
    guard previous.updatedBoottime <= nowBoottime else { return false }
    let then = Double(previous.updatedAt) - previous.updatedBoottime
    let now = Double(nowWall) - nowBoottime
    return abs(then - now) <= sameBootSeconds
  }

  public var state: DaemonState { recorder.state }
  /// VMware: publishes the limit as guestinfo variables each tick it changes.
  public var guestInfo: GuestInfoPublisher? {
    get { recorder.guestInfo }
    set { recorder.guestInfo = newValue }
  }
  public var devices: [BalloonDevice] { reader.devices }

  /// Ask for discovery on the next tick (a udev event arrived).
  public func invalidateDevices() { reader.invalidateDevices() }

  /// Balloons held from a previous run, to log at start-up.
  public var heldBalloons: [BalloonRecord] { recorder.heldBalloons }

  public func tick(now: Double = Clock.boottime(), wall: Int64 = Clock.wall()) throws(SourceError)
    -> TickReport
  {
    try tick(now: now, wall: wall, strict: false)
  }

  /// `run --once`: the same tick, but it fails as `status` does (one error
  /// naming the file) when a discovered balloon or the processes cannot be
  /// read, before deciding anything.
  public func tickOnce(now: Double = Clock.boottime(), wall: Int64 = Clock.wall())
    throws(SourceError) -> TickReport
  {
    try tick(now: now, wall: wall, strict: true)
  }

  private func tick(now: Double, wall: Int64, strict: Bool) throws(SourceError) -> TickReport {
    // Armed again below only by a tick that proves the state steady.
    steady = nil
    let reading = try reader.read(now: now, strict: strict, held: recorder.state.balloons)
    if !strict, let report = try quietTick(reading, now: now, wall: wall) {
      armSteadyTick(reading)
      return report
    }
    let revision = recorder.revision
    let plans = policy.plan(
      reading, holds: recorder.state.balloons, unverified: recorder.unverifiedHolds, now: now)
    let outcomes = executor.execute(plans, now: now)
    try recorder.record(reading, outcomes: outcomes, now: now, wall: wall)
    quiet =
      strict || !quietTicks || recorder.revision != revision
      ? nil : QuietTick(reading, outcomes: outcomes, recorder: recorder)
    armSteadyTick(reading)
    var report = TickReport(
      snapshot: reading.snapshot, decisions: outcomes.map(\.decision),
      performed: outcomes.compactMap(\.performed))
    report.unreadable = reading.unreadable
    return report
  }

  // MARK: Quiet ticks

  /// Whether a tick whose inputs match the last quiet one skips the plan,
  /// executor and recorder stages (tests turn it off to compare).
  public var quietTicks = true
  /// How many ticks took the quiet path.
  public private(set) var quietTicksTaken = 0
  private var quiet: QuietTick?

  /// A tick that changed nothing: every balloon listed and readable, none
  /// held or awaiting its check, each decided `none` with its hold state
  /// unchanged, no lever wanted, no record changed. Kept so the next ticks,
  /// the idle daemon's, can be proven to do the same at a fraction of the cost.
  struct QuietTick {
    var devices: [BalloonDevice]
    var observations: [BalloonObservation]
    /// The hold each decision was taken from.
    var previous: [HoldState]
    var revision: Int

    init?(_ reading: TickReading, outcomes: [BalloonOutcome], recorder: Recorder) {
      guard reading.unreadable.isEmpty, recorder.unverifiedHolds.isEmpty,
        outcomes.count == reading.sights.count,
        !recorder.state.balloons.contains(where: { $0.hold.held })
      else { return nil }
      for (sight, outcome) in zip(reading.sights, outcomes) {
        let plan = outcome.plan
        guard sight.listed, outcome.decision.action == .none, outcome.performed == nil,
          !outcome.attempted, plan.droppedHold == nil, !plan.verified,
          outcome.next == plan.previous
        else { return nil }
      }
      devices = reading.devices
      observations = reading.sights.map(\.observation)
      previous = outcomes.map(\.plan.previous)
      revision = recorder.revision
    }
  }

  /// The idle daemon's tick. When the records are those of the last quiet
  /// tick and every balloon is seen exactly as then, the full path would
  /// find each plan's record equal to the stored one and no verification
  /// due, so its decisions are `Policy.decide` on the same observation and
  /// hold with this tick's limit and time. If each is again `none` with the
  /// hold unchanged, no lever is wanted (the executor does nothing) and the
  /// recorder changes no record and writes nothing: it only keeps the limit
  /// and logs the steady decisions. That is done here, and the report is the
  /// one the full path would return (ControllerTests compares the two on a
  /// table of ticks). Anything else: nil, and the tick takes the full path.
  private func quietTick(_ reading: TickReading, now: Double, wall: Int64) throws(SourceError)
    -> TickReport?
  {
    guard let quiet, recorder.revision == quiet.revision, reading.unreadable.isEmpty,
      reading.sights.count == quiet.observations.count, reading.devices == quiet.devices
    else { return nil }
    let limit = reading.snapshot.limit.bytes
    var decisions: [Decision] = []
    decisions.reserveCapacity(quiet.observations.count)
    for index in reading.sights.indices {
      let sight = reading.sights[index]
      guard sight.listed, sight.observation == quiet.observations[index] else { return nil }
      let previous = quiet.previous[index]
      let (decision, next) = Policy.decide(
        sight.observation, limitBytes: limit, state: previous, now: now, config: policy.config)
      guard decision.action == .none, next == previous else { return nil }
      decisions.append(decision)
    }
    recorder.recordQuiet(decisions, limit: limit)
    try recorder.keepUpQuiet(reading, now: now, wall: wall)
    quietTicksTaken &+= 1
    return TickReport(snapshot: reading.snapshot, decisions: decisions, performed: [])
  }

  // MARK: Steady ticks

  /// Whether the daemon's idle ticks may take `steadyTick` (tests turn it off to compare).
  public var steadyTicks = true
  /// How many ticks took the steady path.
  public private(set) var steadyTicksTaken = 0
  private var steady: SteadyTick?

  /// What a steady tick compares with: the last quiet tick's facts, reduced
  /// to a few numbers (no arrays, strings or references), so the idle tick
  /// touches little memory and little code after each sleep (BENCHMARKS.md).
  struct SteadyTick {
    var revision: Int
    /// /proc/meminfo's `Balloon:` then: the same value (with the cached
    /// vmstat) gives the same balloon readings.
    var meminfoBalloon: UInt64?
    /// Σ of the sizes of the balloons that take their pages out of MemTotal.
    var balloonBytes: UInt64
    /// Policy decides `none` with the hold unchanged for every balloon at
    /// any limit from here up.
    var lowestQuietLimit: UInt64

    /// Armed only where `Policy.releasable` provably decides `none` and keeps
    /// the hold for every limit ≥ `lowestQuietLimit`: every balloon's driver
    /// `steadyFromCounters` (decided by Policy.releasable), not held, no
    /// blind re-admit whose escalation could expire, read from the counters
    /// only (TickReader.readsCountersOnly); present and bound, a balloon
    /// acts only when its size or target is over the limit; absent or
    /// unbound, never. Debug logging writes a line per balloon per tick,
    /// which this path does not: not armed then.
    init?(_ quiet: QuietTick, reading: TickReading, reader: TickReader, logger: Logger) {
      guard logger.logLevel > .debug, reader.readsCountersOnly,
        reading.devices.isEmpty || reading.snapshot.meminfo.balloon != nil
      else { return nil }
      var lowest: UInt64 = 0
      for (observation, hold) in zip(quiet.observations, quiet.previous) {
        guard observation.kind.driver.steadyFromCounters, !hold.held, hold.blindReadmitAt == nil,
          observation.unreadable == nil
        else { return nil }
        if observation.present && observation.bound {
          lowest = max(lowest, observation.currentBytes ?? 0, observation.targetBytes ?? 0)
        }
      }
      var balloonBytes: UInt64 = 0
      for balloon in reading.snapshot.balloons where balloon.device.removesFromMemTotal {
        if let current = balloon.effectiveCurrentBytes { balloonBytes = balloonBytes +| current }
      }
      revision = quiet.revision
      meminfoBalloon = reading.snapshot.meminfo.balloon
      self.balloonBytes = balloonBytes
      lowestQuietLimit = lowest
    }
  }

  private func armSteadyTick(_ reading: TickReading) {
    guard steadyTicks, let quiet else { return }
    steady = SteadyTick(quiet, reading: reading, reader: reader, logger: logger)
  }

  /// The idle daemon's tick, for a caller that needs no report (the daemon
  /// without a metrics file): true when it did all the full tick would,
  /// false (having changed nothing) when the full `tick` must run.
  ///
  /// After a quiet tick (see `quietTick`), if discovery, /proc/vmstat and
  /// the process scan are not due and /proc/meminfo shows the same
  /// `Balloon:`, the full path would read every balloon as then, so its
  /// decisions are those of the quiet path with this tick's limit; with the
  /// limit at or above `lowestQuietLimit` each is `none` with the hold
  /// unchanged, logged at debug level only (not written: see SteadyTick),
  /// so the recorder only keeps the limit. QuietTickTests compares this
  /// path with the full one tick by tick.
  public func steadyTick(now: Double = Clock.boottime()) -> Bool {
    // A VMware host told the limit, or a new pinned peak, is the full
    // tick's (Recorder.record) to keep up.
    guard let steady, recorder.revision == steady.revision, recorder.guestInfo == nil,
      let meminfo = reader.readSteadyMeminfo(now: now), meminfo.balloon == steady.meminfoBalloon,
      let (limit, pinned) = reader.steadyLimitBytes(meminfo, balloonBytes: steady.balloonBytes),
      limit >= steady.lowestQuietLimit, !recorder.raisesPinnedPeak(pinned)
    else { return false }
    reader.noteSteadyTick()
    recorder.recordQuiet([], limit: limit)
    steadyTicksTaken &+= 1
    return true
  }

  /// Gives back every balloon this daemon holds (`--on-exit readmit`): one
  /// tick with the policy told it is exiting (rebinds virtio, reloads
  /// vmw_balloon, restores Xen's host target). Only devices discovery lists
  /// now are acted on (paths in the state file are never used); the
  /// vmw_balloon module is reloaded by name.
  public func readmitAll() -> [(Decision, ActuatorError?)] {
    guard executor.enforcing else { return [] }
    let now = Clock.boottime()
    let wall = Clock.wall()
    let held = recorder.heldBalloons
    guard !held.isEmpty else {
      try? recorder.persist(now: now, wall: wall)
      return []
    }
    reader.invalidateDevices()
    let reading: TickReading
    do {
      reading = try reader.read(now: now, strict: false, held: recorder.state.balloons)
    } catch {
      // Nothing known of the guest now: nothing is given back.
      return held.map {
        (
          Decision(.readmit, balloon: $0.name, why: .exiting),
          ActuatorError("\($0.name): cannot read the guest to re-admit it: \(error)")
        )
      }
    }
    let plans = policy.plan(
      reading, holds: recorder.state.balloons, unverified: recorder.unverifiedHolds, now: now,
      exiting: true)
    let outcomes = executor.execute(plans, now: now, exiting: true)
    try? recorder.record(reading, outcomes: outcomes, now: now, wall: wall, exiting: true)
    return outcomes.map { ($0.performed?.decision ?? $0.decision, $0.performed?.error) }
  }

  /// Records an OOM kill (nil victim: seen only in the `oom_kill` counter)
  /// from a fresh reading of every balloon, the limit and the pinned memory,
  /// taken now through the tick's reader (vmstat included, not the cached one).
  /// In report mode too: it reads and writes only the state.
  public func recordOOM(
    _ victim: OOMVictim?, now: Double = Clock.boottime(), wall: Int64 = Clock.wall()
  ) throws(SourceError) -> (record: OOMRecord, snapshot: GuestSnapshot) {
    reader.invalidateVmstat()
    let reading = try reader.read(now: now, strict: false, held: recorder.state.balloons)
    // Gone: its memory no longer counts in the reading (OOMRecord.make).
    let gone = victim.map { !SystemFile.exists(root.path("/proc/\($0.pid)/status")) } ?? false
    let record = OOMRecord.make(
      victim: victim, snapshot: reading.snapshot, wall: wall, now: now, victimGone: gone)
    try recorder.recordOOM(record, now: now, wall: wall)
    return (record, reading.snapshot)
  }

  /// The daemon's events were attached after start-up (the driver's module
  /// loaded after the daemon started): recorded for `status`.
  public func recordWakeups(_ wakeups: Wakeups) throws(SourceError) {
    try recorder.recordWakeups(wakeups, now: Clock.boottime(), wall: Clock.wall())
  }

  /// The PCI window refused its write (RefusedOnceProbe): kept in the state
  /// file beside the wake-up mode, for `status`.
  public func recordTargetProblem(_ problem: String) throws(SourceError) {
    try recorder.recordTargetProblem(problem, now: Clock.boottime(), wall: Clock.wall())
  }

  /// Writes the state now (at start-up, so `status` sees the daemon at once).
  public func persistNow() throws(SourceError) {
    try recorder.persist(now: Clock.boottime(), wall: Clock.wall())
  }
}
