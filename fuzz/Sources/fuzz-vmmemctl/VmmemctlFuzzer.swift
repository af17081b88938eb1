import BalloonKit
import FuzzSupport

/// vmw_balloon's debugfs `vmmemctl`, both layouts (VmwBalloonReader.parse).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/sys/kernel/debug/vmmemctl"
  let bytes = Fuzz.bytes(data, size)
  let stats: VmwBalloonStats
  do {
    stats = try VmwBalloonReader.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  // Sizes are counts of 4 KiB frames.
  Fuzz.require(stats.targetBytes % 4096 == 0, "target \(stats.targetBytes) is not whole frames")
  Fuzz.require(stats.currentBytes % 4096 == 0, "current \(stats.currentBytes) is not whole frames")
  if let caps = stats.usedCapabilities { _ = VmwBalloonReader.capabilityNames(caps) }
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
