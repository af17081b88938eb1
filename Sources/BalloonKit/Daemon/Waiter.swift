#if canImport(Glibc)
  import Glibc
#endif

/// Why the daemon woke up.
public struct WakeReasons: OptionSet, Sendable, CustomStringConvertible {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  public static let timeout = WakeReasons(rawValue: 1 << 0)
  public static let udev = WakeReasons(rawValue: 1 << 1)
  public static let pressure = WakeReasons(rawValue: 1 << 2)
  public static let interrupted = WakeReasons(rawValue: 1 << 3)
  /// The kernel logged something (/dev/kmsg): maybe an OOM kill.
  public static let kernelLog = WakeReasons(rawValue: 1 << 4)
  /// A balloon driver's event function ran (a kprobe; Daemon/BalloonEvents.swift).
  public static let balloonEvent = WakeReasons(rawValue: 1 << 5)

  public var description: String {
    var names: [String] = []
    if contains(.timeout) { names.append("interval") }
    if contains(.udev) { names.append("udev") }
    if contains(.pressure) { names.append("memory pressure") }
    if contains(.interrupted) { names.append("shutdown") }
    if contains(.kernelLog) { names.append("kernel log") }
    if contains(.balloonEvent) { names.append("balloon event") }
    return names.joined(separator: "+")
  }
}

/// Blocks in one `poll()` until the interval passes, a udev or PSI
/// memory-pressure event arrives, the kernel logs a record (/dev/kmsg, for
/// OOM kills), a balloon driver's event (kprobe rings), or a signal (SIGTERM/SIGINT, through a signalfd) asks to stop. No busy polling: an idle daemon sleeps here, and
/// the pollfd set is built once.
public final class Waiter {
  private var fds: [pollfd]
  private let monitorFD: Int32?
  private let pressureFD: Int32?
  private let signalFD: Int32?
  private let kmsgFD: Int32?
  private var eventFDs: Set<Int32>

  public init(
    monitorFD: Int32?, pressureFD: Int32?, signalFD: Int32?, kmsgFD: Int32? = nil,
    eventFDs: [Int32] = []
  ) {
    self.eventFDs = Set(eventFDs)
    self.monitorFD = monitorFD
    self.pressureFD = pressureFD
    self.signalFD = signalFD
    self.kmsgFD = kmsgFD
    fds = []
    if let signalFD { fds.append(pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)) }
    if let monitorFD { fds.append(pollfd(fd: monitorFD, events: Int16(POLLIN), revents: 0)) }
    if let pressureFD { fds.append(pollfd(fd: pressureFD, events: Int16(POLLPRI), revents: 0)) }
    if let kmsgFD { fds.append(pollfd(fd: kmsgFD, events: Int16(POLLIN), revents: 0)) }
    for fd in eventFDs { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
  }

  /// The balloon events' fds after they were opened again (BalloonEvents.reattach).
  public func replaceEventFDs(_ fresh: [Int32]) {
    fds.removeAll { eventFDs.contains($0.fd) }
    eventFDs = Set(fresh)
    for fd in fresh { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
  }

  public func wait(timeoutMilliseconds: Int32) -> WakeReasons {
    for index in fds.indices { fds[index].revents = 0 }
    let count = poll(&fds, nfds_t(fds.count), timeoutMilliseconds)
    if count == 0 { return .timeout }
    if count < 0 { return errno == EINTR ? [] : .timeout }
    var reasons: WakeReasons = []
    for entry in fds where entry.revents != 0 {
      switch entry.fd {
      case signalFD: reasons.insert(.interrupted)
      case monitorFD: reasons.insert(.udev)
      case pressureFD: reasons.insert(.pressure)
      case kmsgFD: reasons.insert(.kernelLog)
      case let fd where eventFDs.contains(fd): reasons.insert(.balloonEvent)
      default: break
      }
    }
    return reasons
  }
}
