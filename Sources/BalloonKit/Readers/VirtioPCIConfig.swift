public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A PCI function's configuration space, as `/sys/bus/pci/devices/<bdf>/config`
/// exposes it: reads and writes at byte offsets.
///
/// `read` returns up to `count` bytes: fewer at the end of the readable space
/// (a reader without CAP_SYS_ADMIN sees only the first 64 bytes; the rest reads
/// as end of file). `write` writes all the bytes or throws.
public protocol PCIConfigSpace {
  func read(offset: Int, count: Int) throws(ProbeError) -> [UInt8]
  func write(offset: Int, bytes: [UInt8]) throws(ProbeError)
}

/// `<root>/sys/bus/pci/devices/<bdf>/config`, read with `pread` and written with
/// `pwrite`: each `write` is one `pwrite` of exactly its bytes, which the kernel
/// performs as byte/word/dword config accesses at those offsets only.
///
/// The file is opened read-only for the first read, and read-write only on the
/// first write. That open also takes an exclusive `flock` on the file, held
/// until `close()` (or deinit), so two balloonctl processes never interleave
/// their PCI_CFG window writes; other tools (setpci) do not take it.
///
/// Nothing here checks `Root.isLive`: on a snapshot the path is a plain file
/// below `--root`. The probe, not this class, refuses non-live roots.
public final class SysfsPCIConfigSpace: PCIConfigSpace {
  /// The `config` file, below the root.
  public let path: FilePath
  /// The PCI address as the kernel names it (lowercase).
  public let pciAddress: String

  private var readDescriptor: FileDescriptor?
  private var writeDescriptor: FileDescriptor?

  /// Larger than any PCI function's config space (4 KiB for PCIe).
  static let maximumSize = 4096
  /// How long a write waits for another balloonctl's window lock.
  static let lockAttempts = 200
  static let lockRetryMicroseconds: UInt32 = 1000

  /// Throws when `pciAddress` is not a PCI address (`dddd:bb:dd.f`, hex), so the
  /// path can never leave `/sys/bus/pci/devices`.
  public init(root: Root, pciAddress: String) throws(ProbeError) {
    guard let address = Self.normalizedAddress(pciAddress) else {
      throw ProbeError(Self.invalidAddressReason(pciAddress))
    }
    self.pciAddress = address
    self.path = root.path("/sys/bus/pci/devices/\(address)/config")
  }

  deinit { close() }

  /// Closes both descriptors (releasing the window lock).
  public func close() {
    try? readDescriptor?.close()
    readDescriptor = nil
    try? writeDescriptor?.close()
    writeDescriptor = nil
  }

  public func read(offset: Int, count: Int) throws(ProbeError) -> [UInt8] {
    guard offset >= 0, count >= 0, offset <= Self.maximumSize, count <= Self.maximumSize - offset
    else {
      throw ProbeError("\(path): read of \(count) bytes at \(offset) is outside config space")
    }
    let fd = try readableDescriptor()
    var bytes = [UInt8](repeating: 0, count: count)
    var total = 0
    while total < count {
      let got: Int
      do {
        got = try bytes.withUnsafeMutableBytes { buffer in
          try fd.read(
            fromAbsoluteOffset: Int64(offset + total),
            into: UnsafeMutableRawBufferPointer(rebasing: buffer[total...]),
            retryOnInterrupt: true)
        }
      } catch {
        throw ProbeError("\(path): cannot read: \(error)")
      }
      if got <= 0 { break }
      total += got
    }
    bytes.removeLast(count - total)
    return bytes
  }

  public func write(offset: Int, bytes: [UInt8]) throws(ProbeError) {
    guard offset >= 0, !bytes.isEmpty, offset <= Self.maximumSize,
      bytes.count <= Self.maximumSize - offset
    else {
      throw ProbeError(
        "\(path): write of \(bytes.count) bytes at \(offset) is outside config space")
    }
    let fd = try writableDescriptor()
    let written: Int
    do {
      written = try bytes.withUnsafeBytes { buffer in
        try fd.write(toAbsoluteOffset: Int64(offset), buffer, retryOnInterrupt: true)
      }
    } catch let error as Errno {
      throw Self.writeFailure(error, path: path)
    } catch {
      throw ProbeError("\(path): cannot write: \(error)")
    }
    guard written == bytes.count else {
      throw ProbeError(
        "\(path): short write at \(VirtioPCIBytes.hex(offset, width: 2)) "
          + "(\(written) of \(bytes.count) bytes)")
    }
  }

