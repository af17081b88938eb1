import Synchronization

/// Reads a virtio balloon's `num_pages` and `actual` from userspace through the
/// PCI function's config space, for a root that can write it.
///
/// **Modern devices** (VERSION_1; 1af4:1045, or a transitional 1af4:1002 with
/// modern capabilities): the device config lives in a memory BAR that sysfs
/// cannot `read` and that `mmap` refuses while virtio-pci is bound. The
/// `VIRTIO_PCI_CAP_PCI_CFG` capability is a window onto any BAR through config
/// space: write `bar` (u8 at cap+4), `offset` (le32 at cap+8) and `length` = 4
/// (le32 at cap+12), read the registers back, then read `pci_cfg_data` (le32 at
/// cap+16). Once for `num_pages` (device config + 0), once for `actual` (+4).
/// Those three registers are the only bytes ever written; nothing is restored,
/// so the window is left pointing at `actual`, which reads without side
/// effects. The writes need root and are refused under kernel lockdown.
///
/// **Legacy fallback** (transitional 1af4:1002 only, when the window cannot be
/// used: no modern capabilities, or writes refused): the config follows the
/// legacy header in I/O BAR0, at 20, or 24 while MSI-X is enabled. It is read
/// with two 4-byte `pread`s of `resource0` and nothing is written (lockdown
/// allows I/O BAR reads). Never offset 19, the read-to-clear ISR.
///
/// The probe refuses a snapshot root: a `--root` tree is never written.
public struct VirtioPCIWindowProbe: VirtioConfigProbe {
  typealias ConfigSpaceFactory = @Sendable (String) throws(ProbeError) -> any PCIConfigSpace
  typealias IOBarFactory = @Sendable (String) throws(ProbeError) -> any PCIIOBarReader

  static let virtioVendor: UInt16 = 0x1af4
  static let modernBalloonDevice: UInt16 = 0x1045
  static let transitionalBalloonDevice: UInt16 = 0x1002
  static let balloonSubsystemDevice: UInt16 = 0x0005

  public let root: Root
  let openConfigSpace: ConfigSpaceFactory
  let openLegacyIOBar: IOBarFactory
  /// What each function's first full read learnt: its window and device
  /// config, so later reads skip the header and the capability walk.
  let layouts = VirtioPCILayouts()

  public init(root: Root) {
    self.root = root
    self.openConfigSpace = { (address: String) throws(ProbeError) -> any PCIConfigSpace in
      try SysfsPCIConfigSpace(root: root, pciAddress: address)
    }
    self.openLegacyIOBar = { (address: String) throws(ProbeError) -> any PCIIOBarReader in
      try SysfsPCIIOBar(root: root, pciAddress: address, bar: 0)
    }
  }

  /// Tests: every config-space and I/O BAR access goes through these.
  init(
    root: Root, openConfigSpace: @escaping ConfigSpaceFactory,
    openLegacyIOBar: @escaping IOBarFactory
  ) {
    self.root = root
    self.openConfigSpace = openConfigSpace
    self.openLegacyIOBar = openLegacyIOBar
  }

  public func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig {
    guard root.isLive else {
      throw ProbeError("the PCI config window needs a live device, not a snapshot")
    }
    guard let address = SysfsPCIConfigSpace.normalizedAddress(pciAddress) else {
      throw ProbeError(SysfsPCIConfigSpace.invalidAddressReason(pciAddress))
    }
    let space = try openConfigSpace(address)
    if let known = layouts[address] {
      // Still the function it was learnt from: read through the window it
      // had. Anything else (another function at this address, a window that
      // no longer keeps its registers, a failed access) forgets it, and the
      // full read below says what is wrong.
      if (try? VirtioPCILayouts.matches(space, known)) == true,
        let config = try? Self.readPair(space, device: known.device, window: known.window)
      {
        return config
      }
      layouts[address] = nil
    }
    let header = try space.read(offset: 0, count: VirtioPCICapabilities.headerSize)
    let transitional = try Self.checkIdentity(header: header, address: address)
    let entries = try VirtioPCICapabilities.walk(header: header) {
      offset, count throws(ProbeError) in
      try space.read(offset: offset, count: count)
    }
    let modernFailure: ProbeError
    do {
      let (device, window) = try Self.windowLayout(
        entries.compactMap(VirtioPCICapabilities.virtio))
      let config = try Self.readPair(space, device: device, window: window)
      layouts[address] = VirtioPCILayouts.Layout(
        identity: VirtioPCILayouts.identity(header: header), device: device, window: window)
      return config
    } catch {
      modernFailure = error
    }
    guard transitional else { throw modernFailure }
    do {
      return try readLegacy(address: address, header: header, entries: entries)
    } catch {
      throw ProbeError("\(modernFailure.reason); legacy I/O BAR0: \(error.reason)")
    }
  }

