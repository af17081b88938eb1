/// Finds balloon devices on the running system through libudev. It must give
/// the same answer as `SysfsDiscovery` on the same tree (the tests check that
/// on every umockdev fixture); it exists because libudev is what a udev rule
/// or a udevd-managed system agrees with, and it shares its vocabulary with
/// `BalloonEventMonitor`.
///
/// * virtio: subsystem `virtio` with `device` == `0x0005`.
/// * VMware: the module `/sys/module/vmw_balloon` (it is not a bus device).
/// * Xen: `xen_memory0` in subsystem `xen_memory`; the built-in driver is
///   not bound to it, so the driver is always `xen-balloon`.
/// * Hyper-V: subsystem `vmbus` with the Dynamic Memory `class_id`.
///
/// No balloon is an empty array, not an error.
public struct UdevDiscovery: Sendable {
  public init() {}

  public func discover() throws(SourceError) -> [BalloonDevice] {
    let udev = try Udev()
    var found = try virtio(udev)
    if let device = try vmware(udev) { found.append(device) }
    if let device = try xen(udev) { found.append(device) }
    found += try hyperV(udev)
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

  // MARK: Kinds

  func virtio(_ udev: Udev) throws(SourceError) -> [BalloonDevice] {
    let enumerator = try udev.enumerator()
    try enumerator.match(subsystem: "virtio")
    try enumerator.match(sysattr: "device", value: UdevBalloonIDs.virtioDeviceID)
    var found: [BalloonDevice] = []
    for device in try enumerator.devices() {
      var bits: [Int] = []
      if let text = device.sysattr("features") {
        guard let decoded = VirtioFeature.bits(fromSysfs: text) else {
          throw .malformed(
            device.syspath + "/features", "\"\(text.prefix(40))\" is not a string of 0 and 1")
        }
        bits = decoded
      }
      var pciAddress: String?
      if let parent = device.parent, parent.subsystem == "pci" { pciAddress = parent.sysname }
      found.append(
        BalloonDevice(
          kind: .virtio, name: device.sysname, sysPath: device.syspath, driver: device.driver,
          featureBits: bits, pciAddress: pciAddress))
    }
    return found
  }

  func vmware(_ udev: Udev) throws(SourceError) -> BalloonDevice? {
    // libudev maps the pseudo-subsystem "module" to /sys/module/<name>.
    guard let module = try udev.device(subsystem: "module", sysname: UdevBalloonIDs.vmwModule)
    else { return nil }
    return BalloonDevice(
      kind: .vmware, name: module.sysname, sysPath: module.syspath,
      driver: UdevBalloonIDs.vmwModule)
  }

  func xen(_ udev: Udev) throws(SourceError) -> BalloonDevice? {
    guard
      let device = try udev.device(
        subsystem: UdevBalloonIDs.xenSubsystem, sysname: UdevBalloonIDs.xenDevice)
    else { return nil }
    return BalloonDevice(
      kind: .xen, name: device.sysname, sysPath: device.syspath, driver: UdevBalloonIDs.xenDriver)
  }

  func hyperV(_ udev: Udev) throws(SourceError) -> [BalloonDevice] {
    let enumerator = try udev.enumerator()
    try enumerator.match(subsystem: "vmbus")
    try enumerator.match(sysattr: "class_id", value: UdevBalloonIDs.hyperVClassID)
    return try enumerator.devices().map { device in
      BalloonDevice(
        kind: .hyperv, name: device.sysname, sysPath: device.syspath, driver: device.driver)
    }
  }
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
