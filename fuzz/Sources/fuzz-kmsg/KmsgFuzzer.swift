import BalloonKit
import FuzzSupport

/// /dev/kmsg records (KmsgReader.parse), then the OOM kill matcher on each.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let path = "/dev/kmsg"
  let bytes = Fuzz.bytes(data, size)
  let records: [KmsgRecord]
  do {
    records = try KmsgReader.parse(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return 0
  }
  var matcher = OOMRecordMatcher()
  for record in records {
    Fuzz.require(record.level < 8, "level \(record.level) out of range")
    do {
      if let victim = try matcher.take(record, path: path) {
        Fuzz.require(victim.pid > 0, "victim pid \(victim.pid)")
        Fuzz.require(!victim.comm.isEmpty, "empty comm")
        Fuzz.require(
          record.text.contains("Killed process \(victim.pid) ("), "victim not from its record")
      }
    } catch {
      Fuzz.requireOneLine(error, naming: path)
    }
  }
  return 0
}

@main enum Main {
  static func main() { Fuzz.main() }
}
