import BalloonKit
import FuzzSupport

/// A PCI function's config space (the sysfs `config` file: 256 bytes, 4096
/// with extended space) through the capability walk
/// (VirtioPCICapabilities.parse(config:)).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let config = Fuzz.bytes(data, size)
  let capabilities: [VirtioPCICapability]
  do {
    capabilities = try VirtioPCICapabilities.parse(config: config)
  } catch {
    Fuzz.require(!error.reason.isEmpty && !error.reason.contains("\n"), "error: \(error.reason)")
    return 0
  }
  // Every capability is a whole 16-byte virtio_pci_cap inside the standard
  // 256 bytes, past the header, dword-aligned, each position once.
  Fuzz.require(
    capabilities.count <= VirtioPCICapabilities.maxCapabilities,
    "\(capabilities.count) capabilities")
  var positions = Set<Int>()
  for capability in capabilities {
    let position = capability.position
    Fuzz.require(position >= VirtioPCICapabilities.headerSize, "capability at \(position)")
    Fuzz.require(position + 16 <= 0x100 && position + 16 <= config.count, "cut off at \(position)")
    Fuzz.require(position % 4 == 0, "unaligned capability at \(position)")
    Fuzz.require(capability.capLength >= 16, "cap_len \(capability.capLength)")
    Fuzz.require(config[position] == 0x09, "not a vendor capability at \(position)")
    Fuzz.require(positions.insert(position).inserted, "capability at \(position) twice")
  }
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
