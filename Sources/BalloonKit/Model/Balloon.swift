/// A kind of balloon, by its name in output and the state file. The kinds
/// are the registered drivers' (Drivers/): an open set, so a new kind is a
/// new driver file, not a new case to handle everywhere.
public struct BalloonKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: String

  /// A kind a registered driver handles; nil for any other name.
  public init?(rawValue: String) {
    guard BalloonDrivers.all.contains(where: { $0.kind.rawValue == rawValue }) else { return nil }
    self.rawValue = rawValue
  }

  /// A new kind's name, for its driver.
  public init(named name: String) { rawValue = name }

  public static let virtio = BalloonKind(named: "virtio")
  public static let vmware = BalloonKind(named: "vmware")
  public static let xen = BalloonKind(named: "xen")
  public static let hyperv = BalloonKind(named: "hyperv")

  /// The registered kinds, in discovery order.
  public static var allCases: [BalloonKind] { BalloonDrivers.all.map(\.kind) }

  public var driver: any BalloonDriver { BalloonDrivers.driver(for: self) }
  public var description: String { rawValue }
}

/// A balloon found by discovery: what it is and where it lives. Discovery
/// reads only identity (sysfs attributes, links); sizes come from the readers.
public struct BalloonDevice: Sendable, Equatable {
  public var kind: BalloonKind
  /// The sysfs name: `virtio0`, the vmbus instance GUID, `xen_memory0`, or
  /// `vmw_balloon` (the module: vmw_balloon is not a bus device).
  public var name: String
  /// The device's directory as the kernel names it, links resolved
  /// (`/sys/devices/pci0000:00/0000:00:01.0/virtio0`; `/sys/module/vmw_balloon`).
  /// Never below `--root`: join it with `Root.path(_:)` to read it.
  public var sysPath: String
  /// The bound driver (`virtio_balloon`, `hv_balloon`, `vmw_balloon` for a
  /// loaded module, `xen-balloon` for Xen's built-in driver), nil when unbound.
  public var driver: String?
  /// Negotiated virtio feature bits that are set (bit 0 is the first character
  /// of sysfs `features`). Empty for other kinds.
  public var featureBits: [Int]
  /// virtio over PCI: the parent PCI function (`0000:00:01.0`); nil for other
  /// transports and kinds. The config-space probe needs it.
  public var pciAddress: String?

  public init(
    kind: BalloonKind, name: String, sysPath: String, driver: String?,
    featureBits: [Int] = [], pciAddress: String? = nil
  ) {
    self.kind = kind
    self.name = name
    self.sysPath = sysPath
    self.driver = driver
    self.featureBits = featureBits
    self.pciAddress = pciAddress
  }

  public var bound: Bool { driver != nil }

  /// Feature names, decoded: virtio bits by their uapi names, unknown bits as
  /// `bit<N>` (vendor kernels add their own).
  public var features: [String] { featureBits.map(VirtioFeature.name(ofBit:)) }

  /// Whether the driver takes ballooned pages out of MemTotal (its kind's driver says).
  public var removesFromMemTotal: Bool { kind.driver.removesFromMemTotal(self) }
}

/// A quantity that is either known, with where it came from, or unknown, with
/// the reason (shown to the user as `target: unknown (<reason>)`).
public enum Sourced: Sendable, Equatable {
  case known(bytes: UInt64, source: String)
  case unknown(reason: String)

  public var bytes: UInt64? {
    if case .known(let bytes, _) = self { return bytes }
    return nil
  }
  public var source: String? {
    if case .known(_, let source) = self { return source }
    return nil
  }
  public var reason: String? {
    if case .unknown(let reason) = self { return reason }
    return nil
  }
}

/// One balloon's size now. `current` and `target` always mean the balloon's
/// own size (memory taken from the guest), whatever the driver reports.
public struct BalloonReading: Sendable, Equatable {
  public var device: BalloonDevice
  public var current: Sourced
  public var target: Sourced
  /// virtio: the device's `actual` field (config space), when the probe ran.
  /// Exact and immediate, where the vmstat gauge lags up to ~1 s.
  public var deviceActualBytes: UInt64?
  /// Extra capability names (vmw `used capabilities`), appended to features.
  public var extraFeatures: [String]
  /// virtio: the balloon_inflate − balloon_deflate events, when they exist.
  /// They are summed over CPUs at read time, so they move at once, where the
  /// `nr_balloon_pages` gauge is per-cpu batched and lags up to ~1 s.
  public var eventCountBytes: UInt64?

  public init(
    device: BalloonDevice, current: Sourced, target: Sourced, deviceActualBytes: UInt64? = nil,
    extraFeatures: [String] = []
  ) {
    self.device = device
    self.current = current
    self.target = target
    self.deviceActualBytes = deviceActualBytes
    self.extraFeatures = extraFeatures
  }

  public var features: [String] { device.features + extraFeatures }

  /// The size to decide on: the device's own `actual` when probed (exact),
  /// else the larger of the kernel's gauge and its event count, so a fast
  /// inflation is seen without the gauge's lag (and a deflation is believed
  /// only once both agree). `current` stays the documented source.
  public var effectiveCurrentBytes: UInt64? {
    if let deviceActualBytes { return deviceActualBytes }
    guard let events = eventCountBytes else { return current.bytes }
    return max(current.bytes ?? 0, events)
  }
}

/// virtio balloon and transport feature bits (uapi virtio_balloon.h, virtio_config.h).
public enum VirtioFeature {
  public static let deflateOnOOM = 2

  public static func name(ofBit bit: Int) -> String {
    switch bit {
    case 0: "MUST_TELL_HOST"
    case 1: "STATS_VQ"
    case 2: "DEFLATE_ON_OOM"
    case 3: "FREE_PAGE_HINT"
    case 4: "PAGE_POISON"
    case 5: "REPORTING"
    case 28: "RING_INDIRECT_DESC"
    case 29: "RING_EVENT_IDX"
    case 32: "VERSION_1"
    case 33: "ACCESS_PLATFORM"
    case 34: "RING_PACKED"
    case 35: "IN_ORDER"
    case 36: "ORDER_PLATFORM"
    case 37: "SR_IOV"
    case 38: "NOTIFICATION_DATA"
    case 39: "NOTIF_CONFIG_DATA"
    case 40: "RING_RESET"
    case 41: "ADMIN_VQ"
    default: "bit\(bit)"
    }
  }

  /// Decodes sysfs `features`: a string of '0'/'1', character i = bit i.
  /// Returns nil when the string holds anything else.
  public static func bits(fromSysfs text: String) -> [Int]? {
    var bits: [Int] = []
    for (index, character) in text.utf8.enumerated() {
      switch character {
      case 0x30: continue
      case 0x31: bits.append(index)
      default: return nil
      }
    }
    return bits
  }
}
