public import Logging
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Runs one short program with a deadline: spawned without a shell, output
/// discarded, killed when the deadline passes. Tests substitute a recorder.
public protocol TimedCommandRunner: Sendable {
  /// nil on exit status 0; otherwise what went wrong, in one line.
  func run(_ arguments: [String], timeoutSeconds: Double) -> String?
}

/// On VMware, tells the host the guest's limit without anyone logging in:
/// `vmware-rpctool "info-set guestinfo.balloonctl.maxmemctl <MB>"` (and
/// `….limit_bytes <bytes>`), which the host reads as the VM's guestinfo
/// variables (`vmware-rpctool "info-get …"` in the guest, `govc vm.info -e`
/// on the host). Only when the tool is on PATH (open-vm-tools ships
/// /usr/bin/vmware-rpctool) and the guest is VMware's (a vmware balloon, or
/// DMI says VMware). Published when the MB value changes, at most once per
/// `minimumInterval`; a failure is logged once until a publish succeeds.
public final class GuestInfoPublisher {
  public static let tool = "vmware-rpctool"
  public static let maxmemctlKey = "guestinfo.balloonctl.maxmemctl"
  public static let limitKey = "guestinfo.balloonctl.limit_bytes"
  /// Both calls together never hold the tick longer than this.
  public static let timeoutSeconds = 2.0

  public let program: String
  let dmiSaysVMware: Bool
  let runner: any TimedCommandRunner
  let logger: Logger
  let minimumInterval: Double
  /// The MB value last published (successfully or not) and when (boot time).
  private(set) var published: UInt64?
  private var lastAttempt = -Double.infinity
  private var failing = false
  private var succeeded = false

  public init(
    program: String, dmiSaysVMware: Bool, runner: any TimedCommandRunner = SpawnWithTimeout(),
    minimumInterval: Double = 30, logger: Logger
  ) {
    self.program = program
    self.dmiSaysVMware = dmiSaysVMware
    self.runner = runner
    self.minimumInterval = minimumInterval
    self.logger = logger
  }

  /// A publisher when `vmware-rpctool` is on `PATH`; nil otherwise.
  public static func find(root: Root, path: String?, logger: Logger) -> GuestInfoPublisher? {
    guard let program = locate(tool, path: path) else { return nil }
    let dmi = HypervisorDetection.detect(root: root, balloonKinds: [])
    logger.info(
      "will publish the limit to a VMware host as guestinfo",
      metadata: ["tool": "\(program)", "key": "\(maxmemctlKey)"])
    return GuestInfoPublisher(
      program: program, dmiSaysVMware: dmi.candidates == [.vmware], logger: logger)
  }

  /// The first executable `name` in the `:`-separated directories of `path`
  /// (absolute ones only: a relative PATH entry would depend on the cwd).
  static func locate(_ name: String, path: String?) -> String? {
    for directory in (path ?? "").split(separator: ":") where directory.hasPrefix("/") {
      let candidate = FilePath(String(directory)).appending(name)
      let usable = candidate.withPlatformString { access($0, X_OK) == 0 }
      if usable { return candidate.string }
    }
    return nil
  }

  /// Called once per tick with the daemon's limit and kinds; cheap when
  /// nothing changed (no spawn).
  public func tick(limitBytes: UInt64, kinds: [BalloonKind], now: Double) {
    guard dmiSaysVMware || kinds.contains(.vmware) else { return }
    let megabytes = limitBytes / BalloonLimit.mebibyte
    guard megabytes != published, now - lastAttempt >= minimumInterval else { return }
    lastAttempt = now
    published = megabytes
    // The two values agree: maxmemctl = floor(limit_bytes / 1 MiB).
    let calls = [
      [program, "info-set \(Self.maxmemctlKey) \(megabytes)"],
      [program, "info-set \(Self.limitKey) \(megabytes * BalloonLimit.mebibyte)"],
    ]
    let deadline = Self.timeoutSeconds / Double(calls.count)
    var problem: String?
    for call in calls where problem == nil {
      problem = runner.run(call, timeoutSeconds: deadline)
    }
    if let problem {
      // Tried again when the value next changes (or after the interval).
      published = nil
      if !failing {
        logger.warning(
          "could not publish the limit to the VMware host",
          metadata: ["tool": "\(program)", "error": "\(problem)"])
      }
      failing = true
      return
    }
    if failing || !succeeded {
      logger.info(
        "published the limit to the VMware host",
        metadata: [Self.maxmemctlKey: "\(megabytes)", "tool": "\(program)"])
    }
    failing = false
    succeeded = true
  }
}

/// posix_spawn (no shell, no PATH search), stdin/stdout/stderr on /dev/null,
/// waitpid polled until the deadline, then SIGKILL.
public struct SpawnWithTimeout: TimedCommandRunner {
  public init() {}

  public func run(_ arguments: [String], timeoutSeconds: Double) -> String? {
    guard !arguments.isEmpty else { return "no command" }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd in Int32(0)...2 {
      posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    let pid: pid_t
    switch ChildProcess.spawn(arguments, fileActions: &actions) {
    case .success(let child): pid = child
    case .failure(let error): return "cannot run: \(error)"
    }
    var status: Int32 = 0
    let start = Clock.boottime()
    while true {
      let done = waitpid(pid, &status, WNOHANG)
      if done == pid { break }
      if done < 0 && errno != EINTR { return "waitpid: \(Errno(rawValue: errno))" }
      if Clock.boottime() - start >= timeoutSeconds {
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return "no answer within \(timeoutSeconds) s; killed"
      }
      var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
      nanosleep(&pause, nil)
    }
    if status & 0x7f == 0 {
      let code = (status >> 8) & 0xff
      return code == 0 ? nil : "exit status \(code)"
    }
    return "killed by signal \(status & 0x7f)"
  }
}
