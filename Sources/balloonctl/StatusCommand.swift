import ArgumentParser
import BalloonKit
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// `balloonctl status`: the balloon, its sizes, the pinned memory and the limit.
struct StatusCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status",
    abstract: "Show the balloon, its size and target, the pinned memory and the limit.",
    discussion: """
      Reads only: /proc/meminfo, /proc/vmstat, /proc/<pid>/status, the balloon's sysfs and \
      debugfs files. Finds the balloon through libudev (or by walking <dir>/sys with --root).

      current and target are the balloon's own size (memory taken from the guest); \
      "unknown" comes with the reason. The limit is floor(fraction × (guest − pinned)), \
      capped at guest swap when swap is smaller (see `balloonctl limit --explain`).

      When `balloonctl run` keeps a state (<state-dir>/state.json), the daemon's part \
      comes from it alone: whether it runs, the settings it runs with, and per balloon \
      the hold, with the target it re-admits at computed from the daemon's own fraction \
      and margin (not --fraction).

      Examples:
        balloonctl status
        balloonctl status --json | jq .limit.maxmemctl_mb
        balloonctl status --json | jq .daemon.settings
        balloonctl status --processes 5
        balloonctl status --probe-target     virtio: the host's target too
        balloonctl status --root ./snapshot  a copied /proc + /sys tree
        balloonctl status --watch            redraw every 2 s until Ctrl-C
        balloonctl status --watch 0.5        every half second
        balloonctl status --check            Nagios/Icinga: exit 0-3
        NO_COLOR=1 balloonctl status         no colour (TERM=dumb too)

      Colour only on a terminal, and not with NO_COLOR set (to anything) or \
      TERM=dumb. The bar and the watch view's history use block characters in a \
      UTF-8 locale (LC_ALL, else LC_CTYPE, else LANG) and ASCII otherwise.

      Exit status: 0 the state was read (a /proc/<pid>/status that cannot be read only makes \
      Σ VmPin partial, said in a note), whether or not a balloon is over the limit; 1 a \
      kernel file or the daemon's state file (<state-dir>/state.json) could not be read or \
      is malformed (the one-line error names it; the rest is still shown); 64 invalid \
      command line. With --check: 0 OK, 1 WARNING (a hold is active, or a balloon's size \
      or target is unknown), 2 CRITICAL (a balloon or its target is over the limit now and \
      no hold brought it back under), 3 UNKNOWN (a file could not be read).
      """)

  @OptionGroup var global: GlobalOptions
  @OptionGroup(title: "Reading") var reading: SnapshotArguments

  @Flag(help: "Print JSON (sizes in bytes, unknown as null) instead of text.")
  var json = false

  @Flag(
    help: ArgumentHelp(
      "One line for a monitoring plugin (Nagios, Icinga); the exit status is its verdict.",
      discussion: """
        0 OK; 1 WARNING: a hold is active or a size or target is unknown; 2 CRITICAL: a \
        balloon is over the limit now; 3 UNKNOWN: the state could not be read.
        """))
  var check = false

  @Option(
    name: .long, defaultAsFlag: StatusCommand.defaultWatchSeconds, parsing: .next,
    help: ArgumentHelp(
      "Redraw a live view every <seconds> until Ctrl-C.",
      discussion: """
        The balloon, its target, the limit, the hold and the balloon's recent sizes. On a \
        terminal it draws in place on the alternate screen; otherwise it prints one frame \
        after another, separated by a blank line.
        """,
      valueName: "seconds"))
  var watch: Double? = nil

  @Option(
    help: ArgumentHelp(
      "Also list the top <n> processes by locked + pinned memory (VmLck, VmPin).", valueName: "n"))
  var processes: Int?

  @Option(
    help: ArgumentHelp(
      "Where balloonctl run keeps its state (below --root when given).", valueName: "dir"))
  var stateDir: String = StateStore.defaultDirectory.string

  static let defaultWatchSeconds = 2.0
  static let watchRange = 0.1...3600.0

  func validate() throws {
    if let processes, processes < 1 {
      throw ValidationError("--processes must be at least 1, got \(processes)")
    }
    if let watch, !Self.watchRange.contains(watch) {
      throw ValidationError(
        "--watch must be from \(RunSetting.text(Self.watchRange.lowerBound)) to "
          + "\(RunSetting.text(Self.watchRange.upperBound)) seconds, got \(watch)")
    }
    let modes = [json ? "--json" : nil, check ? "--check" : nil, watch != nil ? "--watch" : nil]
      .compactMap { $0 }
    if modes.count > 1 {
      throw ValidationError("\(modes.joined(separator: " and ")) cannot be used together")
    }
  }

  func run() throws {
    _ = LogSetup.logger(level: global.level)
    let root = global.fileSystemRoot
    if check { throw ExitCode(runCheck(root: root, options: try reading.options(root: root))) }
    if let watch { return try runWatch(root: root, intervalSeconds: watch) }
    let snapshot = try reading.snapshot(root: root)
    // The daemon's hold, from its state file: no device access of our own.
    // An unusable state file (or directory) is an error: exit 1, nothing moved.
    var daemon: DaemonReport?
    var daemonProblem: SourceError?
    do {
      daemon = try DaemonReport.load(root: root, directory: stateDir)
    } catch {
      daemonProblem = error
    }
    // The hold's threshold is the daemon's: its fraction and margin, not ours.
    let daemonLimit = daemon?.limit(from: snapshot.limit).bytes
    if json {
      var members = SnapshotJSON.members(snapshot, processes: processes)
      members.append(("daemon", daemon?.json(limitBytes: daemonLimit) ?? .null))
      members.append(("oom_kills", daemon?.oomKillsJSON ?? .array([])))
      if let daemonProblem { members.append(("daemon_error", .string("\(daemonProblem)"))) }
      print(JSONValue.object(members).rendered())
    } else {
      var text = StatusText(
        snapshot: snapshot, processes: processes, style: Self.style(),
        heldBalloons: daemon?.heldBalloons ?? []
      ).render()
      if let daemon {
        text +=
          "\n\n" + TerminalText.fit(daemon.lines(limitBytes: daemonLimit).joined(separator: "\n"))
      } else if let daemonProblem {
        // An error stays one line, whatever its width, to be copied whole.
        text += "\n\nDaemon state: \(daemonProblem)"
      } else {
        text += "\n\nDaemon    no state: balloonctl run has not run since boot"
      }
      print(text)
    }
    // After the output: the rest of the status is still worth showing.
    if let daemonProblem { throw daemonProblem }
  }

  /// Colour and characters for stdout, from the environment.
  static func style() -> TerminalStyle {
    TerminalStyle.detect(environment: environment(), isTerminal: isatty(1) == 1)
  }

  static func environment() -> [String: String] {
    var values: [String: String] = [:]
    var entry = environ
    while let pointer = entry.pointee {
      let text = String(cString: pointer)
      if let equals = text.firstIndex(of: "=") {
        values[String(text[..<equals])] = String(text[text.index(after: equals)...])
      }
      entry += 1
    }
    return values
  }

  /// `--check`: the plugin line, and its status. Anything that cannot be
  /// read (a kernel file, the daemon's state) is UNKNOWN, not an error exit.
  func runCheck(root: Root, options: SnapshotOptions) -> Int32 {
    let assessment: StatusAssessment
    do {
      let snapshot = try GuestSnapshotReader.read(root: root, options: options)
      let daemon = try DaemonReport.load(root: root, directory: stateDir)
      assessment = StatusAssessment(snapshot: snapshot, heldBalloons: daemon?.heldBalloons ?? [])
    } catch {
      print(StatusAssessment.unknownLine("\(error)"))
      return StatusAssessment.Level.unknown.rawValue
    }
    print(assessment.checkLine)
    return assessment.level.rawValue
  }

  /// `--watch`: a frame per interval until SIGINT or SIGTERM, read from a
  /// signalfd in the same poll() that times the interval (as the daemon
  /// does), so the screen is always restored on the way out.
  func runWatch(root: Root, intervalSeconds: Double) throws {
    let signals = try SignalChannel([SIGINT, SIGTERM, SIGHUP])
    let terminal = isatty(1) == 1
    let style = Self.style()
    let output = FileDescriptor.standardOutput
    if terminal { try output.writeAll(Array(TerminalScreen.enter.utf8)) }
    defer { if terminal { _ = try? output.writeAll(Array(TerminalScreen.leave.utf8)) } }
    var history = SizeHistory()
    var frames = 0
    while true {
      let frame = watchFrame(
        root: root, intervalSeconds: intervalSeconds, history: &history, style: style)
      let text =
        terminal
        ? TerminalScreen.redraw(frame, rows: Self.terminalRows())
        : (frames == 0 ? "" : "\n") + frame + "\n"
      try output.writeAll(Array(text.utf8))
      frames += 1
      var descriptor = pollfd(fd: signals.fileDescriptor, events: Int16(POLLIN), revents: 0)
      let ready = poll(&descriptor, 1, Int32(intervalSeconds * 1000))
      if ready > 0 && !signals.drain().isEmpty { return }
    }
  }

  /// The height of the terminal on stdout, asked each frame (it may have
  /// been resized); nil when it cannot be known.
  static func terminalRows() -> Int? {
    var size = winsize()
    guard ioctl(1, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0 else { return nil }
    return Int(size.ws_row)
  }

  /// One frame; a reading that fails shows its one-line error instead (the
  /// next interval tries again), as `watch` keeps showing a failing command.
  func watchFrame(
    root: Root, intervalSeconds: Double, history: inout SizeHistory, style: TerminalStyle
  ) -> String {
    let takenAt = Clock.wall()
    do {
      let snapshot = try reading.snapshot(root: root)
      history.record(snapshot)
      var daemonLines = ["Daemon    no state: balloonctl run has not run since boot"]
      var held: Set<String> = []
      do {
        if let daemon = try DaemonReport.load(root: root, directory: stateDir) {
          held = daemon.heldBalloons
          daemonLines = Array(daemon.lines(limitBytes: nil).prefix(1))
        }
      } catch {
        daemonLines = ["Daemon state: \(error)"]
      }
      return StatusWatchFrame(
        snapshot: snapshot, heldBalloons: held, daemonLines: daemonLines, history: history,
        intervalSeconds: intervalSeconds, takenAt: takenAt, style: style
      ).render()
    } catch {
      return TerminalText.fit(
        StatusWatchFrame.title(intervalSeconds: intervalSeconds, takenAt: takenAt) + "\n\n"
          + "cannot read: \(error)")
    }
  }
}
