import Synchronization
import SystemPackage

@testable import BalloonKit

#if canImport(Glibc)
  import Glibc
#endif

/// An in-memory virtio PCI function: 256 bytes of config space, BAR contents,
/// and the VIRTIO_PCI_CAP_PCI_CFG window as QEMU implements it
/// (hw/virtio/virtio-pci.c, virtio_read_config / virtio_write_config): a
/// config read that covers `pci_cfg_data` first copies `length` (1, 2 or 4)
/// bytes from BAR[`bar`] + `offset` into it; a write that covers it writes them
/// to the BAR. Only the window registers (cap+4, cap+8..+19) are writable, as
/// QEMU's wmask makes them; every other byte is read-only.
///
/// Every access is recorded, refused writes too.
final class SimulatedVirtioPCIDevice: PCIConfigSpace, Sendable {
  struct Access: Equatable, CustomStringConvertible {
    var offset: Int
    var count: Int
    var description: String { "\(VirtioPCIBytes.hex(offset, width: 2))+\(count)" }
  }
  struct Write: Equatable, CustomStringConvertible {
    var offset: Int
    var bytes: [UInt8]
    var description: String { "\(VirtioPCIBytes.hex(offset, width: 2))<-\(bytes)" }
  }
  struct BarAccess: Equatable {
    var bar: Int
    var offset: Int
    var count: Int
  }
  struct State {
    var config: [UInt8]
    var bars: [Int: [UInt8]]
    var windowCap: Int?
    /// What a reader gets before end of file: 256 for root, 64 without
    /// CAP_SYS_ADMIN.
    var readableSize = 256
    /// Thrown by every write (lockdown: EPERM at pwrite time).
    var writeError: ProbeError?
    /// A device whose window registers ignore writes.
    var dropsWrites = false
    var reads: [Access] = []
    var attemptedWrites: [Write] = []
    var barReads: [BarAccess] = []
    var barWrites: [BarAccess] = []
  }

  let state: Mutex<State>

  init(config: [UInt8], bars: [Int: [UInt8]], windowCap: Int?) {
    state = Mutex(State(config: config, bars: bars, windowCap: windowCap))
  }

  convenience init(_ layout: VirtioPCILayout) {
    self.init(config: layout.config, bars: layout.bars, windowCap: layout.windowCap)
  }

  func update(_ body: (inout State) -> Void) { state.withLock { body(&$0) } }
  var snapshot: State { state.withLock { $0 } }
  var config: [UInt8] { snapshot.config }
  var reads: [Access] { snapshot.reads }
  var writes: [Write] { snapshot.attemptedWrites }
  var barReads: [BarAccess] { snapshot.barReads }
  var barWrites: [BarAccess] { snapshot.barWrites }

  func read(offset: Int, count: Int) throws(ProbeError) -> [UInt8] {
    state.withLock { state in
      state.reads.append(Access(offset: offset, count: count))
      let end = min(offset + count, state.readableSize, state.config.count)
      guard offset >= 0, offset < end else { return [] }
      if let cap = state.windowCap, offset < cap + 20, end > cap + 16 {
        let bar = Int(state.config[cap + 4])
        let barOffset = Int(VirtioPCIBytes.le32(state.config, at: cap + 8) ?? 0)
        let length = Int(VirtioPCIBytes.le32(state.config, at: cap + 12) ?? 0)
        if [1, 2, 4].contains(length), let contents = state.bars[bar],
          barOffset + length <= contents.count
        {
          state.barReads.append(BarAccess(bar: bar, offset: barOffset, count: length))
          for index in 0..<length { state.config[cap + 16 + index] = contents[barOffset + index] }
        }
      }
      return Array(state.config[offset..<end])
    }
  }

