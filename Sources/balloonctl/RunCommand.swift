import ArgumentParser
import BalloonKit
import Logging
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// `balloonctl run`: the daemon that holds the balloon under the limit.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Hold the balloon under the pinned-aware limit (the daemon).",
    discussion: """
      Every interval, and at once on a udev event for the balloon, a memory-pressure \
      (PSI) event, or the balloon driver's own event (a kprobe on the function it runs \
      when the host asks for a new size; then every 5 ms while the balloon moves), it reads the balloon, the pinned memory and the limit, decides, and in \
      enforce mode pulls the balloon's lever:

        virtio   release: unbind virtio_balloon (the balloon deflates fully and the host \
      is told); re-admit: bind it again (it re-inflates to the host's target)
        VMware   release: modprobe -r vmw_balloon (all pages return at once); re-admit: \
      modprobe vmw_balloon
        Xen      set target_kb so the balloon sits exactly at the limit
        Hyper-V  alert only (unbinding hv_balloon loses the pages until reboot)

      It releases when the host's target exceeds the limit (before the balloon crosses, if \
      a tick comes first), or when the size exceeds it and the target is unknown; it \
      re-admits when the target is at or below limit × (1 − margin), or, with the target \
      unknown, after a back-off (30 s, doubling to 10 min while it keeps crossing).

      Settings come from --config (default \(RunSettings.defaultPath) when it exists; see \
      the example there); flags win. Without a mode anywhere it only reports. One instance \
      at a time (a lock in --state-dir); the hold is saved to <state-dir>/state.json on \
      every change, with the settings in force (shown by `balloonctl status`), and resumed \
      after a restart or crash.

      Settings (flag, settings-file key, default):
      \(RunSetting.table)

      Examples:
        balloonctl run --mode report                  watch and log what it would do
        balloonctl run --mode enforce --interval 0.5
        balloonctl run --once --mode report --json    one decision, for scripts
        balloonctl run --once --root ./snapshot --json

      Exit status: 0 stopped by SIGTERM/SIGINT (or --once done); 1 a kernel file, the \
      config or the state could not be read, or another instance runs; 64 invalid command \
      line or settings.
      """)

  @OptionGroup var global: GlobalOptions

  // Each setting's flag, help and default come from its declaration
  // (BalloonKit's RunSetting.swift); the settings file reads the same ones.
  @Option(name: .customLong(RunSetting.mode.flag), help: RunSetting.mode.argumentHelp)
  var mode: ControlMode?

  @Option(name: .customLong(RunSetting.interval.flag), help: RunSetting.interval.argumentHelp)
  var interval: Double?

  @Flag(
    name: .customLong(RunSetting.events.flag), inversion: .prefixedNo,
    help: RunSetting.events.argumentHelp)
  var events: Bool?

  @Option(
    name: .customLong(RunSetting.eventsInterval.flag),
    help: RunSetting.eventsInterval.argumentHelp)
  var eventsInterval: Double?

  @Option(name: .customLong(RunSetting.margin.flag), help: RunSetting.margin.argumentHelp)
  var margin: Double?

  @Option(name: .customLong(RunSetting.fraction.flag), help: RunSetting.fraction.argumentHelp)
  var fraction: Double?

  @Flag(
    name: .customLong(RunSetting.probeTarget.flag), inversion: .prefixedNo,
    help: RunSetting.probeTarget.argumentHelp)
  var probeTarget: Bool?

  @Option(name: .customLong(RunSetting.levers.flag), help: RunSetting.levers.argumentHelp)
  var levers: String?

  @Flag(
    name: .customLong(RunSetting.vmwShrinker.flag), inversion: .prefixedNo,
    help: RunSetting.vmwShrinker.argumentHelp)
  var vmwShrinker: Bool?

  @Option(name: .customLong(RunSetting.onExit.flag), help: RunSetting.onExit.argumentHelp)
  var onExit: ExitPolicy?

  @Option(
    help: ArgumentHelp(
      "Settings file (KEY=VALUE lines). (default: \(RunSettings.defaultPath) if it exists)",
      valueName: "file"), completion: .file())
  var config: String?

  @Option(
    help: ArgumentHelp("Where the lock and state.json live.", valueName: "dir"),
    completion: .directory)
  var stateDir: String = StateStore.defaultDirectory.string

  @Option(
    name: .customLong(RunSetting.metricsFile.flag), help: RunSetting.metricsFile.argumentHelp)
  var metricsFile: String?

  @Flag(help: "Run one tick, print it and exit.")
  var once = false

  @Flag(help: "With --once: print JSON (the reading, the limit and the decision).")
  var json = false

  /// What the command line set, read as the settings file is.
  func flags() throws(SettingError) -> RunSettings {
    var flags = RunSettings()
    flags.mode = mode
    flags.intervalSeconds = interval
    flags.events = events
    flags.eventsIntervalSeconds = eventsInterval
    flags.margin = margin
    flags.fraction = fraction
    flags.probeTarget = probeTarget
    flags.levers = try levers.map { text throws(SettingError) in
      try RunSetting.levers.flagValue(text)
    }
    flags.vmwShrinker = vmwShrinker
    flags.logLevel = global.logLevel?.rawValue
    flags.onExit = onExit
    flags.metricsFile = metricsFile
    return flags
  }

  func validate() throws {
    do {
      if let problem = RunConfiguration.problem(in: try flags()) {
        throw ValidationError(problem)
      }
    } catch let error as SettingError {
      throw ValidationError(error.message)
    }
    if json && !once { throw ValidationError("--json goes with --once") }
  }

  /// Flags, then the settings file, then the defaults.
  func configuration(root: Root) throws -> RunConfiguration {
    var file = RunSettings()
    let configPath = config ?? (root.isLive ? RunSettings.defaultPath : nil)
    if let configPath, config != nil || SystemFile.exists(FilePath(configPath)) {
      // A settings error is not a command-line error: one line, no usage text.
      do {
        file = try RunSettings.load(FilePath(configPath))
      } catch {
        throw OneLineError(settings: error)
      }
    }
    // A --root run reads a captured snapshot and writes nothing anywhere: the
    // flag is refused; the settings file's BALLOONCTL_METRICS_FILE (checked
    // above) is for the live daemon and not used, so a live config can be
    // tried on a snapshot.
    if metricsFile != nil && !root.isLive {
      throw OneLineError.invalid(
        "--metrics-file cannot be used with --root \(root) (a snapshot run writes nothing)")
    }
    var configuration = RunConfiguration(flags: try flags(), file: file)
    if configuration.mode == .enforce && !root.isLive {
      throw ValidationError(
        "enforce mode acts on the live system; --root \(root) is a snapshot, so only --mode report is allowed"
      )
    }
    if configuration.probeTarget && !root.isLive {
      throw ValidationError("--probe-target needs a live device; it cannot be used with --root")
    }
    if !root.isLive { configuration.metricsFile = nil }
    return configuration
  }

  func run() throws {
    // The daemon blocks SIGTERM/SIGINT before anything else: they are read from
    // a signalfd between ticks (graceful by construction). Start-up can take
    // seconds on a guest short of memory, and a stop in that window must still
    // end in BALLOONCTL_ON_EXIT, not in the signal's default action.
    let signals = once ? nil : try SignalChannel([SIGTERM, SIGINT])
    let root = global.fileSystemRoot
    let settings = try configuration(root: root)
    let logger = LogSetup.logger(level: settings.logLevel)

    // --once on a snapshot writes nothing anywhere; everything else keeps state.
    let store: StateStore? = root.isLive ? StateStore(directory: FilePath(stateDir)) : nil
    var lock: InstanceLock?
    if let store, !once || settings.mode == .enforce {
      let instance = try InstanceLock(directory: store.directory)
      guard try instance.acquire() else { throw InstanceLock.Held(path: instance.path.string) }
      lock = instance
    }
    // A corrupt state file must not stop (or crash-loop) the daemon: moved aside, start clean.
    let resume = try store?.loadForResume(moveAside: lock != nil)
    if let problem = resume?.problem {
      logger.error(
        "state file unusable; starting without it",
        metadata: ["error": "\(problem)", "moved_to": "\(resume?.movedTo?.string ?? "not moved")"])
    }
    let previous = resume?.state

    // The balloon drivers' events: attached by the daemon only, never by
    // --once (nor by status or limit), and only on the live system.
    var controllerConfig = settings.controller
    var events: BalloonEvents?
    if !once {
      let wakeups: Wakeups
      if !settings.events {
        wakeups = Wakeups(
          mode: .tick, reason: "events are turned off (\(RunSetting.events.key)=no or --no-events)")
      } else {
        switch BalloonEvents.open(root: root) {
        case .success(let opened):
          events = opened
          wakeups = Wakeups(
            mode: .events, symbols: opened.symbols.map(\.description),
            idleIntervalMilliseconds: UInt64((settings.eventsIntervalSeconds * 1000).rounded()))
        case .failure(let unavailable):
          // Logged once; status and state.json keep saying it.
          logger.warning(
            "balloon driver events unavailable; ticking every interval",
            metadata: ["reason": "\(unavailable.reason)"])
          wakeups = Wakeups(mode: .tick, reason: unavailable.reason)
        }
      }
      controllerConfig.wakeups = wakeups
    }
    // While events work and nothing is held, ticks are only a backstop.
    let idleTickSeconds = events == nil ? nil : settings.eventsIntervalSeconds

    let probe = settings.probeTarget ? RefusedOnceProbe(VirtioPCIWindowProbe(root: root)) : nil
    let controller = Controller(
      root: root,
      config: controllerConfig,
      actuators: settings.mode == .enforce
        ? Actuators(root: root, vmwShrinker: settings.vmwShrinker, enabledLevers: settings.levers)
        : nil,
      probe: probe,
      store: once && settings.mode == .report ? nil : store,
      previous: previous, pid: getpid(), logger: logger)
    let metrics = settings.metricsFile.map {
      MetricsFile(
        path: FilePath($0), version: BalloonctlVersion.string, mode: settings.mode,
        intervalSeconds: max(settings.intervalSeconds, idleTickSeconds ?? 0))
    }

    if once {
      let report = try controller.tickOnce()
      try metrics?.write(report, state: controller.state)
      if json {
        print(OnceJSON.document(report, mode: settings.mode).rendered())
      } else {
        print(StatusText(snapshot: report.snapshot, color: isatty(1) == 1).render())
        for decision in report.decisions {
          print("Decision  \(decision.balloon): \(decision.action.rawValue) (\(decision.reason))")
        }
      }
      _ = lock
      return
    }

    // SIGTERM/SIGINT were blocked when run() began (nil only with --once).
    guard let signals else { return }
    // Outlive the pressure: the OOM killer takes the workload first (on the
    // live system only). The pages a tick touches are locked by DaemonLoop,
    // after the first tick, so that start-up's pages are not.
    if root.isLive, let problem = SelfProtection.lowerOOMScore() {
      logger.info("could not lower our oom_score_adj", metadata: ["error": "\(problem)"])
    }
    let monitor: BalloonEventMonitor?
    do {
      monitor = root.isLive ? try BalloonEventMonitor() : nil
    } catch {
      logger.warning("no udev events; relying on the interval", metadata: ["error": "\(error)"])
      monitor = nil
    }
    var pressure: PressureTrigger?
    switch PressureTrigger.open(root: root) {
    case .success(let trigger): pressure = trigger
    case .failure(let error):
      logger.info(
        "no memory-pressure trigger; relying on the interval", metadata: ["error": "\(error)"])
    }
    // OOM kills: from the kernel log when it can be read, else from the
    // oom_kill counter alone (the victim then unknown). Never fatal.
    var kmsg: KmsgFollower?
    switch KmsgFollower.open(root: root) {
    case .success(let follower): kmsg = follower
    case .failure(let error):
      logger.warning(
        "kernel log unreadable; OOM kills are recorded from /proc/vmstat without the victim",
        metadata: ["error": "\(error)"])
    }
    let waiter = Waiter(
      monitorFD: monitor?.fileDescriptor, pressureFD: pressure?.fileDescriptor,
      signalFD: signals.fileDescriptor, kmsgFD: kmsg?.fileDescriptor,
      eventFDs: events?.fileDescriptors ?? [])

    logger.notice(
      "balloonctl run started",
      metadata: [
        "mode": "\(settings.mode.rawValue)", "interval_s": "\(settings.intervalSeconds)",
        "idle_interval_s": "\(idleTickSeconds.map { "\($0)" } ?? "none")",
        "wakeups":
          "\(events.map { "events (\($0.symbols.map(\.description).joined(separator: ", ")), \($0.events.count) probes)" } ?? "tick")",
        "margin": "\(settings.margin)", "fraction": "\(settings.fraction)",
        "probe_target": "\(settings.probeTarget)",
        "levers": "\(settings.levers.map(\.rawValue).sorted())",
        "on_exit": "\(settings.onExit.rawValue)",
        "udev": "\(monitor.map { "\($0.source)" } ?? "none")",
        "psi_window_s": "\(pressure.map { "\(Double($0.windowMicroseconds) / 1e6)" } ?? "none")",
        "kernel_log": "\(kmsg == nil ? "none" : "followed")",
      ])
    for record in controller.heldBalloons {
      logger.notice(
        "resuming hold",
        metadata: ["balloon": "\(record.name)", "reason": "\(record.hold.reason ?? "")"])
    }
    controller.guestInfo = GuestInfoPublisher.find(
      root: root, path: getenv("PATH").map { String(cString: $0) }, logger: logger)
    // The first tick must work: a broken /proc is a startup error, not a log line.
    let first = try controller.tick()
    if let blocked = first.performed.compactMap(\.error).first(where: \.needsRestart) {
      throw DaemonLoop.RestartNeeded(error: blocked)
    }
    try metrics?.write(first, state: controller.state)
    try controller.persistNow()

    try DaemonLoop(
      controller: controller, waiter: waiter, monitor: monitor, signals: signals, metrics: metrics,
      intervalSeconds: settings.intervalSeconds, idleIntervalSeconds: idleTickSeconds,
      onExit: settings.onExit, logger: logger,
      lockMemory: root.isLive,
      oomWatch: OOMWatch(follower: kmsg, baseline: first.snapshot.vmstat.oomKill),
      events: events, refusedProbe: probe,
      openEvents: settings.events && root.isLive && !once
        ? { BalloonEvents.open(root: root) } : nil,
      eventsIntervalSeconds: settings.eventsIntervalSeconds
    ).run()
    _ = lock
  }
}
