/// Finds balloon devices on the running system through libudev. It must give
/// the same answer as `SysfsDiscovery` on the same tree (the tests check that
/// on every umockdev fixture); it exists because libudev is what a udev rule
/// or a udevd-managed system agrees with, and it shares its vocabulary with
/// `BalloonEventMonitor`.
///
/// Each built-in kind's driver matches its own balloons (`UdevMatching`,
/// in Drivers/).
///
/// No balloon is an empty array, not an error.
public struct UdevDiscovery: Sendable {
  public init() {}

  public func discover() throws(SourceError) -> [BalloonDevice] {
    let udev = try Udev()
    var found: [BalloonDevice] = []
    // Each driver matches its own kind (Drivers/).
    for driver in BalloonDrivers.all {
      if let matching = driver as? any UdevMatching { found += try matching.discover(udev) }
    }
    return found.sorted(by: UdevDiscovery.order)
  }

  /// By kind (`BalloonKind.allCases` order), then by name (plain string
  /// order), as `SysfsDiscovery` sorts.
  static func order(_ lhs: BalloonDevice, _ rhs: BalloonDevice) -> Bool {
    let left = BalloonKind.allCases.firstIndex(of: lhs.kind) ?? 0
    let right = BalloonKind.allCases.firstIndex(of: rhs.kind) ?? 0
    if left != right { return left < right }
    return lhs.name < rhs.name
  }
}

/// A driver that also matches its kind through libudev (the live system).
/// A driver without it is found only by `SysfsDiscovery`.
/// It also says which uevents concern its balloons, so the daemon's event
/// monitor (BalloonEventMonitor) listens for every kind without knowing any.
protocol UdevMatching {
  func discover(_ udev: Udev) throws(SourceError) -> [BalloonDevice]
  /// The uevent subsystems that carry its balloons' events.
  var eventSubsystems: [String] { get }
  /// Whether a uevent of one of `eventSubsystems` is about one of its
  /// balloons. A removed device has no sysfs attributes left, so the event's
  /// `MODALIAS` comes first where the kind has one.
  func isBalloonEvent(
    subsystem: String, name: String, modalias: String?, sysattr: (String) -> String?
  ) -> Bool
}

/// The identifiers discovery and the event monitor match on.
enum UdevBalloonIDs {
  /// sysfs `device` of a virtio balloon (`VIRTIO_ID_BALLOON`).
  static let virtioDeviceID = "0x0005"
  /// uevent `MODALIAS` prefix of a virtio balloon (`virtio:d%08Xv%08X`; the
  /// vendor differs between PCI and MMIO).
  static let virtioModaliasPrefix = "virtio:d00000005v"
  static let vmwModule = "vmw_balloon"
  static let virtioModule = "virtio_balloon"
  static let xenSubsystem = "xen_memory"
  static let xenDevice = "xen_memory0"
  static let xenDriver = "xen-balloon"
  /// sysfs `class_id` of the Hyper-V Dynamic Memory device.
  static let hyperVClassID = "{525074dc-8985-46e2-8057-a307dc18a502}"
  /// uevent `MODALIAS` of the same device (`vmbus:%*phN` of the GUID bytes).
  static let hyperVModalias = "vmbus:dc7450528589e2468057a307dc18a502"
}
