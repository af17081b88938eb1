public import Logging

/// The pipeline's last stage: keeps the daemon's state (the holds), writes
/// the state file when it changed (or when the limit moved, at most once per
/// interval), and logs what each tick saw and did, each thing once per change.
public final class Recorder {
  public private(set) var state: DaemonState
  let store: StateStore?
  let logger: Logger
  let mode: ControlMode
  let intervalSeconds: Double
  /// Held records resumed from the state file that have not yet been checked
  /// against the device (the state file is untrusted; see TickPolicy).
  public private(set) var unverifiedHolds: Set<String> = []

  /// Per balloon, the last decision logged at notice, so a steady state is
  /// not re-logged every tick.
  private var lastLogged: [String: Decision.Action] = [:]
  /// Per balloon key, the read error last logged (logged again only when it changes).
  private var loggedUnreadable: [String: String] = [:]
  /// The limit the state file holds, in whole MiB, and when it was last
  /// written (boot time): while a balloon is held, a limit that moved by a
  /// MiB or more rewrites it at most once per interval, so `status` shows the
  /// hold's re-admit threshold as of the latest tick. Page-level jitter (PageTables, SUnreclaim move
  /// every tick) does not rewrite it, as it does not rewrite the metrics.
  private var savedLimitMiB: UInt64?
  private var lastSaved = -Double.infinity
  /// VMware: tells the host the limit (the daemon sets it when vmware-rpctool exists).
  public var guestInfo: GuestInfoPublisher?
  /// A pinned peak newer than the state file, and the longest it waits for a write.
  private var peakUnsaved = false
  public static let peakWriteSeconds = 300.0
  /// Moves whenever a balloon's record changes (Controller's quiet ticks
  /// check that the records they were proven against are still the ones kept).
  public private(set) var revision = 0

  public init(
    state: DaemonState, previous: DaemonState?, store: StateStore?, mode: ControlMode,
    intervalSeconds: Double, logger: Logger
  ) {
    var state = state
    if let previous {
      // Resume holds (and their back-off) from a previous run, crashed or not.
      state.balloons = previous.balloons
      state.maxPinnedBytes = previous.maxPinnedBytes
      state.maxPinnedAt = previous.maxPinnedAt
      state.oomKills = previous.oomKills
      state.oomKillTotals = previous.oomKillTotals
      unverifiedHolds = Set(previous.balloons.filter { $0.hold.held }.map(\.key))
    }
    self.state = state
    self.store = store
    self.mode = mode
    self.intervalSeconds = intervalSeconds
    self.logger = logger
  }

  /// Balloons held now.
  public var heldBalloons: [BalloonRecord] { state.balloons.filter { $0.hold.held } }

  /// Whether this tick should rewrite the state file for a moved limit alone:
  /// only while a balloon is held, the one time `status` quotes a threshold
  /// from the file. Without swap every anonymous page counts as pinned, so on
  /// a busy guest the limit moves by a MiB most seconds; rewriting (two
  /// fsyncs) for it with nothing held would be most of the idle tick's cost.
  public func limitRefreshDue(_ limitBytes: UInt64, now: Double) -> Bool {
    store != nil && savedLimitMiB != limitBytes >> 20 && now - lastSaved >= intervalSeconds
      && state.balloons.contains { $0.hold.held }
  }

