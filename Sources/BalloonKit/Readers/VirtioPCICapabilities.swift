/// One virtio vendor capability (`struct virtio_pci_cap`, uapi
/// `linux/virtio_pci.h`): where one of the device's structures lives, as a BAR
/// and an offset into it.
///
///     +0 cap_vndr (0x09)  +1 cap_next  +2 cap_len  +3 cfg_type
///     +4 bar  +5 id  +6..7 padding  +8 offset (le32)  +12 length (le32)
public struct VirtioPCICapability: Sendable, Equatable {
  /// `cfg_type` values (VIRTIO_PCI_CAP_*).
  public static let commonConfig: UInt8 = 1
  public static let notifyConfig: UInt8 = 2
  public static let isrConfig: UInt8 = 3
  public static let deviceConfig: UInt8 = 4
  public static let pciConfig: UInt8 = 5
  public static let sharedMemoryConfig: UInt8 = 8

  /// `cfg_type`: which structure (1 common, 2 notify, 3 ISR, 4 device, 5 PCI_CFG).
  public var cfgType: UInt8
  /// `bar`: the BAR index, 0–5 (the spec reserves other values).
  public var bar: UInt8
  /// `id`: tells apart several capabilities of one type (shared memory).
  public var id: UInt8
  /// `offset`: where the structure starts inside the BAR.
  public var offset: UInt32
  /// `length`: the structure's size in bytes.
  public var length: UInt32
  /// Where the capability sits in config space.
  public var position: Int
  /// `cap_len`: the capability's own size (16; 20 for PCI_CFG, 20 for notify).
  public var capLength: Int

  public init(
    cfgType: UInt8, bar: UInt8, id: UInt8, offset: UInt32, length: UInt32, position: Int,
    capLength: Int = 16
  ) {
    self.cfgType = cfgType
    self.bar = bar
    self.id = id
    self.offset = offset
    self.length = length
    self.position = position
    self.capLength = capLength
  }

  /// The spec's valid BAR indices; a driver ignores capabilities naming others.
  public var hasValidBAR: Bool { bar <= 5 }
}

/// Walks a PCI function's capability list (the standard 256-byte space) and
/// decodes its virtio vendor capabilities.
public enum VirtioPCICapabilities {
  /// The kernel's bound on a capability walk (PCI_FIND_CAP_TTL): the most
  /// distinct dword-aligned positions there are between 0x40 and 0xfc.
  public static let maxCapabilities = 48
  /// The standard header; capabilities start at or after it.
  public static let headerSize = 0x40
  /// Capabilities live in the first 256 bytes (extended ones are elsewhere).
  static let standardSize = 0x100

  static let vendorID: UInt8 = 0x09
  static let msixID: UInt8 = 0x11

  /// Every virtio vendor capability in `config` (the bytes of the `config`
  /// file from offset 0), in list order. Vendor capabilities shorter than 16
  /// bytes (`cap_len`) are not `virtio_pci_cap`s and are skipped; a list that
  /// loops, points into the header or past the bytes given, or whose virtio
  /// capability is cut off, throws. A function without a capability list
  /// (status bit 4 clear) has none.
  public static func parse(config: [UInt8]) throws(ProbeError) -> [VirtioPCICapability] {
    try walk(config: config).compactMap(virtio)
  }

  /// One entry of the capability list: its ID, position and its first bytes
  /// (up to 16, fewer at the end of the standard space).
  struct Entry: Equatable {
    var id: UInt8
    var position: Int
    var bytes: [UInt8]
  }

  /// The whole capability list of a config-space buffer.
  static func walk(config: [UInt8]) throws(ProbeError) -> [Entry] {
    guard config.count >= headerSize else {
      throw ProbeError(
        "config space is \(config.count) bytes, shorter than the \(headerSize)-byte header")
    }
    return try walk(header: Array(config[0..<headerSize])) { offset, count throws(ProbeError) in
      guard offset < config.count else { return [] }
      return Array(config[offset..<min(config.count, offset + count)])
    }
  }

