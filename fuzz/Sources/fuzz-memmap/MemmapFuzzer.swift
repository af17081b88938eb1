import BalloonKit
import FuzzSupport

/// The firmware memory map, /sys/firmware/memmap/<n>/{type,start,end}
/// (FirmwareMemmapReader). The first byte picks: even, one address file
/// through its parsers (KernelText.attribute, KernelText.hexadecimal); odd,
/// the whole reader on a scratch tree of up to three entries, whose nine
/// files are the rest of the input split at 0xff bytes (a missing part is a
/// missing file), checked against a plain sum of the "System RAM" entries.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Fuzz.bytes(data, size)
  guard let selector = bytes.first else { return 0 }
  if selector & 1 == 0 {
    address(Array(bytes.dropFirst()))
  } else {
    wholeReader(
      bytes.dropFirst().split(
        separator: 0xff, maxSplits: 8,
        omittingEmptySubsequences: false
      ).map { Array($0) })
  }
  return 0
}

func address(_ bytes: [UInt8]) {
  let path = "/sys/firmware/memmap/0/start"
  let text: String
  do {
    text = try KernelText.attribute(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return
  }
  guard let value = KernelText.hexadecimal(text) else { return }
  // Strict: "0", or 0x and hex digits only, and the value written back reads the same.
  let digits = text == "0" ? "0"[...] : text.dropFirst(2)
  Fuzz.require(
    digits.utf8.allSatisfy {
      ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66)
    },
    "\"\(text)\" accepted as the hexadecimal \(value)")
  Fuzz.require(
    KernelText.hexadecimal("0x" + String(value, radix: 16)) == value, "\(value) does not round-trip"
  )
}

func wholeReader(_ parts: [[UInt8]]) {
  let files = ["type", "start", "end"]
  for entry in 0..<3 {
    let directory = "\(FirmwareMemmapReader.path)/\(entry)"
    for (index, file) in files.enumerated() {
      let part = entry * 3 + index
      if part < parts.count {
        ScratchTree.write(directory + "/" + file, parts[part])
      } else {
        ScratchTree.remove(directory + "/" + file)
      }
    }
    if entry * 3 >= parts.count { ScratchTree.remove(directory) }
  }
  let result: UInt64?
  do {
    result = try FirmwareMemmapReader.systemRAMBytes(root: ScratchTree.root)
  } catch {
    Fuzz.requireOneLine(error, naming: ScratchTree.base + FirmwareMemmapReader.path)
    Fuzz.require(expected(parts) == nil, "threw \(error) for a valid map")
    return
  }
  let sum = expected(parts)
  Fuzz.require(sum != nil, "accepted an invalid map, total \(String(describing: result))")
  Fuzz.require(
    result == (sum == 0 ? nil : sum),
    "total \(String(describing: result)), sum \(String(describing: sum))")
}

/// The sum (nil past 64 bits) of end − start + 1 over the "System RAM" entries, or
/// nil when an entry is malformed (a missing start or end of a RAM entry, a
/// NUL byte, an address that is not 0x hex, end below start).
func expected(_ parts: [[UInt8]]) -> UInt64? {
  func text(_ bytes: [UInt8]) -> String? {
    var body = bytes[...]
    if body.last == 0x0a { body = body.dropLast() }
    return body.contains(0) ? nil : String(decoding: body, as: UTF8.self)
  }
  func hex(_ bytes: [UInt8]) -> UInt64? {
    guard let text = text(bytes) else { return nil }
    if text == "0" { return 0 }
    guard text.hasPrefix("0x") || text.hasPrefix("0X") else { return nil }
    let digits = text.dropFirst(2)
    // Digits only: UInt64(_:radix:) alone would also take a sign ("0x+0").
    guard !digits.isEmpty, digits.count <= 16,
      digits.utf8.allSatisfy({
        ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66)
      })
    else { return nil }
    return UInt64(digits, radix: 16)
  }
  var total: UInt64 = 0
  for entry in 0..<3 where entry * 3 < parts.count {
    guard let type = text(parts[entry * 3]) else { return nil }
    guard type == "System RAM" else { continue }
    guard entry * 3 + 2 < parts.count, let start = hex(parts[entry * 3 + 1]),
      let end = hex(parts[entry * 3 + 2]), end >= start
    else { return nil }
    // Checked, as the reader does: a map past 64 bits is malformed, not saturated.
    let (size, o1) = (end - start).addingReportingOverflow(1)
    let (sum, o2) = total.addingReportingOverflow(size)
    if o1 || o2 { return nil }
    total = sum
  }
  return total
}

@main enum Main {
  static func main() { Fuzz.main() }
}