  /// Records one tick: read errors, each outcome's hold and decision, the
  /// logs; writes the state file if anything changed. `exiting`: the give-back
  /// at exit, whose results the caller logs.
  public func record(
    _ reading: TickReading, outcomes: [BalloonOutcome], now: Double, wall: Int64,
    exiting: Bool = false
  ) throws(SourceError) {
    let refresh = !exiting && limitRefreshDue(reading.snapshot.limit.bytes, now: now)
    if !exiting {
      state.limitBytes = reading.snapshot.limit.bytes
      noteReadErrors(reading.unreadable, devices: reading.devices)
    }
    if !exiting { notePinnedPeak(reading.snapshot.pinned.totalBytes, wall: wall) }
    var changed = false
    for outcome in outcomes {
      if outcome.plan.verified { unverifiedHolds.remove(outcome.plan.key) }
      if let problem = outcome.plan.droppedHold {
        logger.warning(
          "resumed hold is not ours; dropped",
          metadata: [
            "balloon": "\(outcome.plan.record.name)",
            "kind": "\(outcome.plan.record.kind.rawValue)", "why": "\(problem)",
          ])
      }
      if !exiting { log(outcome, limit: reading.snapshot.limit.bytes) }
      changed = update(outcome, wall: wall, refresh: refresh, exiting: exiting) || changed
    }
    // Written on change only: a steady tick writes nothing; a moved limit
    // (which moves the thresholds the saved reasons quote) at most once per interval.
    let peakDue = peakUnsaved && now - lastSaved >= Self.peakWriteSeconds
    if changed || refresh || exiting || peakDue { try persist(now: now, wall: wall) }
    if !exiting { publishGuestInfo(reading, now: now) }
  }

  /// What a quiet tick (Controller.quietTick) keeps up besides the limit,
  /// as `record` does: the pinned peak, written when due, and the limit
  /// told to a VMware host.
  func keepUpQuiet(_ reading: TickReading, now: Double, wall: Int64) throws(SourceError) {
    notePinnedPeak(reading.snapshot.pinned.totalBytes, wall: wall)
    if peakUnsaved && now - lastSaved >= Self.peakWriteSeconds { try persist(now: now, wall: wall) }
    publishGuestInfo(reading, now: now)
  }

  /// Whether `pinned` would raise the peak: a steady tick (which keeps only
  /// the limit) must then give way to the full one.
  func raisesPinnedPeak(_ pinned: UInt64) -> Bool {
    guard let peak = state.maxPinnedBytes else { return true }
    return pinned >= peak +| BalloonLimit.mebibyte
  }

  private func publishGuestInfo(_ reading: TickReading, now: Double) {
    guard let guestInfo else { return }
    let peak = AdviceInputs(limit: reading.snapshot.limit, peakPinnedBytes: state.maxPinnedBytes)
    guestInfo.tick(limitBytes: peak.advisedLimitBytes, kinds: reading.devices.map(\.kind), now: now)
  }

  /// Applies one outcome to its record; true when the record changed.
  private func update(_ outcome: BalloonOutcome, wall: Int64, refresh: Bool, exiting: Bool)
    -> Bool
  {
    let plan = outcome.plan
    let decision = outcome.decision
    var record = plan.record
    if exiting {
      // Given back (or found not ours): the hold ends. A failed lever changes nothing.
      guard outcome.performed?.error == nil else { return false }
      record.hold = outcome.next
      record.lastDecision = decision
      record.lastDecisionAt = wall
    } else {
      if mode == .enforce { record.hold = outcome.next }
      // Keep the first decision of each kind: reasons carry sizes that move
      // every tick, and a steady state must not rewrite the state file. An
      // unreadable balloon is recorded (for `status`) once per error. When the
      // limit moved, the decision is refreshed: its reason quotes the limit's thresholds.
      let last = record.lastDecision
      let done = outcome.performed
      if last?.action != decision.action || (done != nil && done?.error == nil)
        || last?.why.isUnreadable != decision.why.isUnreadable
        || (decision.why.isUnreadable && last?.why != decision.why)
        || (refresh && last != decision)
      {
        record.lastDecision = decision
        record.lastDecisionAt = wall
      }
    }
    guard record != plan.stored else { return false }
    state.update(record)
    revision &+= 1
    return true
  }

