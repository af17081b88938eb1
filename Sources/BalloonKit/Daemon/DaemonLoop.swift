public import Logging

/// The daemon: tick, then sleep in one poll() until the interval, a udev or
/// PSI event, a kernel log record, or SIGTERM/SIGINT. One thread, one wake-up per idle interval.
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
  /// The tick while events wake the daemon and no balloon is held (nil: always the interval).
  private(set) var idleIntervalMilliseconds: Int32?
  let onExit: ExitPolicy
  let logger: Logger
  /// Lock the tick's pages before the first wait (the live daemon only).
  let lockMemory: Bool
  /// Finds OOM kills to record (kernel log and `oom_kill`); nil records none.
  let oomWatch: OOMWatch?
  /// The balloon drivers' kprobes (nil: the daemon ticks only).
  private(set) var events: BalloonEvents?
  /// Opens the events when they could not be at start-up (the balloon
  /// driver's module not loaded yet, as when udev starts the service for
  /// the device): tried again on each udev event. nil: not wanted.
  let openEvents: (() -> Result<BalloonEvents, BalloonEvents.Unavailable>)?
  /// The idle interval the events bring when they are attached later.
  let eventsIntervalSeconds: Double?
  let burst: EventBurst
  private var failing = false
  private var loggedOOMProblem: String?
  private var loggedEventProblem = false
  /// The daemon's PCI window probe, whose refusal is logged and recorded once.
  let refusedProbe: RefusedOnceProbe?
  private var recordedRefusal = false
  /// Σ of the balloons' sizes at the last full tick (the burst watches it).
  private var balloonBytes: UInt64?
  /// The limit at the last full tick: what is left under it sets the burst's step.
  private var limitBytes: UInt64?
  /// Whether the last full tick read every balloon's target, each from
  /// where the host writes it before the driver's event (virtio's config
  /// space; BalloonDriver.targetCurrentAtEvent): then the policy has decided
  /// on where each balloon is going, and a burst ends after its first tick.
  private var targetsKnown = false
  /// How many event bursts ran.
  public private(set) var burstsRun = 0

  public init(
    controller: Controller, waiter: Waiter, monitor: BalloonEventMonitor?, signals: SignalChannel?,
    metrics: MetricsFile?, intervalSeconds: Double, idleIntervalSeconds: Double? = nil,
    onExit: ExitPolicy, logger: Logger,
    lockMemory: Bool = false, oomWatch: OOMWatch? = nil, events: BalloonEvents? = nil,
    burst: EventBurst = EventBurst(), refusedProbe: RefusedOnceProbe? = nil,
    openEvents: (() -> Result<BalloonEvents, BalloonEvents.Unavailable>)? = nil,
    eventsIntervalSeconds: Double? = nil
  ) {
    self.openEvents = openEvents
    self.eventsIntervalSeconds = eventsIntervalSeconds
    self.refusedProbe = refusedProbe
    self.events = events
    self.burst = burst
    self.oomWatch = oomWatch
    self.controller = controller
    self.waiter = waiter
    self.monitor = monitor
    self.signals = signals
    self.metrics = metrics
    self.intervalMilliseconds = Int32((intervalSeconds * 1000).rounded())
    self.idleIntervalMilliseconds = idleIntervalSeconds.map { Int32(($0 * 1000).rounded()) }
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
    var nextTick = Clock.boottime() + Double(currentIntervalMilliseconds) / 1000
    var relockPending = lockMemory
    var loopTicks = 0
    let loopStart = Clock.boottime()
    while true {
      // Up to the next tick: a kernel log record that is no OOM kill wakes
      // the loop but does not move the tick.
      let left = (nextTick - Clock.boottime()) * 1000
      let timeout = left <= 0 ? 0 : min(currentIntervalMilliseconds, Int32(left.rounded(.up)))
      let reasons = waiter.wait(timeoutMilliseconds: timeout)
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
        reattachEvents()
      }
      if reasons.contains(.pressure) { logger.info("memory pressure event") }
      if reasons.contains(.balloonEvent) {
        if let blocked = watchAfterEvent() {
          logger.critical("restart needed", metadata: ["error": "\(blocked)"])
          throw RestartNeeded(error: blocked)
        }
        nextTick = Clock.boottime() + Double(currentIntervalMilliseconds) / 1000
        if reasons == [.balloonEvent] { continue }
      }
      // Before the tick: the record is taken while the OOM is fresh.
      var killed = false
      if reasons.contains(.kernelLog), let oomWatch { killed = recordOOMs(oomWatch.drainLog()) }
      // A chatty kernel log alone costs a read, never a tick (an idle tick
      // is the daemon's whole cost); an OOM kill ticks at once.
      if reasons == [.kernelLog], !killed, Clock.boottime() < nextTick { continue }
      if relockPending {
        loopTicks += 1
        if Self.relockDue(ticks: loopTicks, secondsSinceStart: Clock.boottime() - loopStart) {
          relockPending = false
          relockWorkingSet()
        }
      }
      if let blocked = tick() {
        // The hold state is saved; the restarted daemon resumes it.
        logger.critical("restart needed", metadata: ["error": "\(blocked)"])
        throw RestartNeeded(error: blocked)
      }
      nextTick = Clock.boottime() + Double(currentIntervalMilliseconds) / 1000
    }
    finish()
  }

  /// The tick: the idle interval while events wake the daemon and no
  /// balloon is held; else the interval (a held virtio balloon is unbound,
  /// so its driver's event cannot fire, and re-admitting is the tick's).
  var currentIntervalMilliseconds: Int32 {
    guard let idleIntervalMilliseconds,
      !controller.state.balloons.contains(where: { $0.hold.held })
    else { return intervalMilliseconds }
    return idleIntervalMilliseconds
  }

  /// One tick; returns a lever error that only a restart can cure. `full`:
  /// never the steady shortcut (an event burst needs the size each tick).
  public func tick(full: Bool = false) -> ActuatorError? {
    // The idle tick that needs no report (Controller.steadyTick); not while
    // failing, so the recovery is logged by the full tick.
    if !full, metrics == nil, !failing, controller.steadyTick() { return nil }
    do {
      let report = try controller.tick()
      var bytes: UInt64 = 0
      for balloon in report.snapshot.balloons {
        bytes = bytes +| (balloon.effectiveCurrentBytes ?? 0)
      }
      balloonBytes = bytes
      limitBytes = report.snapshot.limit.bytes
      targetsKnown = report.snapshot.balloons.allSatisfy {
        $0.target.bytes != nil && $0.device.kind.driver.targetCurrentAtEvent
      }
      if let blocked = report.performed.lazy.compactMap(\.error).first(where: \.needsRestart) {
        return blocked
      }
      // The counter the tick read anyway: kills no log record told of.
      if let oomWatch, let count = report.snapshot.vmstat.oomKill {
        recordOOMs(oomWatch.counter(count))
      }
      try metrics?.write(report, state: controller.state)
      if !recordedRefusal, let refusal = refusedProbe?.refusal {
        // Once: the probe no longer writes, and the state says why.
        recordedRefusal = true
        logger.warning(
          "the PCI window's write was refused; the target is unknown, a release follows the size",
          metadata: ["error": "\(refusal)"])
        try controller.recordTargetProblem(refusal.reason)
      }
      if failing {
        logger.notice("reading recovered")
        failing = false
      }
    } catch {
      // Keep governing: the next tick may read again (a file can vanish for
      // a moment while a device goes). Logged once until it recovers.
      if !failing { logger.error("tick failed", metadata: ["error": "\(error)"]) }
      failing = true
      targetsKnown = false
    }
    return nil
  }

  /// After a balloon driver's event: tick at once; if some balloon's target
  /// could not be read, then every
  /// `burst.step(headroomBytes:)` while the balloons' size moves (and at least
  /// `burst.shortestSeconds`), so a balloon inflating towards a new target
  /// is released the moment it crosses the limit, whether or not its target
  /// can be read (the tick's policy). Each tick reads procfs and sysfs only.
  /// More events during the burst extend it. Signals, udev and the kernel
  /// log are level-triggered and wait for the main loop.
  func watchAfterEvent() -> ActuatorError? {
    guard let events else { return nil }
    burstsRun &+= 1
    noteDrained(events.drain())
    var start = Clock.boottime()
    var stableSince = start
    // The steady-tick shortcut is skipped: the burst needs the size each tick.
    var previous: UInt64? = nil
    while true {
      if let blocked = tick(full: true) { return blocked }
      // Each target read: the tick released any balloon headed over the limit.
      if targetsKnown { break }
      let now = Clock.boottime()
      if balloonBytes != previous {
        previous = balloonBytes
        stableSince = now
      }
      let quiet = now - stableSince >= burst.quietSeconds && now - start >= burst.shortestSeconds
      if quiet || now - start >= burst.longestSeconds { break }
      let headroom = limitBytes.map { limit in
        let balloon = balloonBytes ?? 0
        return limit > balloon ? limit - balloon : 0
      }
      let reasons = waiter.wait(timeoutMilliseconds: burst.step(headroomBytes: headroom))
      if reasons.contains(.interrupted) { break }
      if reasons.contains(.balloonEvent) {
        noteDrained(events.drain())
        start = Clock.boottime()
      }
    }
    logger.debug("event burst over", metadata: ["balloon_bytes": "\(balloonBytes ?? 0)"])
    return nil
  }

  /// A udev event may be a balloon module unloaded or loaded again (the
  /// VMware lever): a probe on a module's function does not survive that,
  /// so the probes are opened again. While the module is out, the old ones
  /// stay (they cannot fire) and the next udev event tries again.
  private func reattachEvents() {
    guard let events else {
      attachLateEvents()
      return
    }
    guard events.probesModules else { return }
    if let unavailable = events.reattach() {
      logger.info("balloon events not re-attached", metadata: ["reason": "\(unavailable)"])
      return
    }
    // The old fds are closed by now: swap them out before the next poll().
    waiter.replaceEventFDs(events.fileDescriptors)
  }

  /// The events that could not be opened at start-up, tried again (quietly:
  /// the start-up warning said why); on success the state says so.
  private func attachLateEvents() {
    guard let openEvents, let eventsIntervalSeconds,
      case .success(let opened) = openEvents()
    else { return }
    events = opened
    waiter.replaceEventFDs(opened.fileDescriptors)
    let idle = UInt64((eventsIntervalSeconds * 1000).rounded())
    idleIntervalMilliseconds = Int32(idle)
    let names = opened.symbols.map(\.description)
    logger.notice(
      "balloon driver events attached", metadata: ["functions": "\(names.joined(separator: ", "))"])
    do {
      try controller.recordWakeups(
        Wakeups(mode: .events, symbols: names, idleIntervalMilliseconds: idle))
    } catch {
      logger.error("state not written", metadata: ["error": "\(error)"])
    }
  }

  private func noteDrained(_ drained: BalloonEvents.Drained) {
    logger.info(
      "balloon event", metadata: ["hits": "\(drained.hits)", "lost": "\(drained.lost)"])
    if let problem = drained.problem, !loggedEventProblem {
      // Logged once: the wake-up itself still counts, the tick reads the truth.
      logger.warning("kprobe ring not understood", metadata: ["error": "\(problem)"])
      loggedEventProblem = true
    }
  }

  /// Records each kill found (a fresh reading per kill) and logs it at
  /// warning; lost records and unparsable ones are logged once per change.
  /// Returns whether any kill was found.
  @discardableResult
  func recordOOMs(_ found: OOMWatch.Found) -> Bool {
    if found.lost {
      logger.warning(
        "kernel log records were lost (overwritten before read); OOM kills are still counted from /proc/vmstat"
      )
    }
    if let problem = found.problems.first?.description, problem != loggedOOMProblem {
      logger.warning("kernel log record not understood", metadata: ["error": "\(problem)"])
      loggedOOMProblem = problem
    }
    for victim in found.victims {
      do {
        let (record, _) = try controller.recordOOM(victim)
        var metadata: Logger.Metadata = [
          "verdict": "\(record.verdict.rawValue)", "limit_bytes": "\(record.limitBytes)",
          "balloon_bytes": "\(record.balloons.compactMap(\.currentBytes).reduce(0, +|))",
          "source": "\(record.source)",
        ]
        if let pid = record.victimPid { metadata["victim_pid"] = "\(pid)" }
        if let comm = record.victimComm { metadata["victim"] = "\(comm)" }
        if let anon = record.victimAnonRSSBytes { metadata["victim_anon_rss_bytes"] = "\(anon)" }
        if let constraint = record.constraint { metadata["constraint"] = "\(constraint)" }
        if let cap = record.capBytes { metadata["cap_bytes"] = "\(cap)" }
        logger.warning("OOM kill", metadata: metadata)
      } catch {
        logger.error("OOM kill not recorded", metadata: ["error": "\(error)"])
      }
    }
    return !found.victims.isEmpty
  }

  /// The loop's ticks after which the lock is renewed (SelfProtection.relockWorkingSet):
  /// past the first read of /proc/vmstat (every `Controller.vmstatEveryTicks`th tick).
  static let relockAfterTicks = Controller.vmstatEveryTicks + 2
  /// Or this long after the loop started, once the steady path has run (its
  /// third tick): with events the tick is 10 s, and the 12th would leave
  /// start-up's pages locked for two minutes (BENCHMARKS.md, section 1b).
  /// vmstat's turn, if it has not come yet, then locks its own pages on fault.
  static let relockAfterSeconds = 30.0

  /// Whether the `ticks`th tick of the loop, `secondsSinceStart` after it
  /// started, renews the lock (once).
  static func relockDue(ticks: Int, secondsSinceStart: Double) -> Bool {
    ticks >= relockAfterTicks || (ticks >= 3 && secondsSinceStart >= relockAfterSeconds)
  }

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
    // A clean stop takes the metrics away: node_exporter would otherwise go on
    // serving a stopped daemon's last values. A crash or a restart-needed exit
    // keeps them, and their heartbeat goes stale.
    if let metrics {
      do {
        try metrics.remove()
      } catch {
        logger.error("could not remove the metrics file", metadata: ["error": "\(error)"])
      }
    }
    logger.notice("balloonctl run stopped")
  }
}

