/// What the policy sees of one balloon on one tick.
public struct BalloonObservation: Sendable, Equatable {
  public var kind: BalloonKind
  public var name: String
  /// Discovery found it. A released vmw_balloon is absent (unloaded) by design.
  public var present: Bool
  /// Its driver is bound (virtio, Hyper-V) or its module loaded (VMware).
  public var bound: Bool
  /// The balloon's size now and the host's target for it (bytes; nil: unknown).
  public var currentBytes: UInt64?
  public var targetBytes: UInt64?
  /// Whether the lever for this kind can be pulled here (driver unbind file
  /// exists, module is loadable, target_kb writable) and is enabled by config.
  public var leverAvailable: Bool
  /// The kind's own facts, typed by its driver (Drivers/); nil: none.
  public var payload: (any BalloonPayload)?
  /// Discovery lists the balloon but its files could not be read or parsed
  /// (not the same as gone: `present` stays true). Nothing is known of its
  /// size, so nothing is decided on it: a hold is kept, no lever is pulled.
  public var unreadable: SourceError?

  public init(
    kind: BalloonKind, name: String, present: Bool = true, bound: Bool = true,
    currentBytes: UInt64?, targetBytes: UInt64?, leverAvailable: Bool = true,
    payload: (any BalloonPayload)? = nil, unreadable: SourceError? = nil
  ) {
    self.kind = kind
    self.name = name
    self.present = present
    self.bound = bound
    self.currentBytes = currentBytes
    self.targetBytes = targetBytes
    self.leverAvailable = leverAvailable
    self.payload = payload
    self.unreadable = unreadable
  }

  public static func == (lhs: Self, rhs: Self) -> Bool {
    lhs.kind == rhs.kind && lhs.name == rhs.name && lhs.present == rhs.present
      && lhs.bound == rhs.bound && lhs.currentBytes == rhs.currentBytes
      && lhs.targetBytes == rhs.targetBytes && lhs.leverAvailable == rhs.leverAvailable
      && lhs.unreadable == rhs.unreadable && samePayload(lhs.payload, rhs.payload)
  }
}

func samePayload(_ lhs: (any BalloonPayload)?, _ rhs: (any BalloonPayload)?) -> Bool {
  switch (lhs, rhs) {
  case (nil, nil): true
  case (let left?, let right?): left.isEqual(to: right)
  default: false
  }
}

/// What to do about one balloon.
public struct Decision: Sendable, Equatable {
  public enum Action: String, Sendable, Equatable {
    /// Nothing to do.
    case none
    /// Take the balloon away from the host: unbind virtio_balloon (full
    /// deflate, the host is told) or unload vmw_balloon (all pages freed).
    case release
    /// Give the balloon back: rebind / reload; it re-inflates to the target.
    case readmit
    /// Xen: write target_kb so the balloon sits exactly at the limit.
    case setTarget = "set_target"
    /// Over the limit with no lever to pull (Hyper-V, a built-in module, or
    /// the lever disabled by configuration).
    case alert
  }

  public var action: Action
  public var balloon: String
  /// Why, with its numbers; rendered to text only when shown or saved.
  public var why: Reason
  /// set_target: the balloon size aimed for, and the number the kind's lever
  /// writes for it (its driver names it: Xen's `target_kb`).
  public var balloonTargetBytes: UInt64?
  public var leverArgument: UInt64?

  public var reason: String { why.description }

  public init(
    _ action: Action, balloon: String, why: Reason, balloonTargetBytes: UInt64? = nil,
    leverArgument: UInt64? = nil
  ) {
    self.action = action
    self.balloon = balloon
    self.why = why
    self.balloonTargetBytes = balloonTargetBytes
    self.leverArgument = leverArgument
  }

  public init(
    _ action: Action, balloon: String, reason: String, balloonTargetBytes: UInt64? = nil,
    leverArgument: UInt64? = nil
  ) {
    self.init(
      action, balloon: balloon, why: .text(reason), balloonTargetBytes: balloonTargetBytes,
      leverArgument: leverArgument)
  }

