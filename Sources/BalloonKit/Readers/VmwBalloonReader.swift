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
/// (docs/kernel-interfaces.md §1.2):
///
///     target:               262144 pages        ≤ 4.19 ("%8d pages")
///     target                :           262144  ≥ 4.20 ("%-22s: %16lu")
///
/// and in both the key `target` appears a second time as the GET_TARGET
/// command counter, `target: 3601 (0 failed)`. Rule: the one line whose key
/// is `target`/`current` and which is not a `… failed)` counter; a second such
/// line, or such lines in both layouts, is malformed.
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
      var target: (value: UInt64, line: Int)?
      var current: (value: UInt64, line: Int)?
      var capabilities: (value: UInt64, line: Int)?
      // The layout of the first value line read (see `Layout`); the other
      // value lines must match it.
      var layout: (layout: Layout, line: Int)?
      try DebugfsStats.forEachField(buffer, path: path) {
        number, key, value, column throws(SourceError) in
        func once(_ seen: (value: UInt64, line: Int)?, _ name: String) throws(SourceError) {
          if let seen {
            throw .malformed(
              path, line: number, "\"\(name)\" appears again (first on line \(seen.line))")
          }
          let this = Layout(colonColumn: column)
          if let first = layout, first.layout != this {
            throw .malformed(
              path, line: number,
              "\"\(name)\" is in the \(this.name) layout, line \(first.line) in the "
                + "\(first.layout.name) layout")
          }
          if layout == nil { layout = (this, number) }
        }
        if KernelText.equals(buffer, key, "target") || KernelText.equals(buffer, key, "current") {
          let isTarget = buffer[key.lowerBound] == 0x74  // "t"
          if contains(buffer, value, "failed)") { return }  // the command counter
          let name = isTarget ? "target" : "current"
          try once(isTarget ? target : current, name)
          let frames = try frames(buffer, value, key: name, path: path, line: number)
          let size = try KernelField.bytes(
            frames, unit: frameSize, key: name, path: path, line: number)
          if isTarget { target = (size, number) } else { current = (size, number) }
        } else if KernelText.equals(buffer, key, "used capabilities") {
          try once(capabilities, "used capabilities")
          // "%#16lx": "0x3e", or plain "0" for zero (hexadecimal accepts both).
          let text = KernelText.string(buffer, value)
          if let parsed = KernelText.hexadecimal(text) {
            capabilities = (parsed, number)
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
        targetBytes: target.value, currentBytes: current.value,
        usedCapabilities: capabilities?.value)
    }
  }

  /// The two layouts of the file. The lines read here (`used capabilities`,
  /// `target`, `current`) are always in one layout; the command counters
  /// below them switched first (mid-series kernels, commit 0395be3e), so only
  /// the lines read here are compared. Value lines in both layouts are not a
  /// file the kernel wrote (two captures pasted together): their numbers
  /// cannot be trusted to belong together.
  enum Layout: Equatable {
    /// ≤ 4.19: `"target:             %8d pages"`, the `:` right after the key
    /// (every key is shorter than 22 characters).
    case classic
    /// ≥ 4.20: `"%-22s: %16lu"`, the key padded so the `:` is at column 22.
    case padded

    init(colonColumn: Int) { self = colonColumn >= 22 ? .padded : .classic }

    var name: String { self == .classic ? "≤ 4.19 (\"key:\")" : "≥ 4.20 (\"%-22s:\")" }
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
