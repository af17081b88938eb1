import SystemPackage

/// `/sys/firmware/memmap/<n>/{start,end,type}`: the firmware's (e820) memory
/// map as the kernel received it at boot. Its "System RAM" entries add up to
/// the RAM the hypervisor configured (QEMU `-m`, a .vmx `memsize`) minus a
/// sub-MiB legacy hole, which is what a host's balloon target is relative to.
/// Needs CONFIG_FIRMWARE_MEMMAP (x86 has it); absent means unknown.
public enum FirmwareMemmapReader {
  public static let path = "/sys/firmware/memmap"

  /// Σ (end − start + 1) over "System RAM" entries, or nil when the map is
  /// absent or lists no RAM.
  public static func systemRAMBytes(root: Root) throws(SourceError) -> UInt64? {
    let directory = root.path(path)
    guard let entries = try SystemFile.list(directory) else { return nil }
    var total: UInt64 = 0
    for entry in entries.sorted() {
      let dir = directory.appending(entry)
      guard let typeBytes = try SystemFile.read(dir.appending("type")) else { continue }
      let type = try KernelText.attribute(typeBytes, path: dir.appending("type").string)
      guard type == "System RAM" else { continue }
      let start = try address(dir.appending("start"))
      let end = try address(dir.appending("end"))
      guard end >= start else {
        throw .malformed(dir.string, "end \(end) is below start \(start)")
      }
      // Checked, not saturating: an absurd map must not become a huge
      // "configured RAM" (and KVM floor) without a word.
      let (size, o1) = (end - start).addingReportingOverflow(1)
      let (sum, o2) = total.addingReportingOverflow(size)
      if o1 || o2 {
        throw .malformed(directory.string, "System RAM entries add up to more than 64 bits")
      }
      total = sum
    }
    return total > 0 ? total : nil
  }

  static func address(_ file: FilePath) throws(SourceError) -> UInt64 {
    let text = try KernelText.attribute(SystemFile.readRequired(file), path: file.string)
    guard let value = KernelText.hexadecimal(text) else {
      // Quoted and escaped: the file's text may hold newlines, and an error is one line.
      let shown = Array(text.utf8).withUnsafeBufferPointer {
        KernelText.quoted($0, 0..<$0.count)
      }
      throw .malformed(file.string, "\(shown) is not a 0x-prefixed hexadecimal address")
    }
    return value
  }
}