/// How closely the daemon watches after a balloon driver's event.
public struct EventBurst: Sendable, Equatable {
  /// The shortest wait between two reads while the balloon moves, the one
  /// near the limit: at the fastest inflate seen under QEMU TCG (about
  /// 600 MiB/s, docs/kernel-interfaces.md §10.4) 5 ms is 3 MiB.
  public var stepMilliseconds: Int32 = 5
  /// The longest wait between two reads, far below the limit.
  public var longestStepMilliseconds: Int32 = 100
  /// The inflate rate the step assumes at most (docs/kernel-interfaces.md
  /// §10.4): the next read comes before the balloon, this fast, has eaten
  /// half of what is left under the limit, so a balloon up to twice as
  /// fast still cannot cross between two reads (the last ones are 5 ms
  /// apart, as with a fixed step). Far below the limit the reads are
  /// sparse: each is a full tick, and under TCG a 5 ms step took 15 % of
  /// the one vCPU from the inflate itself (e2e `events`, `probe_cost`).
  public var fastestInflateBytesPerSecond: Double = 2 * 1_073_741_824
  /// The size unchanged this long ends the burst. Long enough for a worker
  /// that pauses between chunks: after the burst the next read may be an
  /// idle tick (10 s) away, and without the target only the size tells.
  public var quietSeconds = 1.0
  /// A burst lasts at least this long: the worker may start inflating a
  /// little after the config-change callback.
  public var shortestSeconds = 0.5
  /// And at most this long (a balloon creeping for minutes is the tick's).
  public var longestSeconds = 30.0

  public init() {}

  /// The wait before the next read, with `headroomBytes` left under the
  /// limit (nil: unknown, the shortest step).
  public func step(headroomBytes: UInt64?) -> Int32 {
    guard let headroomBytes else { return stepMilliseconds }
    let milliseconds = Double(headroomBytes) / 2 / fastestInflateBytesPerSecond * 1000
    return Int32(
      min(max(milliseconds, Double(stepMilliseconds)), Double(longestStepMilliseconds)))
  }
}
