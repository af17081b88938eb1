import BalloonKit
import FuzzSupport

/// The daemon's state file (DaemonState.parse), and the round trip: a state
/// that parses, written as StateStore.save writes it, parses back equal.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/run/balloonctl/state.json"
  let bytes = Fuzz.bytes(data, size)
  let state: DaemonState
  do {
    state = try DaemonState.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  let written = state.json().rendered() + "\n"
  let reread: DaemonState
  do {
    reread = try DaemonState.parse(Array(written.utf8), path: path)
  } catch {
    fatalError("round trip: the written state does not parse: \(error)\n\(written)")
  }
  Fuzz.require(reread == state, "round trip: \(state) was written and read back as \(reread)")
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
