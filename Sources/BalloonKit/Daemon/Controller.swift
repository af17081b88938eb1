public import Logging
public import SystemPackage

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

  public init(
    mode: ControlMode, fraction: Double = BalloonLimit.defaultFraction,
    policy: PolicyConfig = .default, intervalSeconds: Double = 1, processScanSeconds: Double = 600,
    processScanSecondsWithoutCounters: Double = 30, rediscoverSeconds: Double = 300
  ) {
    self.mode = mode
    self.fraction = fraction
    self.policy = policy
    self.intervalSeconds = intervalSeconds
    self.processScanSeconds = processScanSeconds
    self.processScanSecondsWithoutCounters = processScanSecondsWithoutCounters
    self.rediscoverSeconds = rediscoverSeconds
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

/// One control step, discover → read → account → limit → decide → act →
/// record. The daemon calls `tick` every interval and on events; `run --once`
/// calls it once. Holds no threads and does no waiting.
public final class Controller {
  public let root: Root
  public let config: ControllerConfig
  let actuators: Actuators?
  let probe: (any VirtioConfigProbe)?
  let store: StateStore?
  let logger: Logger

  public private(set) var state: DaemonState
  public private(set) var devices: [BalloonDevice] = []
  private var lastDiscovery = -Double.infinity
  private var discoveryDue = true

  // The two files read every tick stay open (one pread each).
  private let meminfoFile: KeptOpenFile
  private let vmstatFile: KeptOpenFile
  /// Their paths as text, made once: the parsers take the path for their
  /// errors, and converting the FilePath every tick ran SystemPackage's path
  /// code on every idle tick for nothing (BENCHMARKS.md, section 1).
  private let meminfoPath: String
  private let vmstatPath: String
  private var vmPinSum: UInt64?
  /// VmPin per pid from the last scan, so a status that turns unreadable
  /// keeps counting what it pinned (the limit never rises for that reason).
  private var lastKnownVmPin: [Int32: UInt64] = [:]
  private var vmPinCoverage: VmPinCoverage?
  private var loggedScanProblem: String?
  private var lastProcessScan = -Double.infinity
  private var lastFollOutstanding: UInt64?
  /// The last /proc/vmstat read, its age in ticks, and whether the last tick
  /// acted on a virtio size without the device's own `actual`.
  private var lastVmstat: Vmstat?
  private var ticksSinceVmstat = 0
  private var virtioSizeFromCounters = false
  /// How often /proc/vmstat is read when nothing needs it every tick (its
  /// pin counters move slowly; a change of them triggers the process scan).
  public static let vmstatEveryTicks = 10
  /// Per balloon, the last decision logged at notice, so a steady state is
  /// not re-logged every tick.
  private var lastLogged: [String: Decision.Action] = [:]
  /// Per balloon key, the read error last logged (logged again only when it changes).
  private var loggedUnreadable: [String: String] = [:]
  /// Held records resumed from the state file that have not yet been checked
  /// against the device (the state file is untrusted; see `verifyResumed`).
  private var unverifiedHolds: Set<String> = []

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
    self.actuators = actuators
    self.probe = probe
    self.store = store
    self.logger = logger
    meminfoFile = KeptOpenFile(root.path(MeminfoReader.path), capacity: 8192)
    vmstatFile = KeptOpenFile(root.path(VmstatReader.path), capacity: 16384)
    meminfoPath = meminfoFile.path.string
    vmstatPath = vmstatFile.path.string
    var state = DaemonState(
      pid: pid, mode: config.mode.rawValue,
      intervalMilliseconds: UInt64((config.intervalSeconds * 1000).rounded()),
      startedAt: Clock.wall())
    if let previous {
      // Resume holds (and their back-off) from a previous run, crashed or not.
      state.balloons = previous.balloons
      unverifiedHolds = Set(previous.balloons.filter { $0.hold.held }.map(\.key))
    }
    self.state = state
  }

  /// Ask for discovery on the next tick (a udev event arrived).
  public func invalidateDevices() { discoveryDue = true }

  /// Balloons held from a previous run, to log at start-up.
  public var heldBalloons: [BalloonRecord] { state.balloons.filter { $0.hold.held } }

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
    if discoveryDue || now - lastDiscovery >= config.rediscoverSeconds {
      let found = try Discovery.discover(root: root)
      if found != devices {
        logger.info(
          "balloons discovered",
          metadata: ["balloons": "\(found.map { "\($0.name)(\($0.driver ?? "unbound"))" })"])
      }
      devices = found
      lastDiscovery = now
      discoveryDue = false
    }

    let meminfo = try readMeminfo()
    let vmstat = try vmstatForTick(meminfo: meminfo)
    try refreshVmPin(vmstat: vmstat, now: now, strict: strict)

    // The same reading as `status` (BalloonReaders.readAll). A listed balloon
    // that cannot be read is not gone: it keeps its hold and gets no lever.
    var readings: [BalloonReading] = []
    var unreadable: [(device: BalloonDevice, error: SourceError)] = []
    let results = BalloonReaders.readAll(
      devices, root: root, meminfo: meminfo, vmstat: vmstat, probe: probe)
    for (device, result) in zip(devices, results) {
      switch result {
      case .success(let reading): readings.append(reading)
      case .failure(let error):
        if strict { throw error }
        unreadable.append((device, error))
      }
    }
    noteReadErrors(unreadable)
    virtioSizeFromCounters = readings.contains {
      $0.device.kind == .virtio && $0.deviceActualBytes == nil
    }
    let snapshot = GuestSnapshot.assemble(
      balloons: readings, meminfo: meminfo, vmstat: vmstat, vmPinSumBytes: vmPinSum,
      vmPinCoverage: vmPinCoverage, fraction: config.fraction)
    state.limitBytes = snapshot.limit.bytes

    var decisions: [Decision] = []
    var performed: [(decision: Decision, error: ActuatorError?)] = []
    var changed = false
    func record(_ outcome: StepOutcome) {
      decisions.append(outcome.decision)
      if let done = outcome.performed { performed.append(done) }
      changed = changed || outcome.changed
    }

    // Balloons discovery lists, in its order: read, or unreadable.
    for (device, result) in zip(devices, results) {
      let seen: Seen
      switch result {
      case .success(let reading): seen = .read(reading)
      case .failure(let error): seen = .unreadable(error)
      }
      record(step(device, seen: seen, snapshot: snapshot, now: now, wall: wall))
    }
    // Balloons we hold that discovery no longer lists (a released vmw_balloon
    // is unloaded; a virtio device may be unplugged). Their identity comes
    // from the state file, so no path of theirs is ever acted on: only the
    // vmw_balloon module (a fixed name, no path) can be re-admitted.
    for held in state.balloons where held.hold.held {
      guard !devices.contains(where: { $0.kind == held.kind && $0.name == held.name }) else {
        continue
      }
      let device =
        held.kind == .vmware && held.name == Self.vmwModule.name
        ? Self.vmwModule
        : BalloonDevice(kind: held.kind, name: held.name, sysPath: "", driver: nil)
      record(step(device, seen: .absent, snapshot: snapshot, now: now, wall: wall))
    }

    // Written on change only: a steady tick writes nothing.
    if changed { try persist(now: now, wall: wall) }
    var report = TickReport(snapshot: snapshot, decisions: decisions, performed: performed)
    report.unreadable = unreadable
    return report
  }

  /// The vmw_balloon module as discovery names it when loaded. A held VMware
  /// balloon is unloaded (absent) by design; re-admitting it is a modprobe
  /// of this fixed name, never of anything read from the state file.
  static let vmwModule = BalloonDevice(
    kind: .vmware, name: "vmw_balloon", sysPath: SysfsDiscovery.vmwModule, driver: nil)

  /// What a tick saw of one balloon.
  private enum Seen {
    case read(BalloonReading)
    /// Listed by discovery; its files could not be read.
    case unreadable(SourceError)
    /// Not listed by discovery (only held records get a step then).
    case absent
  }

  private typealias StepOutcome = (
    decision: Decision, performed: (decision: Decision, error: ActuatorError?)?, changed: Bool
  )

  /// Logs each balloon's read error at error level once per change of the
  /// error, and its recovery once. A new error also asks for discovery on the
  /// next tick: a device being unplugged then shows as gone, not unreadable.
  private func noteReadErrors(_ unreadable: [(device: BalloonDevice, error: SourceError)]) {
    var now: [String: String] = [:]
    for (device, error) in unreadable {
      let key = BalloonRecord.key(kind: device.kind, name: device.name)
      let text = error.description
      now[key] = text
      guard loggedUnreadable[key] != text else { continue }
      let held = state.record(forKey: key)?.hold.held ?? false
      logger.error(
        "balloon unreadable; no action on it until it reads again",
        metadata: [
          "balloon": "\(device.name)", "kind": "\(device.kind.rawValue)", "error": "\(text)",
          "hold": "\(held ? "kept" : "none")",
        ])
      discoveryDue = true
    }
    for (key, _) in loggedUnreadable where now[key] == nil {
      if let device = devices.first(where: {
        BalloonRecord.key(kind: $0.kind, name: $0.name) == key
      }) {
        logger.notice("balloon readable again", metadata: ["balloon": "\(device.name)"])
      }
    }
    loggedUnreadable = now
  }

  /// Decide for one balloon and, in enforce mode, act on it.
  private func step(
    _ device: BalloonDevice, seen: Seen, snapshot: GuestSnapshot, now: Double, wall: Int64
  ) -> StepOutcome {
    let index = state.balloons.firstIndex { $0.kind == device.kind && $0.name == device.name }
    let stored = index.map { state.balloons[$0] }
    var record =
      stored
      ?? BalloonRecord(
        kind: device.kind, name: device.name, sysPath: device.sysPath,
        hold: config.policy.freshState)
    let listed = devices.contains(device)
    var reading: BalloonReading?
    var readError: SourceError?
    switch seen {
    case .read(let value): reading = value
    case .unreadable(let error): readError = error
    case .absent: break
    }
    if listed { record.sysPath = device.sysPath }
    let limit = snapshot.limit.bytes
    var observation = observe(device, reading: reading, listed: listed, held: record.hold.held)
    observation.unreadable = readError
    // Bound or not comes from discovery; Xen's target_kb needs a reading.
    // (The key is a string built on demand: not every tick, only while a
    // resumed hold waits for its check.)
    if !unverifiedHolds.isEmpty, unverifiedHolds.contains(record.key),
      readError == nil || device.kind != .xen
    {
      record.hold = verifyResumed(record, device: device, observation: observation)
      unverifiedHolds.remove(record.key)
    }
    // Report mode never holds anything, so it judges every tick afresh.
    let previous = config.mode == .enforce ? record.hold : config.policy.freshState
    var (decision, next) = Policy.decide(
      observation, limitBytes: limit, state: previous, now: now, config: config.policy)

    // A lever is pulled only on a device discovery lists now (or on the
    // vmw_balloon module, by its fixed name), never on one we could not read.
    let mayAct = readError == nil && (listed || device == Self.vmwModule)
    var done: (decision: Decision, error: ActuatorError?)?
    if decision.action != .none && decision.action != .alert, mayAct, let actuators {
      // Re-read just before pulling a lever: the state may have moved since
      // the tick began (the balloon finished deflating, the host changed its mind).
      if let fresh = reread(device) {
        let again = Policy.decide(
          observe(device, reading: fresh, listed: listed, held: record.hold.held),
          limitBytes: limit, state: previous, now: now, config: config.policy)
        if again.0.action != decision.action {
          decision = again.0
          next = again.1
        }
      }
      if decision.action != .none && decision.action != .alert {
        let error = act(decision, device: device, actuators: actuators)
        done = (decision, error)
        if error != nil { next = record.hold }  // the lever failed: nothing changed
        logAction(decision, device: device, before: reading, limit: limit, error: error)
      }
    } else {
      if decision.action != .none && decision.action != .alert && !mayAct {
        // A lever wanted on a balloon that is neither listed nor the vmw
        // module (a record naming no real device): treated as gone, like a
        // hot-unplugged one; the hold is dropped and nothing is touched.
        decision = Decision(.none, balloon: device.name, why: .deviceGone)
        next = config.policy.freshState
        next.releases = record.hold.releases
      }
      logDecision(decision, mode: config.mode)
    }

    if config.mode == .enforce { record.hold = next }
    // Keep the first decision of each kind: reasons carry sizes that move
    // every tick, and a steady state must not rewrite the state file. An
    // unreadable balloon is recorded (for `status`) once per error.
    let last = record.lastDecision
    if last?.action != decision.action || (done != nil && done?.error == nil)
      || last?.why.isUnreadable != decision.why.isUnreadable
      || (decision.why.isUnreadable && last?.why != decision.why)
    {
      record.lastDecision = decision
      record.lastDecisionAt = wall
    }
    guard record != stored else { return (decision, done, false) }
    if let index {
      state.balloons[index] = record
    } else {
      state.balloons.append(record)
    }
    return (decision, done, true)
  }

  /// A hold resumed from the state file is honoured only if the device is in
  /// the state our hold leaves it: a released virtio balloon is unbound, a
  /// released vmw_balloon unloaded, a Xen hold has the target_kb we wrote.
  /// Anything else was not held by us (a stale or forged file): the hold is
  /// dropped with a warning and the balloon decided from scratch, so the
  /// daemon never "re-admits" a device it did not release.
  private func verifyResumed(
    _ record: BalloonRecord, device: BalloonDevice, observation: BalloonObservation
  )
    -> HoldState
  {
    guard record.hold.held, devices.contains(device) else { return record.hold }
    let problem: String?
    switch record.kind {
    case .virtio, .vmware:
      problem =
        device.bound
        ? "the state file says held, but it is bound to \(device.driver ?? "a driver")" : nil
    case .xen:
      let written = record.hold.xenWrittenTargetKiB
      problem =
        written != nil && written == observation.xenTargetKiB
        ? nil
        : "the state file says held at target_kb \(written.map { "\($0)" } ?? "unknown"), but target_kb is \(observation.xenTargetKiB.map { "\($0)" } ?? "unreadable")"
    case .hyperv:
      problem = "the state file says held, but Hyper-V balloons are never held"
    }
    guard let problem else { return record.hold }
    logger.warning(
      "resumed hold is not ours; dropped",
      metadata: [
        "balloon": "\(record.name)", "kind": "\(record.kind.rawValue)", "why": "\(problem)",
      ])
    var fresh = config.policy.freshState
    fresh.releases = record.hold.releases
    return fresh
  }

  /// Gives back every balloon this daemon holds (`--on-exit readmit`): rebinds
  /// virtio, reloads vmw_balloon, restores Xen's host target.
  public func readmitAll() -> [(Decision, ActuatorError?)] {
    guard let actuators else { return [] }
    // Only devices discovery lists now are acted on (paths in the state
    // file are never used); the vmw_balloon module is reloaded by name.
    let listed = (try? Discovery.discover(root: root)) ?? devices
    var results: [(Decision, ActuatorError?)] = []
    for var record in state.balloons where record.hold.held {
      var decision = Decision(
        .readmit, balloon: record.name, reason: "stopping with --on-exit readmit")
      let device: BalloonDevice
      if let found = listed.first(where: { $0.kind == record.kind && $0.name == record.name }) {
        device = found
      } else if record.kind == .vmware && record.name == Self.vmwModule.name {
        device = Self.vmwModule
      } else {
        results.append(
          (decision, ActuatorError("\(record.name): not listed by discovery; nothing to re-admit")))
        continue
      }
      var error: ActuatorError?
      if record.kind == .xen {
        // Restore the host's wish: the reservation minus the balloon it asked
        // for, unless the toolstack set a target since (then it stands).
        let xen = try? XenBalloonReader.read(device: device, root: root)
        if let xen, record.hold.xenWrittenTargetKiB != xen.reservationTargetBytes / 1024 {
          decision = Decision(
            .none, balloon: record.name,
            reason: "target_kb is no longer the one balloonctl wrote; left as the host set it")
        } else if let wish = record.hold.xenHostBalloonTargetBytes, let xen {
          let reservation = xen.currentReservationBytes +| xen.balloonBytes
          let kib = ((reservation > wish ? reservation - wish : 0) +| 1023) / 1024
          decision = Decision(
            .setTarget, balloon: record.name, reason: decision.reason, balloonTargetBytes: wish,
            xenTargetKiB: kib)
          error = act(decision, device: device, actuators: actuators)
        } else {
          error = ActuatorError(
            "\(record.name): the host's target is not known; target_kb left as is")
        }
      } else {
        error = act(decision, device: device, actuators: actuators)
      }
      if error == nil {
        record.hold = config.policy.freshState
        record.hold.releases = state.record(forKey: record.key)?.hold.releases ?? 0
        record.lastDecision = decision
        record.lastDecisionAt = Clock.wall()
        state.update(record)
      }
      results.append((decision, error))
    }
    try? persistNow()
    return results
  }

  private func observe(
    _ device: BalloonDevice, reading: BalloonReading?, listed: Bool, held: Bool
  ) -> BalloonObservation {
    // An unlisted device's path is not trusted (it came from the state file).
    let canAct = listed || device == Self.vmwModule
    var observation = BalloonObservation(
      kind: device.kind, name: device.name, present: listed,
      bound: listed && device.bound,
      currentBytes: reading?.effectiveCurrentBytes, targetBytes: reading?.target.bytes,
      leverAvailable: canAct ? (actuators?.leverAvailable(for: device, held: held) ?? true) : false)
    if device.kind == .xen, reading != nil,
      let xen = try? XenBalloonReader.read(device: device, root: root)
    {
      observation.xenReservationBytes = xen.currentReservationBytes +| xen.balloonBytes
      observation.xenTargetKiB = xen.reservationTargetBytes / 1024
    }
    return observation
  }

  private func reread(_ device: BalloonDevice) -> BalloonReading? {
    guard devices.contains(device) else { return nil }
    do {
      let meminfo = try readMeminfo()
      let vmstat = try readVmstat()
      return try BalloonReaders.read(
        device, root: root, meminfo: meminfo, vmstat: vmstat, probe: probe)
    } catch {
      return nil
    }
  }

  private func act(_ decision: Decision, device: BalloonDevice, actuators: Actuators)
    -> ActuatorError?
  {
    do {
      switch decision.action {
      case .release: try actuators.release(device)
      case .readmit: try actuators.readmit(device)
      case .setTarget:
        guard let kib = decision.xenTargetKiB else {
          return ActuatorError("set_target without target_kb")
        }
        try actuators.setXenTarget(device, kib: kib)
      case .none, .alert: return nil
      }
      // Bound state and sizes changed: look again on the next tick.
      discoveryDue = true
      return nil
    } catch {
      return error
    }
  }

  private func logAction(
    _ decision: Decision, device: BalloonDevice, before: BalloonReading?, limit: UInt64,
    error: ActuatorError?
  ) {
    var metadata: Logger.Metadata = [
      "balloon": "\(device.name)", "kind": "\(device.kind.rawValue)",
      "action": "\(decision.action.rawValue)",
      "limit_bytes": "\(limit)", "reason": "\(decision.reason)",
    ]
    if let current = before?.effectiveCurrentBytes { metadata["before_bytes"] = "\(current)" }
    if let target = before?.target.bytes { metadata["target_bytes"] = "\(target)" }
    if let kib = decision.xenTargetKiB { metadata["target_kb"] = "\(kib)" }
    if let error {
      metadata["error"] = "\(error)"
      logger.error("lever failed", metadata: metadata)
      return
    }
    if let after = reread(device)?.effectiveCurrentBytes { metadata["after_bytes"] = "\(after)" }
    // A release is the guard stepping in: warning, so `journalctl -p warning`
    // shows every time it acted against the host's request.
    let level: Logger.Level = decision.action == .release ? .warning : .notice
    logger.log(level: level, "\(decision.action.rawValue) \(device.name)", metadata: metadata)
    lastLogged[device.name] = decision.action
  }

  private func logDecision(_ decision: Decision, mode: ControlMode) {
    // The metadata is an autoclosure: built only if a line is written.
    func metadata() -> Logger.Metadata {
      [
        "balloon": "\(decision.balloon)", "action": "\(decision.action.rawValue)",
        "reason": "\(decision.reason)",
      ]
    }
    guard lastLogged[decision.balloon] != decision.action else {
      logger.debug("tick", metadata: metadata())
      return
    }
    lastLogged[decision.balloon] = decision.action
    switch decision.action {
    case .none: logger.info("steady", metadata: metadata())
    case .alert: logger.warning("over the limit with no lever", metadata: metadata())
    case .release, .readmit, .setTarget:
      // Report mode: what enforce mode would do.
      logger.notice("would \(decision.action.rawValue) \(decision.balloon)", metadata: metadata())
    }
  }

  private func persist(now: Double, wall: Int64) throws(SourceError) {
    state.updatedAt = wall
    state.updatedBoottime = now
    try store?.save(state)
  }

  /// Writes the state now (at start-up, so `status` sees the daemon at once).
  public func persistNow() throws(SourceError) {
    try persist(now: Clock.boottime(), wall: Clock.wall())
  }

  private func readMeminfo() throws(SourceError) -> Meminfo {
    guard try meminfoFile.refresh() else {
      throw SourceError(path: meminfoPath, .unreadable(.noSuchFileOrDirectory))
    }
    return try meminfoFile.withBytes { bytes throws(SourceError) in
      try MeminfoReader.parse(bytes, path: meminfoPath)
    }
  }

  /// /proc/vmstat (the costlier of the two files) is read every tick only
  /// when it holds the freshest evidence of a size the daemon acts on: a
  /// virtio balloon in enforce mode without the device's `actual` (the
  /// balloon_inflate/deflate events lead the lagging gauge), or a kernel
  /// without `Balloon:` in meminfo (< 6.15: the events are the only size).
  /// Otherwise every `vmstatEveryTicks` ticks, for the pin counters.
  private func vmstatForTick(meminfo: Meminfo) throws(SourceError) -> Vmstat {
    let sizedByVmstat = devices.contains { $0.kind == .virtio || $0.kind == .hyperv }
    let everyTick =
      (sizedByVmstat && meminfo.balloon == nil)
      || (config.mode == .enforce && virtioSizeFromCounters)
    if let lastVmstat, !everyTick, ticksSinceVmstat + 1 < Self.vmstatEveryTicks {
      ticksSinceVmstat += 1
      return lastVmstat
    }
    let vmstat = try readVmstat()
    lastVmstat = vmstat
    ticksSinceVmstat = 0
    return vmstat
  }

  private func readVmstat() throws(SourceError) -> Vmstat {
    guard try vmstatFile.refresh() else {
      throw SourceError(path: vmstatPath, .unreadable(.noSuchFileOrDirectory))
    }
    return try vmstatFile.withBytes { bytes throws(SourceError) in
      try VmstatReader.parse(bytes, path: vmstatPath, pageSize: root.pageSize)
    }
  }

  /// Σ VmPin, refreshed when the global pin count moved or the backstop ran
  /// out. A process whose status cannot be read counts with the VmPin last
  /// read from it (unknown, and so 0, if never read); the answer is marked
  /// partial. `strict` (`run --once`) fails on an unlistable /proc as `status` does.
  private func refreshVmPin(vmstat: Vmstat, now: Double, strict: Bool) throws(SourceError) {
    var outstanding: UInt64?
    if let acquired = vmstat.follPinAcquired, let released = vmstat.follPinReleased {
      outstanding = acquired > released ? acquired - released : 0
    }
    let moved = outstanding != lastFollOutstanding
    let backstop =
      outstanding == nil ? config.processScanSecondsWithoutCounters : config.processScanSeconds
    guard vmPinSum == nil || moved || now - lastProcessScan >= backstop else { return }
    lastProcessScan = now
    let scan: ProcessScan
    do {
      scan = try ProcessStatusReader.scan(root: root)
    } catch {
      if strict { throw error }
      vmPinCoverage = VmPinCoverage(firstError: error, scanFailed: true)
      if loggedScanProblem != error.description {
        logger.warning(
          "process scan failed; keeping the last Σ VmPin", metadata: ["error": "\(error)"])
        loggedScanProblem = error.description
      }
      return
    }
    var known: [Int32: UInt64] = [:]
    known.reserveCapacity(scan.processes.count + scan.unreadable.count)
    var sum: UInt64 = 0
    for process in scan.processes {
      sum = sum +| process.pinnedBytes
      known[process.pid] = process.pinnedBytes
    }
    var kept = 0
    for failure in scan.unreadable {
      guard let pid = failure.pid, let last = lastKnownVmPin[pid] else { continue }
      sum = sum +| last
      known[pid] = last
      kept += 1
    }
    lastKnownVmPin = known
    vmPinSum = sum
    lastFollOutstanding = outstanding
    vmPinCoverage = VmPinCoverage(
      unreadableProcesses: scan.unreadable.count, lastKnownProcesses: kept,
      firstError: scan.unreadable.first?.error)
    let problem = scan.unreadable.first?.error.description
    if problem != loggedScanProblem {
      if let problem {
        logger.warning(
          "some processes' VmPin unreadable; Σ VmPin is partial",
          metadata: [
            "unreadable": "\(scan.unreadable.count)", "last_known": "\(kept)",
            "first": "\(problem)",
          ])
      }
      loggedScanProblem = problem
    }
  }
}
