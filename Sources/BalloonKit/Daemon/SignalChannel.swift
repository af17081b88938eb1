import CLinux
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// SIGTERM and SIGINT as readable events: the signals are blocked and read
/// from a signalfd in the same poll() as everything else, so shutdown needs no
/// handler, no extra thread and no async runtime (which on Linux costs a
/// Dispatch worker pool with a 1 Hz monitor: more than the daemon's whole
/// idle CPU budget, see BENCHMARKS.md).
public final class SignalChannel {
  public let fileDescriptor: Int32
  public let signals: [Int32]

  /// Blocks `signals` for this thread (call it before any other thread
  /// exists, so they inherit the mask) and opens the signalfd.
  public init(_ signals: [Int32]) throws(SourceError) {
    var mask = sigset_t()
    sigemptyset(&mask)
    for signal in signals { sigaddset(&mask, signal) }
    guard pthread_sigmask(SIG_BLOCK, &mask, nil) == 0 else {
      throw SourceError(path: "pthread_sigmask", .unreadable(Errno(rawValue: errno)))
    }
    let fd = signalfd(-1, &mask, Int32(SFD_NONBLOCK | SFD_CLOEXEC))
    guard fd >= 0 else {
      throw SourceError(path: "signalfd", .unreadable(Errno(rawValue: errno)))
    }
    fileDescriptor = fd
    self.signals = signals
  }

  deinit { close(fileDescriptor) }

  /// The signals that arrived since the last call.
  public func drain() -> [Int32] {
    var received: [Int32] = []
    var info = signalfd_siginfo()
    while read(fileDescriptor, &info, MemoryLayout<signalfd_siginfo>.size)
      == MemoryLayout<signalfd_siginfo>.size
    {
      received.append(Int32(bitPattern: info.ssi_signo))
    }
    return received
  }

  public static func name(_ signal: Int32) -> String {
    switch signal {
    case SIGTERM: "SIGTERM"
    case SIGINT: "SIGINT"
    case SIGHUP: "SIGHUP"
    default: "signal \(signal)"
    }
  }
}
