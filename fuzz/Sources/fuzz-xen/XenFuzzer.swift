import BalloonKit
import FuzzSupport

/// Xen's balloon attributes. XenBalloonReader.read takes four one-number
/// files (`target_kb`, `info/{current,low,high}_kb`), so the first byte picks:
/// even, one file through its parser (KernelText.singleDecimal) checked
/// against Swift's own UInt64 parser; odd, the whole reader on a scratch tree
/// whose four files are the rest of the input split at 0xff bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Fuzz.bytes(data, size)
  guard let selector = bytes.first else { return 0 }
  if selector & 1 == 0 {
    singleValue(Array(bytes.dropFirst()))
  } else {
    wholeReader(Fuzz.split(bytes.dropFirst(), at: 0xff, into: 4))
  }
  return 0
}

func singleValue(_ bytes: [UInt8]) {
  let path = "/sys/devices/system/xen_memory/xen_memory0/target_kb"
  let value: UInt64
  do {
    value = try KernelText.singleDecimal(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return
  }
  var text = bytes[...]
  if text.last == 0x0a { text = text.dropLast() }
  while let first = text.first, first == 0x20 || first == 0x09 { text = text.dropFirst() }
  while let last = text.last, last == 0x20 || last == 0x09 { text = text.dropLast() }
  let reference = UInt64(String(decoding: text, as: UTF8.self))
  Fuzz.require(
    reference == value, "singleDecimal gave \(value), UInt64 gives \(String(describing: reference))"
  )
}

func wholeReader(_ files: [[UInt8]]) {
  let sysPath = "/sys/devices/system/xen_memory/xen_memory0"
  let names = [
    XenBalloonReader.targetFile, XenBalloonReader.currentFile, XenBalloonReader.lowFile,
    XenBalloonReader.highFile,
  ]
  for (name, contents) in zip(names, files) { ScratchTree.write(sysPath + "/" + name, contents) }
  let device = BalloonDevice(
    kind: .xen, name: "xen_memory0", sysPath: sysPath, driver: "xen-balloon")
  let stats: XenBalloonStats
  do {
    stats = try XenBalloonReader.read(device: device, root: ScratchTree.root)
  } catch {
    Fuzz.requireOneLine(error, naming: ScratchTree.base + sysPath)
    return
  }
  // Each field is its file's number of KiB; read refuses sums that overflow,
  // so nothing below saturates.
  let kib = files.map { try? KernelText.singleDecimal($0, path: "") }
  let fields = [
    stats.reservationTargetBytes, stats.currentReservationBytes, stats.lowBytes, stats.highBytes,
  ]
  for (field, count) in zip(fields, kib) {
    let (product, overflow) = (count ?? 0).multipliedReportingOverflow(by: 1024)
    Fuzz.require(
      count != nil && !overflow && product == field,
      "field \(field) is not its file's KiB \(String(describing: count))")
  }
  let (balloon, o1) = stats.lowBytes.addingReportingOverflow(stats.highBytes)
  let (total, o2) = stats.currentReservationBytes.addingReportingOverflow(balloon)
  Fuzz.require(!o1 && !o2, "read accepted sums that overflow")
  Fuzz.require(stats.balloonBytes == balloon, "balloonBytes \(stats.balloonBytes) ≠ low + high")
  Fuzz.require(
    stats.balloonTargetBytes
      == (total > stats.reservationTargetBytes ? total - stats.reservationTargetBytes : 0),
    "balloonTargetBytes \(stats.balloonTargetBytes) for total \(total)")
}

@main enum Main {
  static func main() { Fuzz.main() }
}