  /// Throws unless the header is a virtio balloon's; returns whether it is a
  /// transitional (legacy-capable) function.
  static func checkIdentity(header: [UInt8], address: String) throws(ProbeError) -> Bool {
    guard header.count >= VirtioPCICapabilities.headerSize,
      let vendor = VirtioPCIBytes.le16(header, at: 0x00),
      let device = VirtioPCIBytes.le16(header, at: 0x02),
      let subsystem = VirtioPCIBytes.le16(header, at: 0x2e)
    else {
      throw ProbeError(
        "config space is \(header.count) bytes, shorter than the "
          + "\(VirtioPCICapabilities.headerSize)-byte header")
    }
    if vendor == 0xffff && device == 0xffff {
      throw ProbeError("PCI function \(address) does not respond (config space reads all ones)")
    }
    let ids =
      "vendor \(VirtioPCIBytes.hex(vendor, width: 4)) device \(VirtioPCIBytes.hex(device, width: 4))"
    guard vendor == virtioVendor else {
      throw ProbeError("not a virtio balloon PCI function (\(ids))")
    }
    if device == modernBalloonDevice { return false }
    if device == transitionalBalloonDevice {
      guard subsystem == balloonSubsystemDevice else {
        throw ProbeError(
          "not a virtio balloon PCI function (\(ids) subsystem device "
            + "\(VirtioPCIBytes.hex(subsystem, width: 4)))")
      }
      return true
    }
    throw ProbeError("not a virtio balloon PCI function (\(ids))")
  }

  /// The modern route: the first device-config capability with a valid BAR,
  /// read through the first PCI_CFG capability (the spec's "first of each type").
  static func readThroughWindow(
    _ space: any PCIConfigSpace, capabilities: [VirtioPCICapability]
  ) throws(ProbeError) -> VirtioBalloonConfig {
    let (device, window) = try windowLayout(capabilities)
    return try readPair(space, device: device, window: window)
  }

  /// The modern route's two capabilities, checked: (device config, PCI_CFG window).
  static func windowLayout(_ capabilities: [VirtioPCICapability]) throws(ProbeError) -> (
    device: VirtioPCICapability, window: VirtioPCICapability
  ) {
    guard !capabilities.isEmpty else {
      throw ProbeError("no virtio capabilities (not a modern virtio PCI function)")
    }
    guard
      let device = capabilities.first(where: {
        $0.cfgType == VirtioPCICapability.deviceConfig && $0.hasValidBAR
      })
    else { throw ProbeError("no virtio device-config capability") }
    guard let window = capabilities.first(where: { $0.cfgType == VirtioPCICapability.pciConfig })
    else { throw ProbeError("no virtio PCI_CFG capability") }
    let devicePosition = VirtioPCIBytes.hex(device.position, width: 2)
    guard device.length >= 8 else {
      throw ProbeError(
        "virtio device-config capability at \(devicePosition) is \(device.length) bytes, "
          + "too short for num_pages and actual")
    }
    guard device.offset <= UInt32.max - 8 else {
      throw ProbeError(
        "virtio device-config capability at \(devicePosition) has offset "
          + "\(VirtioPCIBytes.hex(device.offset, width: 8)) at the end of the address space")
    }
    let windowPosition = VirtioPCIBytes.hex(window.position, width: 2)
    guard window.capLength >= 20, window.position + 20 <= 0x100 else {
      throw ProbeError(
        "virtio PCI_CFG capability at \(windowPosition) is \(window.capLength) bytes, "
          + "needs 20 (with pci_cfg_data)")
    }
    return (device, window)
  }

  /// num_pages and actual through the window.
  static func readPair(
    _ space: any PCIConfigSpace, device: VirtioPCICapability, window: VirtioPCICapability
  ) throws(ProbeError) -> VirtioBalloonConfig {
    let numPages = try readWindow(
      space, at: window.position, bar: device.bar, offset: device.offset)
    let actual = try readWindow(
      space, at: window.position, bar: device.bar, offset: device.offset + 4)
    return VirtioBalloonConfig(numPages: numPages, actual: actual)
  }