  func write(offset: Int, bytes: [UInt8]) throws(ProbeError) {
    try state.withLock { state throws(ProbeError) in
      state.attemptedWrites.append(Write(offset: offset, bytes: bytes))
      if let error = state.writeError { throw error }
      if state.dropsWrites { return }
      for (index, byte) in bytes.enumerated() {
        let at = offset + index
        guard let cap = state.windowCap, at == cap + 4 || (cap + 8..<cap + 20).contains(at) else {
          continue  // read-only
        }
        state.config[at] = byte
      }
      if let cap = state.windowCap, offset < cap + 20, offset + bytes.count > cap + 16 {
        let bar = Int(state.config[cap + 4])
        let barOffset = Int(VirtioPCIBytes.le32(state.config, at: cap + 8) ?? 0)
        let length = Int(VirtioPCIBytes.le32(state.config, at: cap + 12) ?? 0)
        state.barWrites.append(BarAccess(bar: bar, offset: barOffset, count: length))
        if [1, 2, 4].contains(length), var contents = state.bars[bar],
          barOffset + length <= contents.count
        {
          for index in 0..<length { contents[barOffset + index] = state.config[cap + 16 + index] }
          state.bars[bar] = contents
        }
      }
    }
  }
}

/// A legacy I/O BAR0 (`resource0`): the 20-byte legacy header, 4 bytes of
/// MSI-X vectors when enabled, then the device config. Records every read.
final class SimulatedLegacyIOBar: PCIIOBarReader, Sendable {
  private let state: Mutex<(bytes: [UInt8], reads: [SimulatedVirtioPCIDevice.Access])>

  init(numPages: UInt32, actual: UInt32, msixEnabled: Bool) {
    var bytes = [UInt8](repeating: 0, count: 64)
    bytes[18] = 0x0f  // device status: DRIVER_OK and friends
    bytes[19] = 0x01  // ISR: must never be read (read-to-clear)
    if msixEnabled {
      bytes[20..<24] = [0x00, 0x00, 0xff, 0xff]  // config vector 0, queue vector NO_VECTOR
    }
    let base = msixEnabled ? 24 : 20
    bytes.replaceSubrange(base..<base + 4, with: VirtioPCIBytes.bytes(le32: numPages))
    bytes.replaceSubrange(base + 4..<base + 8, with: VirtioPCIBytes.bytes(le32: actual))
    state = Mutex((bytes, []))
  }

  var reads: [SimulatedVirtioPCIDevice.Access] { state.withLock { $0.reads } }

  func read(offset: Int, count: Int) throws(ProbeError) -> [UInt8] {
    try state.withLock { state throws(ProbeError) in
      state.reads.append(.init(offset: offset, count: count))
      guard [1, 2, 4].contains(count), offset >= 0, offset + count <= state.bytes.count else {
        throw ProbeError("simulated resource0: bad read \(count)@\(offset)")
      }
      return Array(state.bytes[offset..<offset + count])
    }
  }
}

/// Counts calls to a factory (to prove the probe never opened anything).
final class VirtioPCICallCounter: Sendable {
  private let count = Mutex(0)
  private let addresses = Mutex<[String]>([])
  func record(_ address: String) {
    count.withLock { $0 += 1 }
    addresses.withLock { $0.append(address) }
  }
  var calls: Int { count.withLock { $0 } }
  var seen: [String] { addresses.withLock { $0 } }
}

/// Config-space images of real virtio balloon functions.
struct VirtioPCILayout {
  var config: [UInt8]
  var bars: [Int: [UInt8]]
  var windowCap: Int?

  static let sentinel: UInt32 = 0xdead_beef

  /// A type-0 header: IDs, status (bit 4 = capability list), the capability
  /// pointer, BARs.
  static func header(
    device: UInt16, subsystemDevice: UInt16, capabilityPointer: UInt8?, bars: [Int: UInt32]
  ) -> [UInt8] {
    var config = [UInt8](repeating: 0, count: 256)
    put16(&config, 0x00, 0x1af4)
    put16(&config, 0x02, device)
    put16(&config, 0x04, 0x0507)  // command: I/O, memory, bus master
    put16(&config, 0x06, capabilityPointer == nil ? 0x0000 : 0x0010)
    config[0x08] = device == 0x1045 ? 0x01 : 0x00  // revision
    config[0x0a] = 0xff  // class: misc (QEMU uses 0x00ff)
    for (bar, value) in bars { put32(&config, 0x10 + 4 * bar, value) }
    put16(&config, 0x2c, 0x1af4)
    put16(&config, 0x2e, subsystemDevice)
    config[0x34] = capabilityPointer ?? 0
    config[0x3c] = 0x0b  // interrupt line
    config[0x3d] = 0x01  // INTA
    return config
  }

