import BalloonKit
import Testing

@Suite("KernelText primitives")
struct KernelTextTests {
  static let hexCases: [(String, UInt64?)] = [
    ("0x0005", 5), ("0x1af4", 0x1af4), ("0X3E", 0x3e), ("0", 0),  // %#x prints a bare 0
    ("5", nil), ("0x", nil), ("0xzz", nil), ("", nil), ("0x11112222333344445", nil),
    ("0x-00", nil), ("0x+1f", nil), ("0x-0", nil),  // UInt64(_:radix:) alone takes a sign (fuzz)
  ]

  @Test("hexadecimal: 0x-prefixed, or the bare 0 that %#x prints", arguments: hexCases)
  func hexadecimal(text: String, value: UInt64?) {
    #expect(KernelText.hexadecimal(text) == value)
  }

  static let decimalCases: [(String, String?)] = [
    ("3145728\n", nil), ("  42 \n", nil), ("", "empty"), ("\n", "empty"),
    ("12a\n", "is not a number"),
    ("99999999999999999999\n", "overflows 64 bits"), ("1\0\n", "NUL byte"),
    ("-1\n", "is not a number"),
  ]

  @Test("singleDecimal: one number per attribute, errors naming the file", arguments: decimalCases)
  func singleDecimal(text: String, expected: String?) {
    do {
      let value = try KernelText.singleDecimal(Array(text.utf8), path: "/sys/x/target_kb")
      #expect(expected == nil, "parsed \(value)")
      #expect(String(value) == text.filter(\.isNumber))
    } catch {
      let message = "\(error)"
      #expect(expected.map { message.contains($0) } == true, "\(message)")
      #expect(message.hasPrefix("/sys/x/target_kb: "))
    }
  }
}