  /// One le32 through the PCI_CFG window at config offset `cap`.
  static func readWindow(
    _ space: any PCIConfigSpace, at cap: Int, bar: UInt8, offset: UInt32
  ) throws(ProbeError) -> UInt32 {
    try space.write(offset: cap + 4, bytes: [bar])
    try space.write(offset: cap + 8, bytes: VirtioPCIBytes.bytes(le32: offset))
    try space.write(offset: cap + 12, bytes: VirtioPCIBytes.bytes(le32: 4))
    // Read back: a device (or hypervisor) that drops the writes would
    // otherwise hand us whatever the window pointed at before.
    let back = try space.read(offset: cap + 4, count: 12)
    let position = VirtioPCIBytes.hex(cap, width: 2)
    guard back.count == 12, back[0] == bar, VirtioPCIBytes.le32(back, at: 4) == offset,
      VirtioPCIBytes.le32(back, at: 8) == 4
    else {
      throw ProbeError(
        "PCI_CFG window at \(position) did not keep bar \(bar) offset "
          + "\(VirtioPCIBytes.hex(offset, width: 4)) length 4 (reads back "
          + "\(back.map { VirtioPCIBytes.hex($0, width: 2) }.joined(separator: " ")))")
    }
    let data = try space.read(offset: cap + 16, count: 4)
    guard data.count == 4, let value = VirtioPCIBytes.le32(data, at: 0) else {
      throw ProbeError("PCI_CFG window at \(position) returned \(data.count) of 4 data bytes")
    }
    return value
  }

  /// The legacy route: I/O BAR0, config after the 20-byte legacy header plus
  /// the 4 bytes of MSI-X vectors when MSI-X is enabled.
  func readLegacy(address: String, header: [UInt8], entries: [VirtioPCICapabilities.Entry])
    throws(ProbeError) -> VirtioBalloonConfig
  {
    guard let bar0 = VirtioPCIBytes.le32(header, at: 0x10), bar0 & 1 == 1 else {
      throw ProbeError("BAR0 is not an I/O BAR")
    }
    let base = VirtioPCICapabilities.msixEnabled(entries) == true ? 24 : 20
    let bar = try openLegacyIOBar(address)
    let numPages = try Self.nativeU32(bar.read(offset: base, count: 4))
    let actual = try Self.nativeU32(bar.read(offset: base + 4, count: 4))
    return VirtioBalloonConfig(numPages: numPages, actual: actual)
  }

  /// A 4-byte `resource0` read holds `inl()`'s value in CPU byte order (the
  /// kernel stores the u32), and `inl()` reads the little-endian field as is.
  static func nativeU32(_ bytes: [UInt8]) throws(ProbeError) -> UInt32 {
    guard bytes.count == 4 else {
      throw ProbeError("short read of the legacy device config (\(bytes.count) of 4 bytes)")
    }
    return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
  }
}

/// The layout the probe learnt per PCI function (by address). A function's
/// capability list is fixed by its device, and on a VM every config-space
/// access traps to the hypervisor: the header and the walk are about 40
/// accesses, the two window reads 14 (docs/kernel-interfaces.md §2.6). So
/// the walk runs once per function; each later read first checks, in 7
/// accesses, that the function is still the one it was learnt from.
final class VirtioPCILayouts: Sendable {
  struct Layout: Sendable, Equatable {
    /// Config bytes 0x00-0x03 (vendor, device) and 0x2c-0x2f (subsystem IDs).
    var identity: [UInt8]
    var device: VirtioPCICapability
    var window: VirtioPCICapability
  }

  private let known = Mutex<[String: Layout]>([:])

  subscript(address: String) -> Layout? {
    get { known.withLock { $0[address] } }
    set { known.withLock { $0[address] = newValue } }
  }

  static func identity(header: [UInt8]) -> [UInt8] {
    Array(header[0x00..<0x04]) + Array(header[0x2c..<0x30])
  }

  /// Whether `space` is still the function `layout` was learnt from: the
  /// same IDs, the same device-config capability at its place, and a
  /// PCI_CFG capability of the same size where the window was (its
  /// registers, +4 to +15, are the window's and change with every read).
  static func matches(_ space: any PCIConfigSpace, _ layout: Layout) throws(ProbeError) -> Bool {
    let ids = try space.read(offset: 0x00, count: 4) + space.read(offset: 0x2c, count: 4)
    guard ids == layout.identity else { return false }
    let device = try space.read(offset: layout.device.position, count: 16)
    let entry = VirtioPCICapabilities.Entry(
      id: device.first ?? 0, position: layout.device.position, bytes: device)
    guard VirtioPCICapabilities.virtio(entry) == layout.device else { return false }
    let window = try space.read(offset: layout.window.position, count: 4)
    return window.count == 4 && window[0] == VirtioPCICapabilities.vendorID
      && Int(window[2]) == layout.window.capLength
      && window[3] == VirtioPCICapability.pciConfig
  }
}
