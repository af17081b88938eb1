import BalloonKit
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A run of the built binary that cannot hang the suite: output is read with
/// poll() until a deadline, then the process is killed and the run reported
/// as timed out (a regression that blocks in open() fails instead of hanging CI).
struct TimedResult {
  var status: Int32
  var stdout: String
  var stderr: String
  var timedOut: Bool
}

extension Balloonctl {
  static func run(
    _ arguments: [String], asNobody: Bool = false, timeoutSeconds: Double = 20,
    journalStream: Bool = false
  ) throws -> TimedResult {
    try start(arguments, asNobody: asNobody, journalStream: journalStream)
      .wait(timeoutSeconds: timeoutSeconds)
  }
}

extension RunningCommand {
  /// Collects the output until both pipes close or `timeoutSeconds` pass;
  /// then kills the process and reports the run as timed out.
  func wait(timeoutSeconds: Double) -> TimedResult {
    var collected: [[UInt8]] = [[], []]
    var open = [true, true]
    let deadline = Clock.boottime() + timeoutSeconds
    var timedOut = false
    var buffer = [UInt8](repeating: 0, count: 65536)
    while open[0] || open[1] {
      let left = deadline - Clock.boottime()
      if left <= 0 {
        timedOut = true
        break
      }
      var fds = [
        pollfd(fd: open[0] ? stdout : -1, events: Int16(POLLIN), revents: 0),
        pollfd(fd: open[1] ? stderr : -1, events: Int16(POLLIN), revents: 0),
      ]
      let ready = poll(&fds, 2, Int32(min(left, 1) * 1000))
      if ready < 0 && errno != EINTR { break }
      for index in 0..<2 where open[index] && fds[index].revents != 0 {
        let count = read(fds[index].fd, &buffer, buffer.count)
        if count > 0 {
          // Keep the head: the message is on the first lines.
          if collected[index].count < 1 << 20 { collected[index] += buffer[0..<count] }
        } else {
          open[index] = false
        }
      }
    }
    if timedOut { kill(pid, SIGKILL) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return TimedResult(
      status: code, stdout: String(decoding: collected[0], as: UTF8.self),
      stderr: String(decoding: collected[1], as: UTF8.self), timedOut: timedOut)
  }
}

extension Balloonctl {
  /// A copy of the binary that `nobody` can run: the build directory may sit
  /// below a directory only root can enter (a clone under /root). Made once
  /// per test process, in a 0755 directory under /tmp, removed at exit.
  static func binaryForNobody() throws -> String {
    try NobodyCopy.path.get()
  }
}

private enum NobodyCopy {
  static let path: Result<String, FixtureError> = {
    var template = Array("/tmp/balloonctl-nobody.XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
      return .failure(FixtureError("mkdtemp", "/tmp"))
    }
    let directory = String(cString: made)
    let copy = directory + "/balloonctl"
    let source = open(Balloonctl.binary, O_RDONLY | O_CLOEXEC)
    let target = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o755)
    defer {
      if source >= 0 { close(source) }
      if target >= 0 { close(target) }
    }
    guard source >= 0, target >= 0 else { return .failure(FixtureError("copy", copy)) }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
      let count = read(source, &buffer, buffer.count)
      if count == 0 { break }
      guard count > 0, write(target, buffer, count) == count else {
        return .failure(FixtureError("copy", copy))
      }
    }
    guard chmod(directory, 0o755) == 0, chmod(copy, 0o755) == 0 else {
      return .failure(FixtureError("chmod", copy))
    }
    atexit {
      // Best effort: the copy and its directory.
      if let path = try? NobodyCopy.path.get() {
        unlink(path)
        rmdir(String(path.dropLast("/balloonctl".count)))
      }
    }
    return .success(copy)
  }()
}