  /// Why a decision was taken. The daemon decides every tick; formatting
  /// sizes into text every tick would cost more than the decision itself.
  public indirect enum Reason: Sendable, Equatable, CustomStringConvertible {
    case underLimit(limit: UInt64, current: UInt64?, target: UInt64?)
    /// The target is over the limit and the balloon is not yet: released before it crosses.
    case targetOverLimit(target: UInt64, limit: UInt64)
    /// The balloon's size is over the limit, target unknown.
    case currentOverLimit(current: UInt64, limit: UInt64)
    /// The target is over the limit and the balloon already crossed it: the
    /// release comes after the crossing, so it is reactive, not preventive.
    case crossedWithTarget(current: UInt64, target: UInt64, limit: UInt64)
    case deflating(current: UInt64, target: UInt64)
    case notPresent
    case notBound
    case deviceGone
    /// Listed by discovery, but its files could not be read.
    case unreadable(SourceError, held: Bool)
    case holdEndedOutside(Reason)
    case readmitTarget(target: UInt64, threshold: UInt64, limit: UInt64, margin: Double)
    case heldTargetAbove(target: UInt64, threshold: UInt64)
    case heldBlindStarted(backoff: Double)
    case heldBlindWaiting(remaining: Double)
    case readmitBlind(backoff: Double)
    case noLever(Reason)
    case targetUnknown
    /// A reason only one kind gives, structured and rendered by its driver.
    case kind(KindReason)
    /// Stopping with `--on-exit readmit`.
    case exiting
    /// Stopping: the balloon cannot be given back safely (the caller reports a failure).
    case exitBlocked(KindReason)
    case text(String)

    public var description: String {
      let h = ByteFormat.human
      switch self {
      case .underLimit(let limit, let current, let target):
        return
          "under the limit \(h(limit)) (current \(current.map(h) ?? "unknown"), target \(target.map(h) ?? "unknown"))"
      case .targetOverLimit(let target, let limit):
        return "target \(h(target)) exceeds the limit \(h(limit)) (preventive)"
      case .currentOverLimit(let current, let limit):
        return "current \(h(current)) exceeds the limit \(h(limit)) (reactive; target unknown)"
      case .crossedWithTarget(let current, let target, let limit):
        return
          "current \(h(current)) exceeds the limit \(h(limit)) (reactive; target \(h(target)))"
      case .deflating(let current, let target):
        return "current \(h(current)) is over the limit but deflating toward target \(h(target))"
      case .notPresent: return "not present"
      case .notBound: return "driver not bound (not by balloonctl)"
      case .deviceGone: return "device gone while held; hold dropped"
      case .unreadable(let error, let held):
        return held
          ? "cannot read the balloon (\(error)); hold kept, no lever pulled until it reads again"
          : "cannot read the balloon (\(error)); no action until it reads again"
      case .holdEndedOutside(let inner): return "hold ended outside balloonctl; \(inner)"
      case .readmitTarget(let target, let threshold, let limit, let margin):
        return
          "target \(h(target)) is at or below the re-admit threshold \(h(threshold)) (limit \(h(limit)) − \(Reason.percent(margin)))"
      case .heldTargetAbove(let target, let threshold):
        return "held: target \(h(target)) is above the re-admit threshold \(h(threshold))"
      case .heldBlindStarted(let backoff):
        return "held: target unknown; re-admit after a \(Reason.seconds(backoff)) back-off"
      case .heldBlindWaiting(let remaining):
        return "held: target unknown; re-admit in \(Reason.seconds(remaining))"
      case .readmitBlind(let backoff):
        return
          "target unknown; back-off of \(Reason.seconds(backoff)) elapsed, re-admitting (released again if it crosses)"
      case .noLever(let inner): return "\(inner); no lever available"
      case .targetUnknown: return "target unknown"
      case .kind(let reason): return reason.description
      case .exiting: return "stopping with --on-exit readmit"
      case .exitBlocked(let problem): return problem.description
      case .text(let text): return text
      }
    }

    /// Whether a release stepped in before the balloon crossed the limit
    /// (preventive) or after (reactive); nil for reasons that are no release trigger.
    public var trigger: Trigger? {
      switch self {
      case .targetOverLimit: return .preventive
      case .currentOverLimit, .crossedWithTarget: return .reactive
      case .noLever(let inner): return inner.trigger
      default: return nil
      }
    }

    public enum Trigger: String, Sendable, Equatable {
      case preventive, reactive
    }

    /// The balloon could not be read: the decision is `none` whatever the state.
    public var isUnreadable: Bool {
      if case .unreadable = self { return true }
      return false
    }

    static func percent(_ fraction: Double) -> String { "\(Int((fraction * 100).rounded()))%" }

    static func seconds(_ value: Double) -> String {
      let whole = Int(value.rounded(.up))
      return whole >= 120 && whole % 60 == 0 ? "\(whole / 60) min" : "\(whole) s"
    }
  }
}

