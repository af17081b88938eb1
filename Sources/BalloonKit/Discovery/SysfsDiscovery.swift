import SystemPackage

/// Finds balloon devices by walking the sysfs tree below `root` (a snapshot,
/// a fixture, or `/`), without libudev. `UdevDiscovery` must give the same
/// answer on the same tree:
///
/// Each kind's driver (Drivers/) matches its own balloons, with the helpers
/// here: virtio by `/sys/bus/virtio/devices/*` whose `device` is `0x0005`,
/// VMware by `/sys/module/vmw_balloon`, Xen by
/// `/sys/devices/system/xen_memory/xen_memory0`, Hyper-V by
/// `/sys/bus/vmbus/devices/*` whose `class_id` is Dynamic Memory's.
///
/// Paths in the result are kernel paths (`/sys/devices/…`), links resolved
/// lexically, never below `root`. No balloon is `[]`. Sorted by kind
/// (`BalloonKind.allCases` order), then by name (plain string order).
public struct SysfsDiscovery: Sendable {
  public let root: Root

  public static let virtioDevices = "/sys/bus/virtio/devices"
  public static let virtioBalloonID: UInt64 = 5  // VIRTIO_ID_BALLOON
  public static let vmwModule = "/sys/module/vmw_balloon"
  public static let xenDevice = "/sys/devices/system/xen_memory/xen_memory0"
  public static let vmbusDevices = "/sys/bus/vmbus/devices"
  public static let hyperVClassID = "{525074dc-8985-46e2-8057-a307dc18a502}"

  public init(root: Root) {
    self.root = root
  }

  /// Each registered driver matches its own kind (Drivers/).
  public func discover() throws(SourceError) -> [BalloonDevice] {
    var found: [BalloonDevice] = []
    for driver in BalloonDrivers.all {
      found += try driver.discover(self)
    }
    return found.sorted(by: Self.order)
  }

  static func order(_ lhs: BalloonDevice, _ rhs: BalloonDevice) -> Bool {
    let left = BalloonKind.allCases.firstIndex(of: lhs.kind) ?? 0
    let right = BalloonKind.allCases.firstIndex(of: rhs.kind) ?? 0
    if left != right { return left < right }
    return lhs.name < rhs.name
  }

  // MARK: Helpers

  /// The kernel path of `directory/entry`: a bus entry is a relative link
  /// (`../../../devices/pci0000:00/0000:00:01.0/virtio0`), joined to the
  /// directory and normalized without following anything below `root`.
  public func resolve(directory: String, entry: String) -> String {
    let path = directory + "/" + entry
    guard let link = SystemFile.readLink(root.path(path)) else { return path }
    let target = FilePath(link)
    let joined = target.isAbsolute ? target : FilePath(directory).appending(target.components)
    return joined.lexicallyNormalized().string
  }

  /// The basename of the device's `driver` link; nil when unbound.
  public func driver(of sysPath: String) -> String? {
    guard let link = SystemFile.readLink(root.path(sysPath + "/driver")) else { return nil }
    return FilePath(link).lastComponent?.string
  }

  /// A sysfs attribute without its newline; nil when absent.
  public func attribute(_ kernelPath: String) throws(SourceError) -> String? {
    let file = root.path(kernelPath)
    guard let bytes = try SystemFile.read(file) else { return nil }
    return try KernelText.attribute(bytes, path: file.string)
  }
}
