import BalloonKit
import Testing

@Suite("JSON output")
struct JSONValueTests {
  @Test("keys keep their order, nil is null, sizes are exact integers")
  func rendering() {
    let value = JSONValue.object([
      ("b", .integer(UInt64.max)),
      ("a", .optional(UInt64?.none)),
      ("s", .string("quote\" slash/ back\\ nl\n \u{01}")),
      ("f", .number(0.65)),
      ("l", .array([.bool(true), .signed(-1)])),
      ("e", .object([])),
    ])
    #expect(
      value.rendered(pretty: false)
        == #"{"b":18446744073709551615,"a":null,"s":"quote\" slash/ back\\ nl\n \u0001","f":0.65,"l":[true,-1],"e":{}}"#
    )
    #expect(value.rendered().contains("\n  \"a\": null,\n"))
    #expect(value["b"] == .integer(.max))
    #expect(value["missing"] == nil)
  }
}

@Suite("Byte formatting")
struct ByteFormatTests {
  static let cases: [(UInt64, String)] = [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (1_395_864_371, "1.3 GiB"), (24_684_092 * 1024, "23.5 GiB"), (UInt64.max, "16.0 EiB"),
  ]

  @Test("human units", arguments: cases)
  func human(bytes: UInt64, text: String) {
    #expect(ByteFormat.human(bytes) == text)
  }
}
