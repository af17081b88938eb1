import SystemPackage

/// vmw_balloon's debugfs `vmmemctl`, the fields balloonctl needs. Sizes in
/// bytes (the file counts 4 KiB frames; a 2 MiB balloon page is 512 frames).
public struct VmwBalloonStats: Sendable, Equatable {
  /// The host's target for the balloon (first `target` line).
  public var targetBytes: UInt64
  /// The balloon's size now (`current`).
  public var currentBytes: UInt64
  /// `used capabilities` (the protocol bits the host granted); nil on
  /// kernels that do not print it.
  public var usedCapabilities: UInt64?

  public init(targetBytes: UInt64, currentBytes: UInt64, usedCapabilities: UInt64? = nil) {
    self.targetBytes = targetBytes
    self.currentBytes = currentBytes
    self.usedCapabilities = usedCapabilities
  }
}

/// Source: drivers/misc/vmw_balloon.c `vmballoon_debug_show()`. Two layouts
/// (kernel-interfaces.md §1.2):
///
///     target:               262144 pages        ≤ 4.19 ("%8d pages")
///     target                :           262144  ≥ 4.20 ("%-22s: %16lu")
///
/// and in both the key `target` appears a second time as the GET_TARGET
/// command counter, `target: 3601 (0 failed)`. Rule: the first line whose
/// key is `target`/`current` and which is not a `… failed)` counter.
public enum VmwBalloonReader {
  public static let path = "/sys/kernel/debug/vmmemctl"
  /// `target` and `current` count x86 basic frames, whatever the page size.
  public static let frameSize: UInt64 = 4096

  /// The file under `root`, or nil when it does not exist.
  public static func read(root: Root) throws(SourceError) -> VmwBalloonStats? {
    let file = root.path(path)
    guard let bytes = try SystemFile.read(file) else { return nil }
    return try parse(bytes, path: file.string)
  }

  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> VmwBalloonStats {
    if bytes.isEmpty { throw .malformed(path, "empty") }
    return try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      var target: UInt64?
      var current: UInt64?
      var capabilities: UInt64?
      try DebugfsStats.forEachField(buffer, path: path) { number, key, value throws(SourceError) in
        if KernelText.equals(buffer, key, "target") || KernelText.equals(buffer, key, "current") {
          let isTarget = buffer[key.lowerBound] == 0x74  // "t"
          if isTarget ? target != nil : current != nil { return }
          if contains(buffer, value, "failed)") { return }  // the command counter
          let name = isTarget ? "target" : "current"
          let frames = try frames(buffer, value, key: name, path: path, line: number)
          let size = try KernelField.bytes(
            frames, unit: frameSize, key: name, path: path, line: number)
          if isTarget { target = size } else { current = size }
        } else if capabilities == nil, KernelText.equals(buffer, key, "used capabilities") {
          // "%#16lx": "0x3e", or plain "0" for zero (hexadecimal accepts both).
          let text = KernelText.string(buffer, value)
          if let parsed = KernelText.hexadecimal(text) {
            capabilities = parsed
          } else {
            throw .malformed(
              path, line: number,
              "\"used capabilities\" value \(KernelText.quoted(buffer, value)) is not hexadecimal")
          }
        }
      }
      guard let target else { throw SourceError(path: path, .missingField("target")) }
      guard let current else { throw SourceError(path: path, .missingField("current")) }
      return VmwBalloonStats(
        targetBytes: target, currentBytes: current, usedCapabilities: capabilities)
    }
  }

  /// Protocol capability names for `used capabilities` (enum
  /// vmwballoon_capabilities); bit 0 is reserved, unknown bits print as
  /// `cap0x<bit value>`.
  public static func capabilityNames(_ caps: UInt64) -> [String] {
    var names: [String] = []
    for bit in 0..<64 {
      let value = UInt64(1) << UInt64(bit)
      guard caps & value != 0 else { continue }
      switch value {
      case 0x2: names.append("BASIC")
      case 0x4: names.append("BATCHED")
      case 0x8: names.append("BATCHED_2M")
      case 0x10: names.append("DOORBELL")
      case 0x20: names.append("64BIT_TARGET")
      default: names.append("cap0x" + String(value, radix: 16))
      }
    }
    return names
  }

  /// The first integer of `value`, then an optional `pages` unit.
  private static func frames(
    _ buffer: UnsafeBufferPointer<UInt8>, _ value: Range<Int>, key: String, path: String, line: Int
  ) throws(SourceError) -> UInt64 {
    var end = value.lowerBound
    while end < value.upperBound, buffer[end] >= 0x30, buffer[end] <= 0x39 { end += 1 }
    let rest = KernelText.trimmed(buffer, end..<value.upperBound)
    guard rest.isEmpty || KernelText.equals(buffer, rest, "pages") else {
      throw .malformed(
        path, line: line, "\"\(key)\" value \(KernelText.quoted(buffer, value)) is not a page count"
      )
    }
    return try KernelField.decimal(
      buffer, value.lowerBound..<end, key: key, path: path, line: line)
  }

  private static func contains(
    _ buffer: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ literal: StaticString
  ) -> Bool {
    let length = literal.utf8CodeUnitCount
    guard range.count >= length else { return false }
    for start in range.lowerBound...(range.upperBound - length)
    where KernelText.equals(buffer, start..<(start + length), literal) {
      return true
    }
    return false
  }
}
