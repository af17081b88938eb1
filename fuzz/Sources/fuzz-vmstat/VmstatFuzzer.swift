import BalloonKit
import FuzzSupport

/// /proc/vmstat (VmstatReader.parse) with 4 KiB pages.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/proc/vmstat"
  let bytes = Fuzz.bytes(data, size)
  let vmstat: Vmstat
  do {
    vmstat = try VmstatReader.parse(bytes, path: path, pageSize: 4096)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  // Page counters become bytes: whole pages, and only from their own line.
  let pages: [(UInt64?, String)] = [
    (vmstat.balloonBytes, "nr_balloon_pages "), (vmstat.balloonInflatedBytes, "balloon_inflate "),
    (vmstat.balloonDeflatedBytes, "balloon_deflate "),
  ]
  for (value, key) in pages {
    guard let value else { continue }
    Fuzz.require(value % 4096 == 0, "\(key)= \(value) bytes is not whole pages")
    Fuzz.require(Fuzz.hasLine(bytes, startingWith: key), "\(key)parsed without its line")
  }
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
