/// What the policy decided for one balloon on one tick, before anything is
/// done: the executor carries it out, the recorder saves and logs it.
public struct BalloonPlan: Sendable {
  public var sight: BalloonSight
  /// The balloon's record as the tick began (nil: first seen now).
  public var stored: BalloonRecord?
  /// The limit of the tick (bytes).
  public var limitBytes: UInt64
  /// The record to keep, before this tick's hold (its path refreshed, a
  /// resumed hold verified).
  public var record: BalloonRecord
  /// The hold the decision was taken from (report mode: always a fresh one).
  public var previous: HoldState
  public var decision: Decision
  /// The hold after the decision, if its lever (if any) works.
  public var next: HoldState
  /// A lever may be pulled on it: discovery lists it now (or it is the
  /// vmw_balloon module, by its fixed name), and it could be read.
  public var mayAct: Bool
  /// A resumed hold that is not ours, and why (dropped; the recorder warns).
  public var droppedHold: ResumedHoldProblem?
  /// The record's resumed hold was checked against the device on this tick.
  public var verified: Bool

  public var key: String { record.key }
  public var wantsLever: Bool { decision.action.pullsLever }
}

extension Decision.Action {
  /// release, readmit and set_target change the system; none and alert do not.
  public var pullsLever: Bool { self != .none && self != .alert }
}

/// The tick-level policy: (reading, holds, configuration, now, exiting) →
/// one plan per balloon. Pure: no I/O and no text; the per-balloon rules are
/// `Policy.decide`.
public struct TickPolicy: Sendable {
  public var mode: ControlMode
  public var config: PolicyConfig

  public init(mode: ControlMode, config: PolicyConfig) {
    self.mode = mode
    self.config = config
  }

  /// - Parameters:
  ///   - holds: the records kept between ticks (the state file's balloons).
  ///   - unverified: keys of resumed holds not yet checked against their device.
  ///   - exiting: stopping with `--on-exit readmit`: every held balloon is
  ///     given back, and nothing else is decided.
  public func plan(
    _ reading: TickReading, holds: [BalloonRecord], unverified: Set<String>, now: Double,
    exiting: Bool = false
  ) -> [BalloonPlan] {
    var plans: [BalloonPlan] = []
    for sight in reading.sights {
      let stored = holds.first { $0.kind == sight.device.kind && $0.name == sight.device.name }
      if exiting && stored?.hold.held != true { continue }
      plans.append(
        plan(
          sight, stored: stored, limit: reading.snapshot.limit.bytes, devices: reading.devices,
          unverified: unverified, now: now, exiting: exiting))
    }
    return plans
  }

  func plan(
    _ sight: BalloonSight, stored: BalloonRecord?, limit: UInt64, devices: [BalloonDevice],
    unverified: Set<String>, now: Double, exiting: Bool
  ) -> BalloonPlan {
    let device = sight.device
    var record =
      stored
      ?? BalloonRecord(
        kind: device.kind, name: device.name, sysPath: device.sysPath, hold: config.freshState)
    if sight.listed { record.sysPath = device.sysPath }
    let observation = sight.observation
    let driver = device.kind.driver
    record.kept = driver.remember(observation, kept: record.kept)
    let readable = observation.unreadable == nil
    var droppedHold: ResumedHoldProblem?
    var verified = false
    // Bound or not comes from discovery; some kinds need a reading.
    if !unverified.isEmpty, unverified.contains(record.key),
      readable || !driver.verifiesResumedHoldByReading
    {
      if let problem = Self.resumedHoldProblem(record, sight: sight, devices: devices) {
        droppedHold = problem
        var fresh = config.freshState
        fresh.releases = record.hold.releases
        record.hold = fresh
      }
      verified = true
    }
    // Report mode never holds anything, so it judges every tick afresh.
    let previous = mode == .enforce ? record.hold : config.freshState
    var (decision, next) = Policy.decide(
      observation, limitBytes: limit, state: previous, now: now, config: config,
      exiting: exiting)
    // A lever is pulled only on a device discovery lists now (or on the
    // vmw_balloon module, by its fixed name), never on one we could not read.
    let mayAct = (readable || exiting) && (sight.listed || sight.actsUnlisted)
    if decision.action.pullsLever && !mayAct && !exiting {
      // A lever wanted on a balloon that is neither listed nor the vmw
      // module (a record naming no real device): treated as gone, like a
      // hot-unplugged one; the hold is dropped and nothing is touched.
      decision = Decision(.none, balloon: device.name, why: .deviceGone)
      next = config.freshState
      next.releases = record.hold.releases
    }
    return BalloonPlan(
      sight: sight, stored: stored, limitBytes: limit, record: record, previous: previous,
      decision: decision,
      next: next, mayAct: mayAct, droppedHold: droppedHold, verified: verified)
  }

  /// A hold resumed from the state file is honoured only if the device is in
  /// the state our hold leaves it: a released virtio balloon is unbound, a
  /// released vmw_balloon unloaded, a Xen hold has the target_kb we wrote.
  /// Anything else was not held by us (a stale or forged file): the hold is
  /// dropped with a warning and the balloon decided from scratch, so the
  /// daemon never "re-admits" a device it did not release. nil: ours.
  static func resumedHoldProblem(
    _ record: BalloonRecord, sight: BalloonSight, devices: [BalloonDevice]
  ) -> ResumedHoldProblem? {
    let device = sight.device
    guard record.hold.held, devices.contains(device) else { return nil }
    return record.kind.driver.resumedHoldProblem(
      record.hold, device: device, observation: sight.observation)
  }
}

/// Why a hold resumed from the state file is not ours.
public enum ResumedHoldProblem: Sendable, Equatable, CustomStringConvertible {
  case bound(driver: String?)
  case neverHeld
  /// One kind's own reason, from its driver.
  case kind(KindReason)

  public var description: String {
    switch self {
    case .bound(let driver):
      return "the state file says held, but it is bound to \(driver ?? "a driver")"
    case .kind(let reason):
      return reason.description
    case .neverHeld:
      return "the state file says held, but balloons of this kind are never held"
    }
  }
}
