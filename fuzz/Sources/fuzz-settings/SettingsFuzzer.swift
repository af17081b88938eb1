import BalloonKit
import FuzzSupport

/// The settings file, /etc/default/balloonctl (RunSettings.parse).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/etc/default/balloonctl"
  let bytes = Fuzz.bytes(data, size)
  let settings: RunSettings
  do {
    settings = try RunSettings.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  // Every value that is set is one the daemon can use.
  if let seconds = settings.intervalSeconds {
    Fuzz.require(RunSettings.intervalRange.contains(seconds), "interval \(seconds)")
  }
  if let margin = settings.margin {
    Fuzz.require(RunSettings.marginRange.contains(margin), "margin \(margin)")
  }
  if let fraction = settings.fraction {
    Fuzz.require(fraction > 0 && fraction <= 1, "fraction \(fraction)")
  }
  if let levers = settings.levers { Fuzz.require(!levers.contains(.hyperv), "a Hyper-V lever") }
  if let file = settings.metricsFile {
    Fuzz.require(file.hasPrefix("/") && !file.hasSuffix("/"), "metrics file \(file)")
  }
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
