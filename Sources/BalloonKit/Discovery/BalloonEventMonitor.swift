import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A uevent about a balloon: its device appeared, went away, or its driver
/// was bound or unbound; or a balloon module was loaded or unloaded.
public struct BalloonEvent: Sendable, Equatable {
  /// `add`, `remove`, `bind`, `unbind` or `change`.
  public var action: String
  /// `virtio`, `module`, `xen_memory` or `vmbus`.
  public var subsystem: String
  /// The sysname: `virtio0`, `vmw_balloon`, `xen_memory0`, a vmbus GUID.
  public var name: String
  /// The driver the event names (set on `bind`, and on other events while a
  /// driver is bound); nil otherwise and for modules.
  public var driver: String?

  public init(action: String, subsystem: String, name: String, driver: String?) {
    self.action = action
    self.subsystem = subsystem
    self.name = name
    self.driver = driver
  }
}

/// Watches udev for balloon hotplug, for the daemon's poll loop: `poll()`
/// `fileDescriptor` for `POLLIN`, then call `drain()`, and re-run discovery
/// when it returns events (or when `eventsLost` is set).
///
/// It listens to udevd's netlink group when udevd runs (`/run/udev/control`
/// exists), else to the kernel's (an initramfs, a container, the development
/// machines). Both carry the same uevents; the kernel group has them before
/// udev rules ran.
public final class BalloonEventMonitor {
  /// The drivers that say which uevents are theirs (every built-in kind).
  static var matchers: [any UdevMatching] {
    BalloonDrivers.all.compactMap { $0 as? any UdevMatching }
  }
  /// The subsystems that carry balloon events, each once.
  static var subsystems: [String] {
    var seen: [String] = []
    for subsystem in matchers.flatMap(\.eventSubsystems) where !seen.contains(subsystem) {
      seen.append(subsystem)
    }
    return seen
  }
  static let actions: Set<String> = ["add", "remove", "bind", "unbind", "change"]
  /// At most this many events per `drain()`, so a flood cannot starve the
  /// daemon; the rest stays queued and `poll()` reports it again.
  static let drainLimit = 1024

  private let monitor: UdevMonitor

  /// Which netlink group the monitor listens to.
  public var source: UdevMonitor.Source { monitor.source }

  /// Set by `drain()` when the socket's receive buffer overflowed and events
  /// were lost since the previous `drain()`: re-run discovery.
  public private(set) var eventsLost = false

  /// Listens to udevd when it runs, else to the kernel.
  public convenience init() throws(SourceError) {
    let udevd = SystemFile.exists(FilePath("/run/udev/control"))
    try self.init(source: udevd ? .udev : .kernel)
  }

  public init(source: UdevMonitor.Source) throws(SourceError) {
    let monitor = try Udev().monitor(source: source)
    for subsystem in Self.subsystems { try monitor.filter(subsystem: subsystem) }
    try monitor.enableReceiving()
    self.monitor = monitor
  }

  /// The monitor's socket, for `poll()` (non-blocking; owned by the monitor).
  public var fileDescriptor: Int32 { monitor.fd }

  /// Reads every pending event without blocking and returns the ones about
  /// balloons, oldest first.
  public func drain() -> [BalloonEvent] {
    var events: [BalloonEvent] = []
    eventsLost = false
    for _ in 0..<Self.drainLimit {
      do {
        guard let device = try monitor.receive() else { break }
        if let event = Self.event(of: device) { events.append(event) }
      } catch {
        // ENOBUFS: the receive buffer overflowed; the next receive continues
        // with the events still queued. Any other error: stop for this
        // round, the next poll() tries again.
        if case .unreadable(let code) = error.problem, code == .noBufferSpace {
          eventsLost = true
          continue
        }
        break
      }
    }
    return events
  }

  // MARK: Filtering

  static func event(of device: UdevDevice) -> BalloonEvent? {
    guard let action = device.action, let subsystem = device.subsystem else { return nil }
    return event(
      action: action, subsystem: subsystem, name: device.sysname, driver: device.driver,
      modalias: device.property("MODALIAS"), sysattr: device.sysattr)
  }

  /// The balloon event for a uevent, or nil when it is about something else.
  /// The device's identity comes from the event's `MODALIAS` when it has one
  /// (a removed device has no sysfs attributes left), else from sysfs.
  static func event(
    action: String, subsystem: String, name: String, driver: String?, modalias: String?,
    sysattr: (String) -> String?
  ) -> BalloonEvent? {
    guard actions.contains(action) else { return nil }
    // Each kind's driver judges its own events (Drivers/).
    let relevant = matchers.contains {
      $0.eventSubsystems.contains(subsystem)
        && $0.isBalloonEvent(
          subsystem: subsystem, name: name, modalias: modalias, sysattr: sysattr)
    }
    guard relevant else { return nil }
    return BalloonEvent(action: action, subsystem: subsystem, name: name, driver: driver)
  }
}
