public import Logging

/// The daemon: tick, then sleep in one poll() until the interval, a udev or
/// PSI event, or SIGTERM/SIGINT. One thread, one wake-up per idle interval.
///
/// Shutdown is graceful by construction: signals are read between ticks, so
/// a tick is never cut short; the on-exit policy then runs and `run` returns
/// (exit 0). The hold state is on disk after every change, so even SIGKILL
/// loses nothing.
public final class DaemonLoop {
  public struct RestartNeeded: Error, CustomStringConvertible {
    public var error: ActuatorError
    public init(error: ActuatorError) { self.error = error }
    public var description: String {
      "a lever's path is read-only here (\(error)); exiting so the service manager restarts balloonctl with it writable"
    }
  }

  let controller: Controller
  let waiter: Waiter
  let monitor: BalloonEventMonitor?
  let signals: SignalChannel?
  let metrics: MetricsFile?
  let intervalMilliseconds: Int32
  let onExit: ExitPolicy
  let logger: Logger
  /// Lock the tick's pages before the first wait (the live daemon only).
  let lockMemory: Bool
  private var failing = false

  public init(
    controller: Controller, waiter: Waiter, monitor: BalloonEventMonitor?, signals: SignalChannel?,
    metrics: MetricsFile?, intervalSeconds: Double, onExit: ExitPolicy, logger: Logger,
    lockMemory: Bool = false
  ) {
    self.controller = controller
    self.waiter = waiter
    self.monitor = monitor
    self.signals = signals
    self.metrics = metrics
    self.intervalMilliseconds = Int32((intervalSeconds * 1000).rounded())
    self.onExit = onExit
    self.logger = logger
    self.lockMemory = lockMemory
  }

  /// Runs until a signal asks to stop. Throws only when a restart is the cure.
  public func run() throws(RestartNeeded) {
    // Here, after start-up and the first tick and before the loop's own
    // ticks: what gets locked is what the loop touches from now on, not what
    // argument parsing and set-up touched (see SelfProtection.lockWorkingSet).
    if lockMemory { lockWorkingSet() }
    var ticksBeforeRelock = lockMemory ? Self.relockAfterTicks : 0
    while true {
      let reasons = waiter.wait(timeoutMilliseconds: intervalMilliseconds)
      if reasons.contains(.interrupted) {
        let names = (signals?.drain() ?? []).map(SignalChannel.name)
        logger.notice("stopping", metadata: ["signal": "\(names.joined(separator: ","))"])
        break
      }
      if reasons.contains(.udev), let monitor {
        for event in monitor.drain() {
          logger.notice(
            "udev event",
            metadata: [
              "action": "\(event.action)", "subsystem": "\(event.subsystem)",
              "device": "\(event.name)", "driver": "\(event.driver ?? "none")",
            ])
        }
        if monitor.eventsLost { logger.warning("udev events were lost; rediscovering") }
        controller.invalidateDevices()
      }
      if reasons.contains(.pressure) { logger.info("memory pressure event") }
      if ticksBeforeRelock > 0 {
        ticksBeforeRelock -= 1
        if ticksBeforeRelock == 0 { relockWorkingSet() }
      }
      if let blocked = tick() {
        // The hold state is saved; the restarted daemon resumes it.
        logger.critical("restart needed", metadata: ["error": "\(blocked)"])
        throw RestartNeeded(error: blocked)
      }
    }
    finish()
  }

  /// One tick; returns a lever error that only a restart can cure.
  public func tick() -> ActuatorError? {
    // The idle tick that needs no report (Controller.steadyTick); not while
    // failing, so the recovery is logged by the full tick.
    if metrics == nil, !failing, controller.steadyTick() { return nil }
    do {
      let report = try controller.tick()
      if let blocked = report.performed.lazy.compactMap(\.error).first(where: \.needsRestart) {
        return blocked
      }
      try metrics?.write(report, state: controller.state)
      if failing {
        logger.notice("reading recovered")
        failing = false
      }
    } catch {
      // Keep governing: the next tick may read again (a file can vanish for
      // a moment while a device goes). Logged once until it recovers.
      if !failing { logger.error("tick failed", metadata: ["error": "\(error)"]) }
      failing = true
    }
    return nil
  }

  /// The loop's ticks after which the lock is renewed (SelfProtection.relockWorkingSet):
  /// past the first read of /proc/vmstat (every `Controller.vmstatEveryTicks`th tick).
  static let relockAfterTicks = Controller.vmstatEveryTicks + 2

  private func relockWorkingSet() {
    let outcome = SelfProtection.relockWorkingSet()
    if let problem = outcome.lockProblem {
      logger.info("could not lock our pages in memory", metadata: ["error": "\(problem)"])
    }
  }

  private func lockWorkingSet() {
    let outcome = SelfProtection.lockWorkingSet()
    if let problem = outcome.dropProblem {
      logger.info("could not drop start-up pages", metadata: ["error": "\(problem)"])
    }
    if let problem = outcome.lockProblem {
      logger.info("could not lock our pages in memory", metadata: ["error": "\(problem)"])
    }
    logger.debug(
      "start-up pages dropped; locking what the ticks touch",
      metadata: [
        "mappings_dropped": "\(outcome.mappingsDropped)",
        "bytes_dropped": "\(outcome.bytesDropped)",
      ])
  }

  func finish() {
    let held = controller.heldBalloons
    switch onExit {
    case .hold:
      if !held.isEmpty {
        logger.notice(
          "balloons stay released; the next run resumes the hold",
          metadata: ["held": "\(held.map(\.name))"])
      }
    case .readmit:
      for (decision, error) in controller.readmitAll() {
        if let error {
          logger.error(
            "re-admit at exit failed",
            metadata: ["balloon": "\(decision.balloon)", "error": "\(error)"])
        } else {
          logger.notice("re-admitted at exit", metadata: ["balloon": "\(decision.balloon)"])
        }
      }
    }
    logger.notice("balloonctl run stopped")
  }
}
