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
      Every interval, and at once on a udev event for the balloon or a memory-pressure \
      (PSI) event, it reads the balloon, the pinned memory and the limit, decides, and in \
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

      Settings come from --config (default /etc/default/balloonctl when it exists; see \
      the example there); flags win. Without a mode anywhere it only reports. One instance \
      at a time (a lock in --state-dir); the hold is saved to <state-dir>/state.json on \
      every change and resumed after a restart or crash.

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

  @Option(
    help:
      "enforce: pull levers. report: log and publish what it would do, change nothing. (default: report, or BALLOONCTL_MODE)"
  )
  var mode: ControlMode?

  @Option(
    help: ArgumentHelp("Seconds between ticks, 0.1 to 60. (default: 1)", valueName: "seconds"))
  var interval: Double?

  @Option(
    help: ArgumentHelp(
      "Re-admit when the target is at or below limit × (1 − margin), 0 to 0.5. (default: 0.05)",
      valueName: "m"))
  var margin: Double?

  @Option(
    help: ArgumentHelp(
      "Share of guest − pinned the balloon may take, 0 < f ≤ 1. (default: 0.65)", valueName: "f"))
  var fraction: Double?

  @Flag(
    inversion: .prefixedNo,
    help: ArgumentHelp(
      "Read the virtio target from the device's PCI config window (writes its window registers).",
      discussion:
        "Default: on in enforce mode (the preventive hold needs the target), off in report mode."))
  var probeTarget: Bool?

  @Option(
    help: ArgumentHelp(
      "Levers that may be pulled: comma-separated virtio, vmware, xen, or none. (default: all)",
      valueName: "list"))
  var levers: String?

  @Flag(
    inversion: .prefixedNo,
    help: "Reload vmw_balloon with vmwballoon_shrinker_enable=1 when re-admitting. (default: no)")
  var vmwShrinker: Bool?

  @Option(
    help:
      "What to do with a held balloon on SIGTERM/SIGINT: hold (keep it released; the next run resumes) or readmit. (default: hold)"
  )
  var onExit: ExitPolicy?

  @Option(
    help: ArgumentHelp(
      "Settings file (KEY=VALUE lines). (default: /etc/default/balloonctl if it exists)",
      valueName: "file"), completion: .file())
  var config: String?

  @Option(
    help: ArgumentHelp("Where the lock and state.json live.", valueName: "dir"),
    completion: .directory)
  var stateDir: String = "/run/balloonctl"

  @Option(
    help: ArgumentHelp(
      "Also write Prometheus metrics to <file> (node_exporter textfile collector) on every change. Not with --root (a snapshot run writes nothing).",
      valueName: "file"))
  var metricsFile: String?

  @Flag(help: "Run one tick, print it and exit.")
  var once = false

  @Flag(help: "With --once: print JSON (the reading, the limit and the decision).")
  var json = false

  func validate() throws {
    if let interval, !RunSettings.intervalRange.contains(interval) {
      throw ValidationError("--interval must be 0.1 to 60 seconds, got \(interval)")
    }
    if let margin, !RunSettings.marginRange.contains(margin) {
      throw ValidationError("--margin must be 0 to 0.5, got \(margin)")
    }
    if let fraction, !BalloonLimit.isValid(fraction: fraction) {
      throw ValidationError("--fraction must be above 0 and at most 1, got \(fraction)")
    }
    if let levers, RunSettings.parseLevers(levers) == nil {
      throw ValidationError(
        "--levers takes virtio, vmware, xen separated by commas, or none; got \"\(levers)\"")
    }
    if json && !once { throw ValidationError("--json goes with --once") }
    if let metricsFile, !metricsFile.hasPrefix("/") {
      throw ValidationError("--metrics-file needs an absolute path")
    }
  }

  /// Flags, then the settings file, then the defaults.
  func resolved(root: Root) throws -> Resolved {
    var settings = RunSettings()
    let configPath = config ?? (root.isLive ? RunSettings.defaultPath : nil)
    if let configPath, config != nil || SystemFile.exists(FilePath(configPath)) {
      // A settings error is not a command-line error: one line, no usage text.
      do {
        settings = try RunSettings.load(FilePath(configPath))
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
    let mode = self.mode ?? settings.mode ?? .report
    if mode == .enforce && !root.isLive {
      throw ValidationError(
        "enforce mode acts on the live system; --root \(root) is a snapshot, so only --mode report is allowed"
      )
    }
    let probe = probeTarget ?? settings.probeTarget ?? (mode == .enforce)
    if probe && !root.isLive {
      throw ValidationError("--probe-target needs a live device; it cannot be used with --root")
    }
    let level =
      global.logLevel ?? settings.logLevel.flatMap(Logger.Level.init(rawValue:)) ?? .notice
    return Resolved(
      mode: mode,
      interval: interval ?? settings.intervalSeconds ?? 1,
      margin: margin ?? settings.margin ?? PolicyConfig.default.margin,
      fraction: fraction ?? settings.fraction ?? BalloonLimit.defaultFraction,
      probe: probe,
      levers: levers.flatMap(RunSettings.parseLevers) ?? settings.levers ?? [
        .virtio, .vmware, .xen,
      ],
      vmwShrinker: vmwShrinker ?? settings.vmwShrinker ?? false,
      onExit: onExit ?? settings.onExit ?? .hold,
      metricsFile: root.isLive ? metricsFile ?? settings.metricsFile : nil,
      logLevel: level)
  }

  struct Resolved {
    var mode: ControlMode
    var interval: Double
    var margin: Double
    var fraction: Double
    var probe: Bool
    var levers: Set<BalloonKind>
    var vmwShrinker: Bool
    var onExit: ExitPolicy
    var metricsFile: String?
    var logLevel: Logger.Level
  }

  func run() throws {
    let root = global.fileSystemRoot
    let settings = try resolved(root: root)
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

    let controller = Controller(
      root: root,
      config: ControllerConfig(
        mode: settings.mode, fraction: settings.fraction,
        policy: PolicyConfig(margin: settings.margin),
        intervalSeconds: settings.interval),
      actuators: settings.mode == .enforce
        ? Actuators(root: root, vmwShrinker: settings.vmwShrinker, enabledLevers: settings.levers)
        : nil,
      probe: settings.probe ? VirtioPCIWindowProbe(root: root) : nil,
      store: once && settings.mode == .report ? nil : store,
      previous: previous, pid: getpid(), logger: logger)
    let metrics = settings.metricsFile.map { MetricsFile(path: FilePath($0)) }

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

    // Block SIGTERM/SIGINT before anything else runs: they are read from a
    // signalfd between ticks (graceful by construction).
    let signals = try SignalChannel([SIGTERM, SIGINT])
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
    let waiter = Waiter(
      monitorFD: monitor?.fileDescriptor, pressureFD: pressure?.fileDescriptor,
      signalFD: signals.fileDescriptor)

    logger.notice(
      "balloonctl run started",
      metadata: [
        "mode": "\(settings.mode.rawValue)", "interval_s": "\(settings.interval)",
        "margin": "\(settings.margin)", "fraction": "\(settings.fraction)",
        "probe_target": "\(settings.probe)",
        "levers": "\(settings.levers.map(\.rawValue).sorted())",
        "on_exit": "\(settings.onExit.rawValue)",
        "udev": "\(monitor.map { "\($0.source)" } ?? "none")",
        "psi_window_s": "\(pressure.map { "\(Double($0.windowMicroseconds) / 1e6)" } ?? "none")",
      ])
    for record in controller.heldBalloons {
      logger.notice(
        "resuming hold",
        metadata: ["balloon": "\(record.name)", "reason": "\(record.hold.reason ?? "")"])
    }
    // The first tick must work: a broken /proc is a startup error, not a log line.
    let first = try controller.tick()
    if let blocked = first.performed.compactMap(\.error).first(where: \.needsRestart) {
      throw DaemonLoop.RestartNeeded(error: blocked)
    }
    try metrics?.write(first, state: controller.state)
    try controller.persistNow()

    try DaemonLoop(
      controller: controller, waiter: waiter, monitor: monitor, signals: signals, metrics: metrics,
      intervalSeconds: settings.interval, onExit: settings.onExit, logger: logger,
      lockMemory: root.isLive
    ).run()
    _ = lock
  }
}
