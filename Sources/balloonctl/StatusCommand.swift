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
        balloonctl status --probe-target      (virtio: also read the host's target)
        balloonctl status --root ./snapshot   (a copied /proc + /sys tree)

      Exit status: 0 the state was read (a /proc/<pid>/status that cannot be read only makes \
      Σ VmPin partial, said in a note); 1 a kernel file or the daemon's state file \
      (<state-dir>/state.json) could not be read or is malformed (the one-line error names \
      it; the rest is still shown); 64 invalid command line.
      """)

  @OptionGroup var global: GlobalOptions
  @OptionGroup(title: "Reading") var reading: SnapshotArguments

  @Flag(help: "Print JSON (sizes in bytes, unknown as null) instead of text.")
  var json = false

  @Option(
    help: ArgumentHelp(
      "Also list the top <n> processes by locked + pinned memory (VmLck, VmPin).", valueName: "n"))
  var processes: Int?

  @Option(
    help: ArgumentHelp(
      "Where balloonctl run keeps its state (below --root when given).", valueName: "dir"))
  var stateDir: String = StateStore.defaultDirectory.string

  func validate() throws {
    if let processes, processes < 1 {
      throw ValidationError("--processes must be at least 1, got \(processes)")
    }
  }

  func run() throws {
    _ = LogSetup.logger(level: global.level)
    let root = global.fileSystemRoot
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
      var text = StatusText(snapshot: snapshot, processes: processes, color: isatty(1) == 1)
        .render()
      if let daemon {
        text += "\n\n" + daemon.lines(limitBytes: daemonLimit).joined(separator: "\n")
      } else if let daemonProblem {
        text += "\n\nDaemon state: \(daemonProblem)"
      } else {
        text += "\n\nDaemon    no state: balloonctl run has not run since boot"
      }
      print(text)
    }
    // After the output: the rest of the status is still worth showing.
    if let daemonProblem { throw daemonProblem }
  }
}
