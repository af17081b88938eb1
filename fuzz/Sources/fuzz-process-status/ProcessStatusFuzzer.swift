import BalloonKit
import FuzzSupport

/// /proc/<pid>/status (ProcessStatusReader.parse).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/proc/1/status"
  let bytes = Fuzz.bytes(data, size)
  let pins: ProcessPins
  do {
    pins = try ProcessStatusReader.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  Fuzz.require(Fuzz.hasLine(bytes, startingWith: "Name:"), "parsed without a Name line")
  Fuzz.require(Fuzz.hasLine(bytes, startingWith: "Pid:"), "parsed without a Pid line")
  Fuzz.require(pins.pid >= 0, "negative pid \(pins.pid)")
  Fuzz.require(pins.lockedBytes % 1024 == 0, "VmLck \(pins.lockedBytes) is not whole KiB")
  Fuzz.require(pins.pinnedBytes % 1024 == 0, "VmPin \(pins.pinnedBytes) is not whole KiB")
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