/// A reason only one kind gives (Xen's partial hold, Hyper-V's missing
/// lever): its driver's own structured value, compared and rendered by it.
public struct KindReason: Sendable, Equatable, CustomStringConvertible {
  public let value: any KindReasonValue

  public init(_ value: any KindReasonValue) { self.value = value }

  public var description: String { value.description }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.value.isEqual(to: rhs.value) }
}

public protocol KindReasonValue: Sendable, CustomStringConvertible {
  func isEqual(to other: any KindReasonValue) -> Bool
}

extension KindReasonValue where Self: Equatable {
  public func isEqual(to other: any KindReasonValue) -> Bool { (other as? Self) == self }
}

/// The daemon's memory of one balloon between ticks (and across restarts:
/// it is persisted in the state file).
public struct HoldState: Sendable, Equatable {
  /// We released this balloon and have not re-admitted it.
  public var held: Bool = false
  /// When the hold began (boot-time clock seconds, survives daemon restarts).
  public var since: Double?
  public var reason: String?
  /// Held with the target unknown: the earliest time to re-admit blind.
  public var readmitNotBefore: Double?
  /// The back-off a blind hold waits; doubles when a blind re-admit is
  /// followed by another release.
  public var backoffSeconds: Double
  /// When the last blind re-admit happened (cleared once it proved stable).
  public var blindReadmitAt: Double?
  /// The kind's own memory of the hold, typed by its driver (Xen: the
  /// target_kb it wrote and the balloon size the host had asked for).
  public var payload: (any HoldPayload)?
  /// How many times this balloon was released (for status and logs).
  public var releases: Int = 0

  public init(backoffSeconds: Double) {
    self.backoffSeconds = backoffSeconds
  }

  public static func == (lhs: Self, rhs: Self) -> Bool {
    let samePayload: Bool =
      switch (lhs.payload, rhs.payload) {
      case (nil, nil): true
      case (let left?, let right?): left.isEqual(to: right)
      default: false
      }
    return lhs.held == rhs.held && lhs.since == rhs.since && lhs.reason == rhs.reason
      && lhs.readmitNotBefore == rhs.readmitNotBefore && lhs.backoffSeconds == rhs.backoffSeconds
      && lhs.blindReadmitAt == rhs.blindReadmitAt && lhs.releases == rhs.releases && samePayload
  }

  /// The hold is over (re-admitted, or ended outside balloonctl); the
  /// back-off history stays.
  mutating func endHold() {
    held = false
    since = nil
    reason = nil
    readmitNotBefore = nil
  }
}

public struct PolicyConfig: Sendable, Equatable {
  /// Re-admit when the target is at or below limit × (1 − margin).
  public var margin: Double
  public var initialBackoffSeconds: Double
  public var maxBackoffSeconds: Double