  static func putVirtioCap(
    _ config: inout [UInt8], at position: Int, next: Int, cfgType: UInt8, bar: UInt8 = 0,
    offset: UInt32 = 0, length: UInt32 = 0, capLength: UInt8 = 16
  ) {
    config[position] = 0x09
    config[position + 1] = UInt8(next)
    config[position + 2] = capLength
    config[position + 3] = cfgType
    config[position + 4] = bar
    config[position + 5] = 0
    put32(&config, position + 8, offset)
    put32(&config, position + 12, length)
    // notify_off_multiplier
    if cfgType == 2 && capLength >= 20 { put32(&config, position + 16, 4) }
  }

  /// MSI-X (ID 0x11): Message Control at +2, bit 15 = enable, table size − 1.
  static func putMSIX(_ config: inout [UInt8], at position: Int, next: Int, enabled: Bool) {
    config[position] = 0x11
    config[position + 1] = UInt8(next)
    put16(&config, position + 2, (enabled ? 0x8000 : 0) | 0x0002)
    put32(&config, position + 4, 0x0000_0001)  // table in BAR1
    put32(&config, position + 8, 0x0000_0801)  // PBA in BAR1
  }

  /// BAR contents with `num_pages`/`actual` at `deviceOffset`, and sentinels
  /// on either side so an off-by-4 shows.
  static func bar(size: Int, deviceOffset: Int, numPages: UInt32, actual: UInt32) -> [UInt8] {
    var bytes = [UInt8](repeating: 0x5a, count: size)
    put32(&bytes, deviceOffset - 4, sentinel)
    put32(&bytes, deviceOffset, numPages)
    put32(&bytes, deviceOffset + 4, actual)
    put32(&bytes, deviceOffset + 8, sentinel)  // free_page_hint_cmd_id
    return bytes
  }

  /// QEMU's virtio-balloon-pci (docs/kernel-interfaces.md §2.6 item 5): vendor
  /// capabilities at 0x84 (PCI_CFG), 0x70 (notify, BAR4+0x3000), 0x60 (device,
  /// BAR4+0x2000, 0x1000 bytes), 0x50 (ISR, BAR4+0x1000), 0x40 (common,
  /// BAR4+0); BAR4 is a 64-bit memory BAR of 16 KiB. `transitional` is the
  /// `-machine pc` default: 1af4:1002 with subsystem 5 and an I/O BAR0.
  static func qemu(numPages: UInt32, actual: UInt32, transitional: Bool = false) -> VirtioPCILayout
  {
    var bars: [Int: UInt32] = [1: 0xfebd_1000, 4: 0xfe00_000c, 5: 0]
    if transitional { bars[0] = 0x0000_c041 }
    var config = header(
      device: transitional ? 0x1002 : 0x1045, subsystemDevice: transitional ? 0x0005 : 0x1100,
      capabilityPointer: 0x84, bars: bars)
    putVirtioCap(&config, at: 0x84, next: 0x70, cfgType: 5, capLength: 20)
    putVirtioCap(
      &config, at: 0x70, next: 0x60, cfgType: 2, bar: 4, offset: 0x3000, length: 0x1000,
      capLength: 20)
    putVirtioCap(&config, at: 0x60, next: 0x50, cfgType: 4, bar: 4, offset: 0x2000, length: 0x1000)
    putVirtioCap(&config, at: 0x50, next: 0x40, cfgType: 3, bar: 4, offset: 0x1000, length: 0x1000)
    putVirtioCap(&config, at: 0x40, next: 0x00, cfgType: 1, bar: 4, offset: 0x0000, length: 0x1000)
    return VirtioPCILayout(
      config: config,
      bars: [4: bar(size: 0x4000, deviceOffset: 0x2000, numPages: numPages, actual: actual)],
      windowCap: 0x84)
  }

