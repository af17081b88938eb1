import BalloonKit
import FuzzSupport

/// /proc/meminfo (MeminfoReader.parse).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/proc/meminfo"
  let bytes = Fuzz.bytes(data, size)
  let meminfo: Meminfo
  do {
    meminfo = try MeminfoReader.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  // MemTotal is required, so a parse that succeeds saw its line; every size
  // is a count of kB, so a whole number of KiB.
  Fuzz.require(Fuzz.hasLine(bytes, startingWith: "MemTotal:"), "parsed without a MemTotal line")
  let sizes: [UInt64?] = [
    meminfo.memTotal, meminfo.memFree, meminfo.memAvailable, meminfo.swapTotal, meminfo.balloon,
    meminfo.hugetlb, meminfo.mlocked,
  ]
  for case let size? in sizes { Fuzz.require(size % 1024 == 0, "\(size) is not whole KiB") }
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