  public init(
    margin: Double = 0.05, initialBackoffSeconds: Double = 30, maxBackoffSeconds: Double = 600
  ) {
    self.margin = margin
    self.initialBackoffSeconds = initialBackoffSeconds
    self.maxBackoffSeconds = maxBackoffSeconds
  }

  public static let `default` = PolicyConfig()

  public var freshState: HoldState { HoldState(backoffSeconds: initialBackoffSeconds) }
}

/// The control policy: a pure function from one balloon's readings, the limit
/// and the previous hold state to a decision and the next state (assuming the
/// action succeeds; on failure the caller keeps the previous state).
///
/// virtio and VMware (levers: release/readmit):
/// * not held, target known and above the limit → release (preventive while
///   the balloon is at or under the limit, reactive once it has crossed);
/// * not held, target unknown, current above the limit → release (reactive);
///   (target known and below while current is above: already deflating → none)
/// * held, target at or below limit × (1 − margin) → readmit;
/// * held, target unknown → readmit after a back-off (30 s, doubling to 10 min
///   each time a blind re-admit is followed by another release; reset after a
///   blind re-admit stays fine for the longest back-off).
/// Xen: when the balloon's target exceeds the limit, set_target to put the
/// balloon exactly at the limit; raise it back toward the host's wish when the
/// limit grows. Hyper-V: alert only.
/// Any kind, listed but unreadable: none; the state (a hold, its back-off)
/// is kept as it is until the balloon reads again.
public enum Policy {
  public static func decide(
    _ observation: BalloonObservation, limitBytes limit: UInt64, state previous: HoldState?,
    now: Double, config: PolicyConfig = .default, exiting: Bool = false
  ) -> (Decision, HoldState) {
    let state = previous ?? config.freshState
    let driver = observation.kind.driver
    if exiting { return driver.giveBack(observation, state: state, config: config) }
    if let error = observation.unreadable {
      return (
        Decision(.none, balloon: observation.name, why: .unreadable(error, held: state.held)),
        state
      )
    }
    return driver.decide(observation, limit: limit, state: state, now: now, config: config)
  }

  /// How a kind whose lever releases the whole balloon behaves (virtio, VMware).
  public struct Release: Sendable {
    /// A released balloon stays listed (virtio: unbound); absent while held
    /// means the device went. false: absent is what a release leaves (an
    /// unloaded vmw_balloon).
    public var listedWhileHeld: Bool
    /// The release itself takes the target away (unloading vmw_balloon takes
    /// its debugfs file): the hold is blind from the start.
    public var releaseHidesTarget: Bool

    public init(listedWhileHeld: Bool, releaseHidesTarget: Bool) {
      self.listedWhileHeld = listedWhileHeld
      self.releaseHidesTarget = releaseHidesTarget
    }
  }