  /// The development machine's balloon (docs/kernel-interfaces.md §2.6 item
  /// 4): 1af4:1045, list from 0x40 (common at
  /// BAR0+0, 0x38 bytes), ISR at BAR0+0x2000, DEVICE at BAR0+0x4000 (0x1000
  /// bytes), NOTIFY at BAR0+0x6000, PCI_CFG at 0x84, MSI-X at 0x98. The
  /// positions of ISR, DEVICE and NOTIFY were not recorded; 0x50, 0x60 and 0x70
  /// are the only ones that fit between 0x40 and 0x84.
  static func devMachine(numPages: UInt32, actual: UInt32, msixEnabled: Bool = true)
    -> VirtioPCILayout
  {
    var config = header(
      device: 0x1045, subsystemDevice: 0x1100, capabilityPointer: 0x40,
      bars: [0: 0xfe80_0004, 1: 0, 2: 0xfea0_0000])
    putVirtioCap(&config, at: 0x40, next: 0x50, cfgType: 1, bar: 0, offset: 0x0000, length: 0x38)
    putVirtioCap(&config, at: 0x50, next: 0x60, cfgType: 3, bar: 0, offset: 0x2000, length: 0x4)
    putVirtioCap(&config, at: 0x60, next: 0x70, cfgType: 4, bar: 0, offset: 0x4000, length: 0x1000)
    putVirtioCap(
      &config, at: 0x70, next: 0x84, cfgType: 2, bar: 0, offset: 0x6000, length: 0x1000,
      capLength: 20)
    putVirtioCap(&config, at: 0x84, next: 0x98, cfgType: 5, capLength: 20)
    putMSIX(&config, at: 0x98, next: 0x00, enabled: msixEnabled)
    return VirtioPCILayout(
      config: config,
      bars: [0: bar(size: 0x8000, deviceOffset: 0x4000, numPages: numPages, actual: actual)],
      windowCap: 0x84)
  }

  /// A legacy-only transitional balloon (1af4:1002, subsystem 5): I/O BAR0,
  /// no virtio vendor capabilities; an MSI-X capability at 0x40 unless `msix`
  /// is nil (then no capability list at all).
  static func legacyOnly(msixEnabled: Bool?) -> VirtioPCILayout {
    var config = header(
      device: 0x1002, subsystemDevice: 0x0005,
      capabilityPointer: msixEnabled == nil ? nil : 0x40,
      bars: [0: 0x0000_c041, 1: 0xfebd_1000])
    if let msixEnabled { putMSIX(&config, at: 0x40, next: 0x00, enabled: msixEnabled) }
    return VirtioPCILayout(config: config, bars: [:], windowCap: nil)
  }

  static func put16(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt16) {
    bytes[offset] = UInt8(truncatingIfNeeded: value)
    bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
  }

  static func put32(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
    bytes.replaceSubrange(offset..<offset + 4, with: VirtioPCIBytes.bytes(le32: value))
  }
}

/// A temporary directory laid out like `/`, removed by `remove()`.
final class VirtioPCITempRoot {
  let base: FilePath

  init() throws {
    var template = Array("/tmp/balloonctl-virtiopci-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buffer -> UnsafeMutablePointer<CChar>? in
      guard let start = buffer.baseAddress else { return nil }
      return mkdtemp(start)
    }
    guard let made else {
      throw Errno(rawValue: errno)
    }
    base = FilePath(String(cString: made))
  }

  var root: Root { .snapshot(base) }

  /// Writes `bytes` at the kernel path `absolute` below the root, creating
  /// directories. Returns the file's path.
  @discardableResult
  func write(_ absolute: String, _ bytes: [UInt8]) throws -> FilePath {
    let path = root.path(absolute)
    var directory = base
    for component in FilePath(absolute).components.dropLast() {
      directory.append(component)
      if mkdir(directory.string, 0o755) != 0 && errno != EEXIST { throw Errno(rawValue: errno) }
    }
    let fd = try FileDescriptor.open(
      path, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
    try fd.closeAfter { _ = try fd.writeAll(bytes) }
    return path
  }

  func contents(_ absolute: String) throws -> [UInt8] {
    try SystemFile.readRequired(root.path(absolute))
  }

  func remove() { Self.remove(base) }

  private static func remove(_ path: FilePath) {
    if let names = try? SystemFile.list(path) {
      for name in names { remove(path.appending(name)) }
      rmdir(path.string)
    } else {
      unlink(path.string)
    }
  }
}
