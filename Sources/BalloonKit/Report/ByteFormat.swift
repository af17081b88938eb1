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

  /// `part` as a whole percentage of `whole`, for any two values (part may
  /// exceed whole: "400%"). Integer arithmetic for the whole hundreds, so no
  /// Double ever converts back to an integer out of range.
  public static func percent(_ part: UInt64, of whole: UInt64) -> String {
    guard whole > 0 else { return "0%" }
    if part > 0 && part < whole / 100 + (whole % 100 == 0 ? 0 : 1) { return "<1%" }
    // part = quotient × whole + remainder; the remainder's share is below 100.
    let (quotient, remainder) = part.quotientAndRemainder(dividingBy: whole)
    let share = UInt64((Double(remainder) / Double(whole) * 100).rounded())
    return "\(quotient *| 100 +| share)%"
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
