import BalloonKit
import FuzzSupport

/// hv_balloon's debugfs `hv-balloon` (HypervBalloonReader.parse).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/sys/kernel/debug/hv-balloon"
  let bytes = Fuzz.bytes(data, size)
  let stats: HypervBalloonStats
  do {
    stats = try HypervBalloonReader.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  // parse promises that pages × page size fits (balloonedBytes would saturate).
  let (_, overflow) = stats.pagesBallooned.multipliedReportingOverflow(by: stats.pageSize)
  Fuzz.require(!overflow, "pages_ballooned × page_size overflows")
  Fuzz.require(stats.pageSize > 0, "page_size 0")
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