  /// Raises the pinned peak on a rise of a MiB or more (page-level jitter
  /// is not a new peak). It reaches the file with the next write, or on its
  /// own once `peakWriteSeconds` have passed since the last one: without
  /// swap a busy guest's pinned figure climbs with its anonymous memory, and
  /// a write per rise would be the fsyncs d696c12 took out of the idle tick.
  func notePinnedPeak(_ pinned: UInt64, wall: Int64) {
    if let peak = state.maxPinnedBytes, pinned < peak +| BalloonLimit.mebibyte { return }
    state.maxPinnedBytes = pinned
    state.maxPinnedAt = wall
    peakUnsaved = true
  }

  /// What `record` does on a tick that changes no record and logs no change
  /// (Controller.quietTick has checked that): the limit is kept and each
  /// decision logged as a steady one (at debug level).
  func recordQuiet(_ decisions: [Decision], limit: UInt64) {
    state.limitBytes = limit
    for decision in decisions { logDecision(decision) }
  }

  private func log(_ outcome: BalloonOutcome, limit: UInt64) {
    if let performed = outcome.performed {
      logAction(outcome, limit: limit, error: performed.error)
    } else if !outcome.attempted {
      logDecision(outcome.decision)
    }
  }

  private func logAction(_ outcome: BalloonOutcome, limit: UInt64, error: ActuatorError?) {
    let decision = outcome.decision
    let device = outcome.plan.sight.device
    let before = outcome.plan.sight.reading
    var metadata: Logger.Metadata = [
      "balloon": "\(device.name)", "kind": "\(device.kind.rawValue)",
      "action": "\(decision.action.rawValue)",
      "limit_bytes": "\(limit)", "reason": "\(decision.reason)",
    ]
    if let current = before?.effectiveCurrentBytes { metadata["before_bytes"] = "\(current)" }
    if let target = before?.target.bytes { metadata["target_bytes"] = "\(target)" }
    // The number the lever writes, under the kind's name for it (Xen: target_kb).
    if let argument = decision.leverArgument, let name = device.kind.driver.leverArgumentName {
      metadata[name] = "\(argument)"
    }
    if let trigger = decision.why.trigger { metadata["trigger"] = "\(trigger.rawValue)" }
    if let error {
      metadata["error"] = "\(error)"
      logger.error("lever failed", metadata: metadata)
      return
    }
    if let after = outcome.afterBytes { metadata["after_bytes"] = "\(after)" }
    // A release is the guard stepping in: warning, so `journalctl -p warning`
    // shows every time it acted against the host's request.
    let level: Logger.Level = decision.action == .release ? .warning : .notice
    logger.log(level: level, "\(decision.action.rawValue) \(device.name)", metadata: metadata)
    lastLogged[device.name] = decision.action
  }

  private func logDecision(_ decision: Decision) {
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

  /// Logs each balloon's read error at error level once per change of the
  /// error, and its recovery once.
  private func noteReadErrors(
    _ unreadable: [(device: BalloonDevice, error: SourceError)], devices: [BalloonDevice]
  ) {
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

  /// Records a new wake-up mode (events attached after start-up) and
  /// writes the state at once.
  public func recordWakeups(_ wakeups: Wakeups, now: Double, wall: Int64) throws(SourceError) {
    state.wakeups = wakeups
    try persist(now: now, wall: wall)
  }

  /// Records why the target cannot be read (the PCI window refused) with
  /// the wake-up mode, and writes the state at once.
  public func recordTargetProblem(_ problem: String, now: Double, wall: Int64) throws(SourceError) {
    state.wakeups?.targetProblem = problem
    try persist(now: now, wall: wall)
  }

  /// Keeps an OOM kill's record and writes the state at once.
  public func recordOOM(_ kill: OOMRecord, now: Double, wall: Int64) throws(SourceError) {
    state.add(kill)
    try persist(now: now, wall: wall)
  }

  /// Writes the state now (boot time `now`, wall `wall`).
  public func persist(now: Double, wall: Int64) throws(SourceError) {
    state.updatedAt = wall
    state.updatedBoottime = now
    try store?.save(state)
    savedLimitMiB = state.limitBytes.map { $0 >> 20 }
    lastSaved = now
    peakUnsaved = false
  }
}
