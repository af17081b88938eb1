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
  private var vmPinSum: UInt64?
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
    var state = DaemonState(
      pid: pid, mode: config.mode.rawValue,
      intervalMilliseconds: UInt64((config.intervalSeconds * 1000).rounded()),
      startedAt: Clock.wall())
    if let previous {
      // Resume holds (and their back-off) from a previous run, crashed or not.
      state.balloons = previous.balloons
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
    refreshVmPin(vmstat: vmstat, now: now)

    var readings: [BalloonReading] = []
    for device in devices {
      do {
        readings.append(
          try BalloonReaders.read(
            device, root: root, meminfo: meminfo, vmstat: vmstat, probe: probe))
      } catch {
        // The device may be going away under us (hot-unplug, module unload):
        // skip it this tick and look again.
        logger.warning(
          "balloon unreadable", metadata: ["balloon": "\(device.name)", "error": "\(error)"])
        discoveryDue = true
      }
    }
    virtioSizeFromCounters = readings.contains {
      $0.device.kind == .virtio && $0.deviceActualBytes == nil
    }
    let snapshot = GuestSnapshot.assemble(
      balloons: readings, meminfo: meminfo, vmstat: vmstat, vmPinSumBytes: vmPinSum,
      fraction: config.fraction)
    state.limitBytes = snapshot.limit.bytes

    var decisions: [Decision] = []
    var performed: [(decision: Decision, error: ActuatorError?)] = []
    var changed = false

    // Balloons we see, then balloons we hold that discovery no longer shows
    // (a released vmw_balloon is unloaded; a virtio device may be unplugged).
    for reading in readings {
      let outcome = step(reading.device, reading: reading, snapshot: snapshot, now: now, wall: wall)
      decisions.append(outcome.decision)
      if let done = outcome.performed { performed.append(done) }
      changed = changed || outcome.changed
    }
    for record in state.balloons where record.hold.held {
      guard
        !readings.contains(where: { $0.device.kind == record.kind && $0.device.name == record.name }
        )
      else { continue }
      let device = BalloonDevice(
        kind: record.kind, name: record.name, sysPath: record.sysPath, driver: nil)
      let outcome = step(device, reading: nil, snapshot: snapshot, now: now, wall: wall)
      decisions.append(outcome.decision)
      if let done = outcome.performed { performed.append(done) }
      changed = changed || outcome.changed
    }

    // Written on change only: a steady tick writes nothing.
    if changed { try persist(now: now, wall: wall) }
    return TickReport(snapshot: snapshot, decisions: decisions, performed: performed)
  }

  /// Decide for one balloon and, in enforce mode, act on it.
  private func step(
    _ device: BalloonDevice, reading: BalloonReading?, snapshot: GuestSnapshot, now: Double,
    wall: Int64
  ) -> (decision: Decision, performed: (decision: Decision, error: ActuatorError?)?, changed: Bool)
  {
    let index = state.balloons.firstIndex { $0.kind == device.kind && $0.name == device.name }
    let stored = index.map { state.balloons[$0] }
    var record =
      stored
      ?? BalloonRecord(
        kind: device.kind, name: device.name, sysPath: device.sysPath,
        hold: config.policy.freshState)
    if reading != nil { record.sysPath = device.sysPath }
    let limit = snapshot.limit.bytes
    let observation = observe(device, reading: reading, held: record.hold.held)
    // Report mode never holds anything, so it judges every tick afresh.
    let previous = config.mode == .enforce ? record.hold : config.policy.freshState
    var (decision, next) = Policy.decide(
      observation, limitBytes: limit, state: previous, now: now, config: config.policy)

    var done: (decision: Decision, error: ActuatorError?)?
    if decision.action != .none && decision.action != .alert, let actuators {
      // Re-read just before pulling a lever: the state may have moved since
      // the tick began (the balloon finished deflating, the host changed its mind).
      if let fresh = reread(device) {
        let again = Policy.decide(
          observe(device, reading: fresh, held: record.hold.held), limitBytes: limit,
          state: previous, now: now, config: config.policy)
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
      logDecision(decision, mode: config.mode)
    }

    if config.mode == .enforce { record.hold = next }
    // Keep the first decision of each kind: reasons carry sizes that move
    // every tick, and a steady state must not rewrite the state file.
    if record.lastDecision?.action != decision.action || (done != nil && done?.error == nil) {
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

  /// Gives back every balloon this daemon holds (`--on-exit readmit`): rebinds
  /// virtio, reloads vmw_balloon, restores Xen's host target.
  public func readmitAll() -> [(Decision, ActuatorError?)] {
    guard let actuators else { return [] }
    var results: [(Decision, ActuatorError?)] = []
    for var record in state.balloons where record.hold.held {
      let device =
        devices.first { $0.kind == record.kind && $0.name == record.name }
        ?? BalloonDevice(kind: record.kind, name: record.name, sysPath: record.sysPath, driver: nil)
      var decision = Decision(
        .readmit, balloon: record.name, reason: "stopping with --on-exit readmit")
      var error: ActuatorError?
      if record.kind == .xen {
        // Restore the host's wish: the reservation minus the balloon it asked for.
        if let wish = record.hold.xenHostBalloonTargetBytes,
          let xen = try? XenBalloonReader.read(device: device, root: root)
        {
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

  private func observe(_ device: BalloonDevice, reading: BalloonReading?, held: Bool)
    -> BalloonObservation
  {
    var observation = BalloonObservation(
      kind: device.kind, name: device.name, present: reading != nil,
      bound: reading != nil && device.bound,
      currentBytes: reading?.effectiveCurrentBytes, targetBytes: reading?.target.bytes,
      leverAvailable: actuators?.leverAvailable(for: device, held: held) ?? true)
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
    logger.notice("\(decision.action.rawValue) \(device.name)", metadata: metadata)
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
      throw SourceError(path: meminfoFile.path.string, .unreadable(.noSuchFileOrDirectory))
    }
    return try meminfoFile.withBytes { bytes throws(SourceError) in
      try MeminfoReader.parse(bytes, path: meminfoFile.path.string)
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
      throw SourceError(path: vmstatFile.path.string, .unreadable(.noSuchFileOrDirectory))
    }
    return try vmstatFile.withBytes { bytes throws(SourceError) in
      try VmstatReader.parse(bytes, path: vmstatFile.path.string, pageSize: root.pageSize)
    }
  }

  /// Σ VmPin, refreshed when the global pin count moved or the backstop ran out.
  private func refreshVmPin(vmstat: Vmstat, now: Double) {
    var outstanding: UInt64?
    if let acquired = vmstat.follPinAcquired, let released = vmstat.follPinReleased {
      outstanding = acquired > released ? acquired - released : 0
    }
    let moved = outstanding != lastFollOutstanding
    let backstop =
      outstanding == nil ? config.processScanSecondsWithoutCounters : config.processScanSeconds
    guard vmPinSum == nil || moved || now - lastProcessScan >= backstop else { return }
    do {
      vmPinSum = try ProcessStatusReader.scan(root: root).reduce(0) { $0 +| $1.pinnedBytes }
      lastProcessScan = now
      lastFollOutstanding = outstanding
    } catch {
      logger.warning(
        "process scan failed; keeping the last Σ VmPin", metadata: ["error": "\(error)"])
      lastProcessScan = now
    }
  }
}
