/// Human units, used only at output: binary prefixes, one decimal.
public enum ByteFormat {
  public static func human(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    guard bytes >= 1024 else { return "\(bytes) B" }
    var unit = 0
    var scaled = bytes
    while scaled >= 1024 * 1024, unit < units.count - 2 {
      scaled /= 1024
      unit += 1
    }
    // scaled is in units[unit]; show it in units[unit + 1] with one decimal.
    let tenths = (scaled * 10 + 512) / 1024
    return "\(tenths / 10).\(tenths % 10) \(units[unit + 1])"
  }

  public static func human(_ bytes: UInt64?, unknown: String = "unknown") -> String {
    bytes.map(human) ?? unknown
  }

  public static func percent(_ part: UInt64, of whole: UInt64) -> String {
    guard whole > 0 else { return "0%" }
    let value = Double(part) / Double(whole) * 100
    if value > 0 && value < 1 { return "<1%" }
    return "\(Int(value.rounded()))%"
  }

  /// 0.65 → "0.65" (Swift prints the shortest round-trip form).
  public static func fraction(_ value: Double) -> String { "\(value)" }

  public static func padded(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
  }

  public static func leftPadded(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
  }
}
