import SystemPackage

/// virtio-balloon (KVM/QEMU, Firecracker, cloud-hypervisor). Discovered as
/// `/sys/bus/virtio/devices/*` with `device` 0x0005; sized by meminfo
/// `Balloon:` or vmstat's balloon counters, its target only through the
/// PCI config probe. Lever: unbind virtio_balloon (the balloon deflates fully
/// and the host is told), bind to re-admit.
public struct VirtioDriver: BalloonDriver {
  public var kind: BalloonKind { .virtio }
  /// The config-change callback: the device's interrupt calls it once per
  /// new target the host writes, before the worker inflates.
  public var eventSymbols: [KernelSymbol] {
    [KernelSymbol("virtballoon_changed", module: "virtio_balloon")]
  }
  /// The host writes `num_pages` into config space before the interrupt
  /// that calls virtballoon_changed, and the PCI window reads config space
  /// itself (docs/kernel-interfaces.md §2.6, §10.1).
  public var targetCurrentAtEvent: Bool { true }
  /// Without the probe its size is meminfo's `Balloon:` or vmstat's
  /// counters and its target unknown; it is decided by Policy.releasable.
  public var steadyFromCounters: Bool { true }
  public init() {}

  public static let driverDirectory = "/sys/bus/virtio/drivers/virtio_balloon"

  public func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice] {
    guard let names = try SystemFile.list(sysfs.root.path(SysfsDiscovery.virtioDevices)) else {
      return []
    }
    var found: [BalloonDevice] = []
    for name in names {
      let sysPath = sysfs.resolve(directory: SysfsDiscovery.virtioDevices, entry: name)
      guard let id = try sysfs.attribute(sysPath + "/device") else { continue }
      guard let value = KernelText.hexadecimal(id) else {
        throw .malformed(
          sysfs.root.path(sysPath + "/device").string, "\"\(id.prefix(40))\" is not a 0x hex number"
        )
      }
      guard value == SysfsDiscovery.virtioBalloonID else { continue }
      var bits: [Int] = []
      if let text = try sysfs.attribute(sysPath + "/features") {
        guard let decoded = VirtioFeature.bits(fromSysfs: text) else {
          throw .malformed(
            sysfs.root.path(sysPath + "/features").string,
            "\"\(text.prefix(40))\" is not a string of 0 and 1")
        }
        bits = decoded
      }
      let parent = FilePath(sysPath).removingLastComponent()
      var pciAddress: String?
      if let subsystem = SystemFile.readLink(sysfs.root.path(parent.string + "/subsystem")),
        subsystem.hasSuffix("/bus/pci"), let last = parent.lastComponent
      {
        pciAddress = last.string
      }
      found.append(
        BalloonDevice(
          kind: .virtio, name: name, sysPath: sysPath, driver: sysfs.driver(of: sysPath),
          featureBits: bits, pciAddress: pciAddress))
    }
    return found
  }

  public func isValid(name: String) -> Bool { BalloonNames.numbered(name, after: "virtio") }

  public func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError)
    -> BalloonReading
  {
    try VirtioBalloonReader.read(
      device: device, root: context.root, meminfo: context.meminfo, vmstat: context.vmstat,
      probe: context.probe)
  }

  /// Without DEFLATE_ON_OOM the driver adjusts the managed page count; with
  /// it the pages look used and MemTotal stays.
  public func removesFromMemTotal(_ device: BalloonDevice) -> Bool { !device.deflateOnOOM }

  public var sizedByVmstat: Bool { true }

  public func sizedByCounters(_ reading: BalloonReading) -> Bool {
    reading.deviceActualBytes == nil
  }

  public func statusLines(_ reading: BalloonReading) -> [String] {
    [
      "  MemTotal  "
        + (reading.device.removesFromMemTotal
          ? "shrinks by the balloon (no DEFLATE_ON_OOM)"
          : "unchanged by the balloon (DEFLATE_ON_OOM: pages count as used)")
    ]
  }

  public func decide(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig
  ) -> (Decision, HoldState) {
    Policy.releasable(
      o, limit: limit, state: state, now: now, config: config,
      lever: .init(listedWhileHeld: true, releaseHidesTarget: false))
  }

  public func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool {
    SystemFile.exists(actuators.root.path(Self.driverDirectory + "/unbind"))
  }

  public func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)
  {
    switch decision.action {
    case .release:
      // ENODEV: already unbound.
      try actuators.write(
        device.name, to: Self.driverDirectory + "/unbind",
        alreadyDone: .operationNotSupportedByDevice)
    case .readmit:
      // EBUSY: already bound.
      try actuators.write(
        device.name, to: Self.driverDirectory + "/bind", alreadyDone: .resourceBusy)
    case .setTarget, .none, .alert:
      throw ActuatorError("virtio balloons have no \(decision.action.rawValue) lever")
    }
  }
}

extension BalloonDevice {
  /// virtio: the host enabled DEFLATE_ON_OOM (bit 2).
  public var deflateOnOOM: Bool {
    kind == .virtio && featureBits.contains(VirtioFeature.deflateOnOOM)
  }
}

/// The names discovery gives balloons, checked when read back from the state file.
enum BalloonNames {
  /// `<prefix><n>`: 1 to 10 digits, no leading zero.
  static func numbered(_ name: String, after prefix: String) -> Bool {
    guard name.hasPrefix(prefix) else { return false }
    let digits = name.utf8.dropFirst(prefix.utf8.count)
    return (1...10).contains(digits.count) && digits.allSatisfy { (0x30...0x39).contains($0) }
      && (digits.count == 1 || digits.first != 0x30)
  }
}

extension VirtioDriver: UdevMatching {
  /// The device, and the virtio_balloon module loading (its bind follows).
  var eventSubsystems: [String] { ["virtio", "module"] }

  func isBalloonEvent(
    subsystem: String, name: String, modalias: String?, sysattr: (String) -> String?
  ) -> Bool {
    guard subsystem == "virtio" else { return name == UdevBalloonIDs.virtioModule }
    if let modalias { return modalias.hasPrefix(UdevBalloonIDs.virtioModaliasPrefix) }
    return sysattr("device") == UdevBalloonIDs.virtioDeviceID
  }

  /// Subsystem `virtio` with `device` == `0x0005`.
  func discover(_ udev: Udev) throws(SourceError) -> [BalloonDevice] {
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
}
