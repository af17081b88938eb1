import BalloonKit
import Testing

/// One input for the parser and what RFC 8259 says of it.
struct JSONCase: CustomTestStringConvertible, Sendable {
  var text: [UInt8]
  /// Makes the value it must parse to; nil: it must be rejected. Made when the
  /// test runs, not stored: LeakSanitizer reports the boxes of an indirect
  /// enum kept in a static array as leaked (make test-asan).
  var value: (@Sendable () -> JSONValue)?
  /// For a rejected input: a fragment of the error and the byte it names.
  var message = ""
  var offset = 0
  var testDescription: String {
    let shown = String(decoding: text, as: UTF8.self).debugDescription
    return (value == nil ? "rejects " : "accepts ") + String(shown.prefix(40))
  }

  static func accepts(_ text: String, _ value: @escaping @Sendable @autoclosure () -> JSONValue)
    -> JSONCase
  {
    JSONCase(text: Array(text.utf8), value: value)
  }
  static func rejects(_ text: String, _ message: String, at offset: Int) -> JSONCase {
    rejects(Array(text.utf8), message, at: offset)
  }
  static func rejects(_ bytes: [UInt8], _ message: String, at offset: Int) -> JSONCase {
    JSONCase(text: bytes, value: nil, message: message, offset: offset)
  }
}

/// RFC 8259's grammar, production by production: what it allows parses to the
/// exact value, what it does not is an error naming the byte where it went wrong.
@Suite("JSON parser (strict RFC 8259)")
struct JSONParserTests {
  // §6 number = [ minus ] int [ frac ] [ exp ]
  static let numberCases: [JSONCase] = [
    .accepts("0", .integer(0)),
    .accepts("-0", .integer(0)),  // an integer zero: the sign is not kept
    .accepts("7", .integer(7)),
    .accepts("10", .integer(10)),
    .accepts("-1", .signed(-1)),
    .accepts("18446744073709551615", .integer(.max)),
    .accepts("-9223372036854775808", .signed(.min)),
    .accepts("18446744073709551616", .number(18_446_744_073_709_551_616)),
    .accepts("0.5", .number(0.5)),
    .accepts("-0.25", .number(-0.25)),
    .accepts("1e3", .number(1000)),
    .accepts("1E3", .number(1000)),
    .accepts("1e+3", .number(1000)),
    .accepts("1e-3", .number(0.001)),
    .accepts("0e0", .number(0)),
    .accepts("1.5e2", .number(150)),
    .accepts("1e007", .number(1e7)),  // the exponent is 1*DIGIT: leading zeros allowed
    .rejects("01", "leading zero", at: 1),
    .rejects("-01", "leading zero", at: 2),
    .rejects("00", "leading zero", at: 1),
    .rejects("+1", "unexpected character", at: 0),
    .rejects("1.", "digit after .", at: 2),
    .rejects("1.e3", "digit after .", at: 2),
    .rejects(".5", "unexpected character", at: 0),
    .rejects("-", "digit after -", at: 1),
    .rejects("-.5", "digit after -", at: 1),
    .rejects("--1", "digit after -", at: 1),
    .rejects("1e", "exponent", at: 2),
    .rejects("1e+", "exponent", at: 3),
    .rejects("1e-", "exponent", at: 3),
    .rejects("1E+-1", "exponent", at: 3),
    .rejects("1.5.5", "trailing content", at: 3),
    .rejects("1-1", "trailing content", at: 1),
    .rejects("1e5e5", "trailing content", at: 3),
    .rejects("0x10", "trailing content", at: 1),
    .rejects("1e400", "out of range", at: 0),
    .rejects("-1e400", "out of range", at: 0),
    .rejects("Infinity", "unexpected character", at: 0),
    .rejects("NaN", "unexpected character", at: 0),
  ]