  public static func releasable(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig,
    lever: Release
  ) -> (Decision, HoldState) {
    let name = o.name
    var state = state

    if state.held {
      // A released virtio balloon stays present (unbound); a released vmw
      // module is absent. Anything else means the hold no longer exists.
      if lever.listedWhileHeld && !o.present {
        var fresh = config.freshState
        fresh.releases = state.releases
        return (Decision(.none, balloon: name, why: .deviceGone), fresh)
      }
      if o.present && o.bound {
        // Re-bound or re-loaded behind our back (or by our own re-admit that
        // the state did not record): not held any more; decide afresh.
        state.endHold()
        let (decision, next) = releasable(
          o, limit: limit, state: state, now: now, config: config, lever: lever)
        if decision.action == .none {
          return (Decision(.none, balloon: name, why: .holdEndedOutside(decision.why)), next)
        }
        return (decision, next)
      }
      let threshold = readmitThreshold(limit, config)
      if let target = o.targetBytes {
        if target <= threshold {
          var next = state
          next.endHold()
          next.blindReadmitAt = nil
          next.backoffSeconds = config.initialBackoffSeconds
          return (
            Decision(
              .readmit, balloon: name,
              why: .readmitTarget(
                target: target, threshold: threshold, limit: limit, margin: config.margin)),
            next
          )
        }
        state.readmitNotBefore = nil
        return (
          Decision(
            .none, balloon: name, why: .heldTargetAbove(target: target, threshold: threshold)),
          state
        )
      }
      guard let notBefore = state.readmitNotBefore else {
        state.readmitNotBefore = now + state.backoffSeconds
        return (
          Decision(.none, balloon: name, why: .heldBlindStarted(backoff: state.backoffSeconds)),
          state
        )
      }
      if now >= notBefore {
        var next = state
        next.endHold()
        next.blindReadmitAt = now
        return (
          Decision(.readmit, balloon: name, why: .readmitBlind(backoff: state.backoffSeconds)), next
        )
      }
      return (
        Decision(.none, balloon: name, why: .heldBlindWaiting(remaining: notBefore - now)),
        state
      )
    }

    // Not held. A blind re-admit that stayed fine for the longest back-off
    // has proved itself: forget the escalation.
    if let blind = state.blindReadmitAt, now - blind >= config.maxBackoffSeconds {
      state.blindReadmitAt = nil
      state.backoffSeconds = config.initialBackoffSeconds
    }
    guard o.present, o.bound else {
      return (Decision(.none, balloon: name, why: o.present ? .notBound : .notPresent), state)
    }

    var trigger: Decision.Reason?
    if let target = o.targetBytes {
      if target > limit {
        // The label follows the balloon's size, not the target alone: a
        // balloon already past the limit is released after the crossing.
        if let current = o.currentBytes, current > limit {
          trigger = .crossedWithTarget(current: current, target: target, limit: limit)
        } else {
          trigger = .targetOverLimit(target: target, limit: limit)
        }
      } else if let current = o.currentBytes, current > limit {
        return (
          Decision(.none, balloon: name, why: .deflating(current: current, target: target)), state
        )
      }
    } else if let current = o.currentBytes, current > limit {
      trigger = .currentOverLimit(current: current, limit: limit)
    }
    guard let trigger else {
      return (Decision(.none, balloon: name, why: underLimit(o, limit: limit)), state)
    }
    guard o.leverAvailable else {
      return (Decision(.alert, balloon: name, why: .noLever(trigger)), state)
    }
    var next = state
    if next.blindReadmitAt != nil {
      // Crossed again after a blind re-admit: wait longer next time.
      next.backoffSeconds = min(next.backoffSeconds * 2, config.maxBackoffSeconds)
      next.blindReadmitAt = nil
    }
    next.held = true
    next.since = now
    next.reason = trigger.description
    next.releases += 1
    // Unloading vmw_balloon takes its debugfs file, and with it the target:
    // that hold is blind from the start, so its back-off starts now too.
    let blindAfterRelease = o.targetBytes == nil || lever.releaseHidesTarget
    next.readmitNotBefore = blindAfterRelease ? now + next.backoffSeconds : nil
    return (Decision(.release, balloon: name, why: trigger), next)
  }

  /// A kind with no lever (Hyper-V): alert over the limit, never held.
  /// `why` gives the alert's reason from the size and the limit.
  public static func alertOnly(
    _ o: BalloonObservation, limit: UInt64, state: HoldState,
    why: (_ current: UInt64, _ limit: UInt64) -> Decision.Reason
  ) -> (Decision, HoldState) {
    // Never held by balloonctl (there is no lever): a held record is not ours.
    var state = state
    state.endHold()
    if let current = o.currentBytes, current > limit {
      return (Decision(.alert, balloon: o.name, why: why(current, limit)), state)
    }
    return (Decision(.none, balloon: o.name, why: underLimit(o, limit: limit)), state)
  }

  public static func underLimit(_ o: BalloonObservation, limit: UInt64) -> Decision.Reason {
    .underLimit(limit: limit, current: o.currentBytes, target: o.targetBytes)
  }

  public static func readmitThreshold(_ limit: UInt64, _ config: PolicyConfig) -> UInt64 {
    BalloonLimit.floorProduct(1 - config.margin, limit)
  }

}