  private func readableDescriptor() throws(ProbeError) -> FileDescriptor {
    if let readDescriptor { return readDescriptor }
    let fd: FileDescriptor
    switch SystemFile.openRegular(path, flags: O_RDONLY) {
    case .opened(let opened): fd = opened
    case .absent: throw Self.openFailure(.noSuchFileOrDirectory, path: path, pciAddress: pciAddress)
    case .failed(let error): throw Self.openFailure(error, path: path, pciAddress: pciAddress)
    case .wrongType(let kind): throw Self.wrongType(kind, path: path)
    }
    readDescriptor = fd
    return fd
  }

  private func writableDescriptor() throws(ProbeError) -> FileDescriptor {
    if let writeDescriptor { return writeDescriptor }
    let fd: FileDescriptor
    switch SystemFile.openRegular(path, flags: O_RDWR) {
    case .opened(let opened): fd = opened
    case .absent: throw Self.openFailure(.noSuchFileOrDirectory, path: path, pciAddress: pciAddress)
    case .failed(let error):
      if error == .permissionDenied || error == .notPermitted {
        throw Self.writeFailure(error, path: path)
      }
      throw Self.openFailure(error, path: path, pciAddress: pciAddress)
    case .wrongType(let kind): throw Self.wrongType(kind, path: path)
    }
    var attempts = 0
    while flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
      let error = Errno(rawValue: errno)
      attempts += 1
      if error == .interrupted { continue }
      guard error == .wouldBlock, attempts < Self.lockAttempts else {
        try? fd.close()
        if error == .wouldBlock {
          throw ProbeError("\(path): PCI_CFG window busy (locked by another balloonctl)")
        }
        throw ProbeError("\(path): cannot lock: \(error)")
      }
      usleep(Self.lockRetryMicroseconds)
    }
    writeDescriptor = fd
    return fd
  }

  /// Config space is a sysfs binary attribute, a regular file; anything else
  /// (a FIFO would block a plain open forever) is refused.
  static func wrongType(_ kind: String, path: FilePath) -> ProbeError {
    ProbeError("\(path): is a \(kind); expected a regular file")
  }

  static func openFailure(_ error: Errno, path: FilePath, pciAddress: String) -> ProbeError {
    if error == .noSuchFileOrDirectory || error == .notDirectory {
      return ProbeError("no PCI function \(pciAddress) (\(path) is missing)")
    }
    return ProbeError("\(path): cannot open: \(error)")
  }

  /// EPERM is what lockdown returns (LOCKDOWN_PCI_ACCESS, on each write, ≥5.4);
  /// EACCES comes from file permissions (not root) or an LSM's lockdown hook.
  static func writeFailure(_ error: Errno, path: FilePath) -> ProbeError {
    if error == .notPermitted {
      return ProbeError("PCI config space write refused (kernel lockdown?): \(error)")
    }
    if error == .permissionDenied {
      return ProbeError("PCI config space write refused (not root, or kernel lockdown?): \(error)")
    }
    return ProbeError("\(path): cannot write: \(error)")
  }

  /// The address in the kernel's spelling (`%04x:%02x:%02x.%d`, lowercase), or
  /// nil when `text` is not one: a hex domain of 4 to 8 digits, a 2-digit bus,
  /// a 2-digit device up to 0x1f and a function 0–7. Only hex digits, `:` and
  /// `.` pass, so no `/` or `..` can reach a path.
  public static func normalizedAddress(_ text: String) -> String? {
    let bytes = Array(text.utf8)
    // domain ":" bus ":" device "." function
    guard bytes.count >= 12, bytes.count <= 16 else { return nil }
    let domainLength = bytes.count - 8
    guard bytes[domainLength] == 0x3a, bytes[domainLength + 3] == 0x3a,
      bytes[domainLength + 6] == 0x2e
    else { return nil }
    var lowered: [UInt8] = []
    lowered.reserveCapacity(bytes.count)
    for (index, byte) in bytes.enumerated() {
      if index == domainLength || index == domainLength + 3 || index == domainLength + 6 {
        lowered.append(byte)
        continue
      }
      guard let digit = hexDigit(byte) else { return nil }
      lowered.append(digit)
    }
    guard let device = VirtioPCIBytes.hexValue(lowered[(domainLength + 4)..<(domainLength + 6)]),
      device <= 0x1f,
      let function = VirtioPCIBytes.hexValue(lowered[(domainLength + 7)...]), function <= 7
    else { return nil }
    return String(decoding: lowered, as: UTF8.self)
  }

  static func invalidAddressReason(_ text: String) -> String {
    var shown = String(
      text.unicodeScalars.prefix(40).map { $0.isASCII && $0.value >= 0x20 ? Character($0) : "?" })
    if text.unicodeScalars.count > 40 { shown += "…" }
    return "invalid PCI address \"\(shown)\" (expected dddd:bb:dd.f)"
  }

  /// A lowercase hex digit for an ASCII hex digit, nil for anything else.
  private static func hexDigit(_ byte: UInt8) -> UInt8? {
    switch byte {
    case 0x30...0x39, 0x61...0x66: byte
    case 0x41...0x46: byte + 0x20
    default: nil
    }
  }
}

