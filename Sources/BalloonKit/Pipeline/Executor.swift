/// What the executor did with one plan.
public struct BalloonOutcome: Sendable {
  public var plan: BalloonPlan
  /// The decision carried out or reported (a re-check may have changed the plan's).
  public var decision: Decision
  /// The hold to keep: the plan's next one, or the previous one if the lever failed.
  public var next: HoldState
  /// A lever was pulled (or refused), with its error if it failed.
  public var performed: (decision: Decision, error: ActuatorError?)?
  /// A lever was wanted and the executor tried it (enforce mode, a device it may act on).
  public var attempted: Bool
  /// The balloon's size after the lever, read again (for the log).
  public var afterBytes: UInt64?
}

/// The pipeline's only writer: for each plan that pulls a lever, read the
/// balloon again, decide again on that reading, and act. Report mode (no
/// actuators) carries nothing out.
public final class Executor {
  let actuators: Actuators?
  let reader: TickReader
  let policy: TickPolicy

  public init(actuators: Actuators?, reader: TickReader, policy: TickPolicy) {
    self.actuators = actuators
    self.reader = reader
    self.policy = policy
  }

  public var enforcing: Bool { actuators != nil }

  public func execute(_ plans: [BalloonPlan], now: Double, exiting: Bool = false)
    -> [BalloonOutcome]
  {
    plans.map { execute($0, now: now, exiting: exiting) }
  }

  func execute(_ plan: BalloonPlan, now: Double, exiting: Bool) -> BalloonOutcome {
    var outcome = BalloonOutcome(
      plan: plan, decision: plan.decision, next: plan.next, performed: nil, attempted: false)
    guard let actuators else { return outcome }
    if exiting {
      // Giving back on exit: a balloon the policy cannot give back safely,
      // or one discovery does not list, is a failure to report, not a lever.
      if case .exitBlocked(let why) = plan.decision.why {
        outcome.performed = (plan.decision, ActuatorError("\(plan.decision.balloon): \(why)"))
        outcome.next = plan.record.hold
        return outcome
      }
      if plan.decision.action.pullsLever && !plan.mayAct {
        outcome.performed = (
          plan.decision,
          ActuatorError("\(plan.decision.balloon): not listed by discovery; nothing to re-admit")
        )
        outcome.next = plan.record.hold
        return outcome
      }
    }
    guard plan.wantsLever, plan.mayAct else { return outcome }
    outcome.attempted = true
    // Re-read just before pulling a lever: the state may have moved since
    // the tick began (the balloon finished deflating, the host changed its mind).
    if let fresh = reader.reread(plan.sight, held: plan.record.hold.held) {
      let (decision, next) = Policy.decide(
        fresh.observation, limitBytes: plan.limitBytes, state: plan.previous, now: now,
        config: policy.config, exiting: exiting)
      if decision.action != outcome.decision.action {
        outcome.decision = decision
        outcome.next = next
      }
    }
    guard outcome.decision.action.pullsLever else { return outcome }
    let error = act(outcome.decision, device: plan.sight.device, actuators: actuators)
    outcome.performed = (outcome.decision, error)
    if error != nil {
      outcome.next = plan.record.hold  // the lever failed: nothing changed
    } else if !exiting {
      outcome.afterBytes = reader.reread(plan.sight, held: false)?.reading?.effectiveCurrentBytes
    }
    return outcome
  }

  private func act(_ decision: Decision, device: BalloonDevice, actuators: Actuators)
    -> ActuatorError?
  {
    guard decision.action.pullsLever else { return nil }
    do {
      try actuators.act(decision, on: device)
      // Bound state and sizes changed: look again on the next tick.
      reader.invalidateDevices()
      return nil
    } catch {
      return error
    }
  }
}