  /// The capability list, fetching only the bytes it needs: the header, then
  /// the first 16 bytes (or fewer) of each capability. `fetch(offset, count)`
  /// returns up to `count` bytes, fewer at the end of readable config space.
  ///
  /// Reading only these bytes matters on a live device: a read that covers a
  /// PCI_CFG capability's `pci_cfg_data` (+16) makes the device read its BAR
  /// at whatever the window points to.
  static func walk(
    header: [UInt8], fetch: (_ offset: Int, _ count: Int) throws(ProbeError) -> [UInt8]
  ) throws(ProbeError) -> [Entry] {
    guard header.count >= headerSize, let status = VirtioPCIBytes.le16(header, at: 0x06) else {
      throw ProbeError(
        "config space is \(header.count) bytes, shorter than the \(headerSize)-byte header")
    }
    // PCI_STATUS_CAP_LIST: without it the pointer at 0x34 means nothing.
    guard status & 0x10 != 0 else { return [] }
    var entries: [Entry] = []
    var visited = Set<Int>()
    var position = Int(header[0x34] & 0xfc)
    while position != 0 {
      let at = VirtioPCIBytes.hex(position, width: 2)
      guard position >= headerSize else {
        throw ProbeError("capability pointer \(at) points into the 64-byte header")
      }
      guard visited.insert(position).inserted else {
        throw ProbeError("capability list loops back to \(at)")
      }
      guard entries.count < maxCapabilities else {
        throw ProbeError("capability list longer than \(maxCapabilities) entries")
      }
      let wanted = min(16, standardSize - position)
      var bytes = try fetch(position, wanted)
      if bytes.count > wanted { bytes.removeLast(bytes.count - wanted) }
      if bytes.isEmpty {
        // Without CAP_SYS_ADMIN the kernel returns only the header (64 bytes).
        if try fetch(headerSize, 1).isEmpty {
          throw ProbeError("config space is 64 bytes (needs root)")
        }
        throw ProbeError("capability at \(at) is beyond the end of config space")
      }
      guard bytes.count >= 2 else {
        throw ProbeError("capability at \(at) is cut off by the end of config space")
      }
      let id = bytes[0]
      // All ones: the function is gone (or the list is garbage). The kernel
      // stops its walk here too.
      if id == 0xff { break }
      // A vendor capability that claims 16 bytes or more (or whose cap_len is
      // itself cut off) but is not all there.
      if id == vendorID, bytes.count < 16, bytes.count < 3 || bytes[2] >= 16 {
        throw ProbeError(
          "virtio capability at \(at) is cut off by the end of config space "
            + "(\(bytes.count) of 16 bytes)")
      }
      if id == msixID, bytes.count < 4 {
        throw ProbeError("MSI-X capability at \(at) is cut off (\(bytes.count) of 12 bytes)")
      }
      entries.append(Entry(id: id, position: position, bytes: bytes))
      position = Int(bytes[1] & 0xfc)
    }
    return entries
  }

  /// The virtio capability an entry holds, nil for other capabilities and for
  /// vendor capabilities too short to be one.
  static func virtio(_ entry: Entry) -> VirtioPCICapability? {
    guard entry.id == vendorID, entry.bytes.count >= 16, entry.bytes[2] >= 16,
      let offset = VirtioPCIBytes.le32(entry.bytes, at: 8),
      let length = VirtioPCIBytes.le32(entry.bytes, at: 12)
    else { return nil }
    return VirtioPCICapability(
      cfgType: entry.bytes[3], bar: entry.bytes[4], id: entry.bytes[5], offset: offset,
      length: length, position: entry.position, capLength: Int(entry.bytes[2]))
  }

  /// Whether MSI-X is enabled (Message Control, +2, bit 15): nil when the
  /// function has no MSI-X capability.
  static func msixEnabled(_ entries: [Entry]) -> Bool? {
    guard let msix = entries.first(where: { $0.id == msixID }),
      let control = VirtioPCIBytes.le16(msix.bytes, at: 2)
    else { return nil }
    return control & 0x8000 != 0
  }
}