  // §7 string = quotation-mark *char quotation-mark
  static let stringCases: [JSONCase] = [
    .accepts(#""""#, .string("")),
    .accepts(#""a b""#, .string("a b")),
    .accepts(#""\"\\\/\b\f\n\r\t""#, .string("\"\\/\u{08}\u{0C}\n\r\t")),
    .accepts(#""\u0041\u00e9\u20AC""#, .string("Aé€")),
    .accepts(#""\u0000""#, .string("\u{0}")),
    .accepts(#""\ud83d\ude00""#, .string("😀")),
    .accepts("\"é😀\"", .string("é😀")),
    .accepts("\"\u{7F}\"", .string("\u{7F}")),  // DEL is not a control character in §7
    .rejects("\"a", "unterminated string", at: 2),
    .rejects("\"a\\", "unexpected end in string", at: 3),
    .rejects("\"\u{01}\"", "control character", at: 2),
    .rejects("\"a\nb\"", "control character", at: 3),
    .rejects("\"\t\"", "control character", at: 2),
    .rejects(#""\x41""#, "bad escape", at: 3),
    .rejects(#""\'""#, "bad escape", at: 3),
    .rejects(#""\u41""#, "bad \\u escape", at: 5),
    .rejects(#""\u+041""#, "bad \\u escape", at: 3),
    .rejects(#""\u-041""#, "bad \\u escape", at: 3),
    .rejects(#""\u 041""#, "bad \\u escape", at: 3),
    .rejects(#""\ud83d""#, "lone surrogate", at: 7),
    .rejects(#""\ud83dx""#, "lone surrogate", at: 7),
    .rejects(#""\ud83d\u0041""#, "lone surrogate", at: 13),
    .rejects(#""\ude00""#, "lone surrogate", at: 7),
    .rejects(#""\ude00\ud83d""#, "lone surrogate", at: 7),
    .rejects([0x22, 0xFF, 0x22], "invalid UTF-8", at: 3),
    .rejects([0x22, 0xC3, 0x22], "invalid UTF-8", at: 3),
    .rejects([0x22, 0xED, 0xA0, 0x80, 0x22], "invalid UTF-8", at: 5),  // a surrogate in UTF-8
    .rejects([0x22, 0xC0, 0xAF, 0x22], "invalid UTF-8", at: 4),  // overlong "/"
    .rejects("'a'", "unexpected character", at: 0),
  ]

  // §2 JSON-text = ws value ws; literals; §4 objects; §5 arrays.
  static let structureCases: [JSONCase] = [
    .accepts(" \t\r\n1 \t\r\n", .integer(1)),
    .accepts("true", .bool(true)),
    .accepts("false", .bool(false)),
    .accepts("null", .null),
    .accepts("[]", .array([])),
    .accepts("[ ]", .array([])),
    .accepts("[1,[2,[]]]", .array([.integer(1), .array([.integer(2), .array([])])])),
    .accepts("{}", .object([])),
    .accepts(
      #"{ "b" : 1 , "a" : [ null ] }"#, .object([("b", .integer(1)), ("a", .array([.null]))])),
    .accepts(#"{"":""}"#, .object([("", .string(""))])),
    .rejects("", "unexpected end", at: 0),
    .rejects("   ", "unexpected end", at: 3),
    .rejects("1 2", "trailing content", at: 2),
    .rejects("{} x", "trailing content", at: 3),
    .rejects("x1", "unexpected character", at: 0),
    .rejects([0xEF, 0xBB, 0xBF, 0x31], "unexpected character", at: 0),  // a BOM
    .rejects("\u{0B}1", "unexpected character", at: 0),  // VT is not ws
    .rejects("\u{A0}1", "unexpected character", at: 0),  // nor NBSP
    .rejects("[1] \u{0}", "trailing content", at: 4),
    .rejects("tru", "expected true", at: 0),
    .rejects("True", "unexpected character", at: 0),
    .rejects("nul", "expected null", at: 0),
    .rejects("truefalse", "trailing content", at: 4),
    .rejects("[1,]", "unexpected character", at: 3),
    .rejects("[,1]", "unexpected character", at: 1),
    .rejects("[1 2]", "expected , or ]", at: 3),
    .rejects("[1", "unexpected end in array", at: 2),
    .rejects("[", "unexpected end", at: 1),
    .rejects(#"{"a":1,}"#, "expected a key", at: 7),
    .rejects(#"{"a" 1}"#, "expected :", at: 5),
    .rejects(#"{"a":}"#, "unexpected character", at: 5),
    .rejects(#"{a:1}"#, "expected a key", at: 1),
    .rejects(#"{1:1}"#, "expected a key", at: 1),
    .rejects(#"{"a":1 "b":2}"#, "expected , or }", at: 7),
    .rejects(#"{"a":1"#, "unexpected end in object", at: 6),
    .rejects(#"{"a":1,"a":2}"#, "duplicate key \"a\"", at: 7),
    .rejects(#"{"a":{"b":1,"b":2}}"#, "duplicate key \"b\"", at: 12),
    .rejects("[1] // c", "trailing content", at: 4),
    .rejects("/* c */ 1", "unexpected character", at: 0),
  ]

  // Nesting: 64 levels parse, the 65th is refused at its bracket.
  static let depthCases: [JSONCase] = [
    .accepts(
      String(repeating: "[", count: 64) + String(repeating: "]", count: 64),
      (1..<64).reduce(JSONValue.array([])) { inner, _ in .array([inner]) }),
    .rejects(
      String(repeating: "[", count: 65) + String(repeating: "]", count: 65), "nested too deeply",
      at: 64),
    .rejects(
      String(repeating: #"{"a":"#, count: 65) + "1" + String(repeating: "}", count: 65),
      "nested too deeply", at: 64 * 5),
    .rejects(String(repeating: "[", count: 1_000_000), "nested too deeply", at: 64),
  ]

  @Test("numbers", arguments: numberCases)
  func number(_ input: JSONCase) { check(input) }

  @Test("strings", arguments: stringCases)
  func string(_ input: JSONCase) { check(input) }

  @Test("whitespace, literals, arrays and objects", arguments: structureCases)
  func structure(_ input: JSONCase) { check(input) }

  @Test("nesting depth", arguments: depthCases)
  func nesting(_ input: JSONCase) { check(input) }

  func check(_ input: JSONCase) {
    if let expected = input.value?() {
      #expect(throws: Never.self) {
        let value = try JSONParser.parse(input.text)
        #expect(value == expected)
        // What it renders to parses back to the same text (a fixed point).
        let text = value.rendered(pretty: false)
        #expect(try JSONParser.parse(text).rendered(pretty: false) == text)
      }
    } else {
      let error = #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(input.text) }
      #expect(error?.message.contains(input.message) == true, "\(String(describing: error))")
      #expect(error?.offset == input.offset, "\(String(describing: error))")
    }
  }
}
