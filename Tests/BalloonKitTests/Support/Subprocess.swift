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

  static func run(_ arguments: [String]) throws -> CommandResult {
    var out: [Int32] = [0, 0]
    var err: [Int32] = [0, 0]
    guard pipe(&out) == 0, pipe(&err) == 0 else { throw FixtureError("pipe", "") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, out[1], 1)
    posix_spawn_file_actions_adddup2(&actions, err[1], 2)
    posix_spawn_file_actions_addclose(&actions, out[0])
    posix_spawn_file_actions_addclose(&actions, err[0])
    let argv: [UnsafeMutablePointer<CChar>?] = ([binary] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    // A clean environment: no umockdev testbed, no LD_PRELOAD from the runner.
    let env: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nil]
    defer { env.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, binary, &actions, nil, argv, env)
    close(out[1])
    close(err[1])
    defer {
      close(out[0])
      close(err[0])
    }
    guard spawned == 0 else { throw FixtureError("posix_spawn", binary) }
    let stdout = drain(out[0])
    let stderr = drain(err[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return CommandResult(status: code, stdout: stdout, stderr: stderr)
  }

  private static func drain(_ fd: Int32) -> String {
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