/// An I/O BAR read through its sysfs `resourceN` file: each read is one `pread`
/// of 1, 2 or 4 bytes, which the kernel turns into one `inb`/`inw`/`inl`
/// (`pci_resource_io`). Read-only: lockdown allows these reads.
protocol PCIIOBarReader {
  func read(offset: Int, count: Int) throws(ProbeError) -> [UInt8]
}

/// `<root>/sys/bus/pci/devices/<bdf>/resource<bar>`, opened read-only.
final class SysfsPCIIOBar: PCIIOBarReader {
  let path: FilePath
  private var descriptor: FileDescriptor?

  init(root: Root, pciAddress: String, bar: Int) throws(ProbeError) {
    guard let address = SysfsPCIConfigSpace.normalizedAddress(pciAddress) else {
      throw ProbeError(SysfsPCIConfigSpace.invalidAddressReason(pciAddress))
    }
    guard (0...5).contains(bar) else { throw ProbeError("no BAR \(bar)") }
    path = root.path("/sys/bus/pci/devices/\(address)/resource\(bar)")
  }

  deinit { try? descriptor?.close() }

  func read(offset: Int, count: Int) throws(ProbeError) -> [UInt8] {
    guard count == 1 || count == 2 || count == 4, offset >= 0, offset <= 0xffff else {
      throw ProbeError("\(path): an I/O BAR read must be 1, 2 or 4 bytes at a port offset")
    }
    if descriptor == nil {
      switch SystemFile.openRegular(path, flags: O_RDONLY) {
      case .opened(let opened): descriptor = opened
      case .absent: throw ProbeError("\(path) is missing (no sysfs access to the I/O BAR)")
      case .failed(let error): throw ProbeError("\(path): cannot open: \(error)")
      case .wrongType(let kind): throw SysfsPCIConfigSpace.wrongType(kind, path: path)
      }
    }
    guard let fd = descriptor else { throw ProbeError("\(path): not open") }
    var bytes = [UInt8](repeating: 0, count: count)
    let got: Int
    do {
      // One pread of exactly `count` bytes: never split into smaller port reads.
      got = try bytes.withUnsafeMutableBytes { buffer in
        try fd.read(fromAbsoluteOffset: Int64(offset), into: buffer, retryOnInterrupt: true)
      }
    } catch {
      throw ProbeError("\(path): cannot read: \(error)")
    }
    guard got == count else {
      throw ProbeError(
        "\(path): read at \(VirtioPCIBytes.hex(offset, width: 2)) returned \(got) of \(count) bytes"
      )
    }
    return bytes
  }
}

/// Little-endian field access and hex formatting for config-space bytes.
enum VirtioPCIBytes {
  static func le16(_ bytes: [UInt8], at offset: Int) -> UInt16? {
    guard offset >= 0, offset <= bytes.count - 2 else { return nil }
    return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
  }

  static func le32(_ bytes: [UInt8], at offset: Int) -> UInt32? {
    guard offset >= 0, offset <= bytes.count - 4 else { return nil }
    return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
      | UInt32(bytes[offset + 3]) << 24
  }

  static func bytes(le32 value: UInt32) -> [UInt8] {
    [
      UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8),
      UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 24),
    ]
  }

  /// `0x` and at least `width` lowercase hex digits.
  static func hex(_ value: some BinaryInteger, width: Int) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, width - digits.count)) + digits
  }

  /// The value of ASCII hex digits (at most 8), nil for anything else.
  static func hexValue(_ digits: ArraySlice<UInt8>) -> UInt32? {
    guard !digits.isEmpty, digits.count <= 8 else { return nil }
    var value: UInt32 = 0
    for byte in digits {
      let digit: UInt8
      switch byte {
      case 0x30...0x39: digit = byte - 0x30
      case 0x61...0x66: digit = byte - 0x61 + 10
      case 0x41...0x46: digit = byte - 0x41 + 10
      default: return nil
      }
      value = value << 4 | UInt32(digit)
    }
    return value
  }
}
