import BalloonKit
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Runs the built `balloonctl` (next to the test bundle) and captures its
/// output, for tests of the command line itself.
struct CommandResult {
  var status: Int32
  var stdout: String
  var stderr: String
}

enum Balloonctl {
  /// The products directory: where the test bundle (this process) lives.
  static var binary: String {
    let exe = SystemFile.readLink(FilePath("/proc/self/exe")) ?? ""
    return FilePath(exe).removingLastComponent().appending("balloonctl").string
  }

  /// - Parameter environment: `NAME=value` entries added to the clean
  ///   environment (LANG, NO_COLOR, COLUMNS).
  static func run(_ arguments: [String], environment: [String] = []) throws -> CommandResult {
    try start(arguments, environment: environment).wait()
  }

  /// Starts the binary; its output is collected by `wait()` (keep it under a
  /// pipe's 64 KiB, as the daemon's logs in a short test are) or by
  /// `wait(timeoutSeconds:)`.
  /// - Parameters:
  ///   - asNobody: run as uid/gid 65534 through setpriv(1), for permission
  ///     cases (root reads any file).
  ///   - journalStream: set JOURNAL_STREAM to stderr's pipe, as systemd does
  ///     when stderr is the journal.
  ///   - path: PATH for the child (a test puts stand-in tools first).
  ///   - extra: `NAME=value` entries added to the clean environment.
  static func start(
    _ arguments: [String], asNobody: Bool = false, journalStream: Bool = false,
    path: String = "/usr/sbin:/usr/bin:/sbin:/bin", environment extra: [String] = []
  ) throws -> RunningCommand {
    var out: [Int32] = [0, 0]
    var err: [Int32] = [0, 0]
    guard pipe(&out) == 0, pipe(&err) == 0 else { throw FixtureError("pipe", "") }
    // Close-on-exec, so children spawned by tests running in parallel do not
    // hold these pipes open (dup2 onto 1 and 2 clears the flag for ours).
    for fd in out + err { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, out[1], 1)
    posix_spawn_file_actions_adddup2(&actions, err[1], 2)
    let executable = asNobody ? "/usr/bin/setpriv" : binary
    let command =
      asNobody
      ? ["--reuid=65534", "--regid=65534", "--clear-groups", try binaryForNobody()] + arguments
      : arguments
    let argv: [UnsafeMutablePointer<CChar>?] =
      ([executable] + command).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    // A clean environment: no umockdev testbed, no LD_PRELOAD from the runner.
    // Only the sanitizer options pass (make test-asan/test-tsan), so a report in
    // the sanitized binary goes to the same log and fails the run (Makefile).
    let sanitizerNames: [String] = [
      "ASAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS",
    ]
    var environment =
      ["PATH=\(path)"]
      + sanitizerNames.compactMap { name in
        getenv(name).map { "\(name)=\(String(cString: $0))" }
      }
    environment += extra
    if journalStream {
      var info = stat()
      guard fstat(err[1], &info) == 0 else { throw FixtureError("fstat", "pipe") }
      environment.append("JOURNAL_STREAM=\(info.st_dev):\(info.st_ino)")
    }
    let env: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
    defer { env.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, env)
    close(out[1])
    close(err[1])
    guard spawned == 0 else {
      close(out[0])
      close(err[0])
      throw FixtureError("posix_spawn", executable)
    }
    return RunningCommand(pid: pid, stdout: out[0], stderr: err[0])
  }

  static func drain(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
      let count = read(fd, &buffer, buffer.count)
      if count <= 0 { break }
      bytes.append(contentsOf: buffer[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// A started `balloonctl`: signal it, then wait for its exit and output.
final class RunningCommand {
  let pid: pid_t
  let stdout: Int32
  let stderr: Int32

  init(pid: pid_t, stdout: Int32, stderr: Int32) {
    self.pid = pid
    self.stdout = stdout
    self.stderr = stderr
  }

  deinit {
    close(stdout)
    close(stderr)
  }

  func signal(_ number: Int32) { kill(pid, number) }

  func wait() -> CommandResult {
    let out = Balloonctl.drain(stdout)
    let err = Balloonctl.drain(stderr)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return CommandResult(status: code, stdout: out, stderr: err)
  }
}
