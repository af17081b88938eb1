/// Parses JSON into `JSONValue` (for the daemon's own state file, and tests).
/// Strict RFC 8259: exactly its grammar, nothing more (no leading zeros, `+`,
/// bare `.`, comments, trailing commas, BOM or unescaped control characters),
/// and UTF-8 only, with surrogates paired. Integers that fit stay exact,
/// others become Double; a number past Double's range is an error. A repeated
/// key in an object is an error (which of the two counts would be a guess),
/// and nesting is limited to 64 arrays or objects (no deep recursion).
public struct JSONParser {
  public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
    public var offset: Int
    public var message: String
    public var description: String { "at byte \(offset): \(message)" }
  }

  private let bytes: [UInt8]
  private var index = 0
  private var depth = 0
  private static let maxDepth = 64

  public static func parse(_ text: String) throws(Failure) -> JSONValue {
    try parse(Array(text.utf8))
  }

  public static func parse(_ bytes: [UInt8]) throws(Failure) -> JSONValue {
    var parser = JSONParser(bytes: bytes)
    let value = try parser.value()
    parser.skipWhitespace()
    guard parser.index == bytes.count else { throw parser.fail("trailing content") }
    return value
  }

  private init(bytes: [UInt8]) { self.bytes = bytes }

  private func fail(_ message: String) -> Failure { Failure(offset: index, message: message) }

  private mutating func skipWhitespace() {
    while index < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[index]) { index += 1 }
  }

  private mutating func value() throws(Failure) -> JSONValue {
    skipWhitespace()
    guard index < bytes.count else { throw fail("unexpected end") }
    switch bytes[index] {
    case UInt8(ascii: "{"): return try object()
    case UInt8(ascii: "["): return try array()
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"):
      try literal("true")
      return .bool(true)
    case UInt8(ascii: "f"):
      try literal("false")
      return .bool(false)
    case UInt8(ascii: "n"):
      try literal("null")
      return .null
    default: return try number()
    }
  }

  private mutating func literal(_ word: String) throws(Failure) {
    let utf8 = Array(word.utf8)
    guard index + utf8.count <= bytes.count, Array(bytes[index..<index + utf8.count]) == utf8 else {
      throw fail("expected \(word)")
    }
    index += utf8.count
  }

  private mutating func nest() throws(Failure) {
    depth += 1
    if depth > JSONParser.maxDepth { throw fail("nested too deeply") }
  }

  private mutating func object() throws(Failure) -> JSONValue {
    try nest()
    defer { depth -= 1 }
    index += 1
    var members: [(String, JSONValue)] = []
    var keys = Set<String>()
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
      index += 1
      return .object(members)
    }
    while true {
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
        throw fail("expected a key")
      }
      let keyOffset = index
      let key = try string()
      guard keys.insert(key).inserted else {
        throw Failure(offset: keyOffset, message: "duplicate key \(JSONParser.shown(key))")
      }
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected :") }
      index += 1
      members.append((key, try value()))
      skipWhitespace()
      guard index < bytes.count else { throw fail("unexpected end in object") }
      if bytes[index] == UInt8(ascii: ",") {
        index += 1
        continue
      }
      guard bytes[index] == UInt8(ascii: "}") else { throw fail("expected , or }") }
      index += 1
      return .object(members)
    }
  }

  private mutating func array() throws(Failure) -> JSONValue {
    try nest()
    defer { depth -= 1 }
    index += 1
    var items: [JSONValue] = []
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
      index += 1
      return .array(items)
    }
    while true {
      items.append(try value())
      skipWhitespace()
      guard index < bytes.count else { throw fail("unexpected end in array") }
      if bytes[index] == UInt8(ascii: ",") {
        index += 1
        continue
      }
      guard bytes[index] == UInt8(ascii: "]") else { throw fail("expected , or ]") }
      index += 1
      return .array(items)
    }
  }

  private mutating func string() throws(Failure) -> String {
    index += 1
    var scalars = String.UnicodeScalarView()
    var raw: [UInt8] = []
    // Invalid UTF-8 is an error, not U+FFFD: the text must round-trip.
    func flush() -> Bool {
      guard !raw.isEmpty else { return true }
      guard let text = String(validating: raw, as: UTF8.self) else { return false }
      scalars.append(contentsOf: text.unicodeScalars)
      raw.removeAll()
      return true
    }
    while index < bytes.count {
      let byte = bytes[index]
      index += 1
      switch byte {
      case UInt8(ascii: "\""):
        guard flush() else { throw fail("invalid UTF-8 in string") }
        return String(scalars)
      case UInt8(ascii: "\\"):
        guard flush() else { throw fail("invalid UTF-8 in string") }
        guard index < bytes.count else { throw fail("unexpected end in string") }
        let escape = bytes[index]
        index += 1
        switch escape {
        case UInt8(ascii: "\""): scalars.append("\"")
        case UInt8(ascii: "\\"): scalars.append("\\")
        case UInt8(ascii: "/"): scalars.append("/")
        case UInt8(ascii: "b"): scalars.append("\u{08}")
        case UInt8(ascii: "f"): scalars.append("\u{0C}")
        case UInt8(ascii: "n"): scalars.append("\n")
        case UInt8(ascii: "r"): scalars.append("\r")
        case UInt8(ascii: "t"): scalars.append("\t")
        case UInt8(ascii: "u"):
          var code = try hex4()
          if (0xD800..<0xDC00).contains(code) {
            guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"),
              bytes[index + 1] == UInt8(ascii: "u")
            else { throw fail("lone surrogate in \\u escape") }
            index += 2
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else {
              throw fail("lone surrogate in \\u escape")
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let scalar = Unicode.Scalar(code) else {
            throw fail("lone surrogate in \\u escape")
          }
          scalars.append(scalar)
        default: throw fail("bad escape")
        }
      case 0..<0x20: throw fail("control character in string")
      default: raw.append(byte)
      }
    }
    throw fail("unterminated string")
  }

  /// A piece of the input for an error, short.
  private static func shown(_ text: String) -> String {
    let quoted = JSONValue.string(text).rendered(pretty: false)
    return quoted.count <= 40 ? quoted : String(quoted.prefix(40)) + "…"
  }

  /// Exactly four hex digits (not `UInt32(_:radix:)`, which takes a sign).
  private mutating func hex4() throws(Failure) -> UInt32 {
    var code: UInt32 = 0
    for _ in 0..<4 {
      guard index < bytes.count else { throw fail("bad \\u escape") }
      let byte = bytes[index]
      let digit: UInt8
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
      default: throw fail("bad \\u escape")
      }
      code = code << 4 | UInt32(digit)
      index += 1
    }
    return code
  }

  private func isDigit(at offset: Int) -> Bool {
    offset < bytes.count && bytes[offset] >= UInt8(ascii: "0") && bytes[offset] <= UInt8(ascii: "9")
  }

  private mutating func skipDigits() {
    while isDigit(at: index) { index += 1 }
  }

  /// RFC 8259 §6: `[ "-" ] ( "0" / 1-9 *DIGIT ) [ "." 1*DIGIT ] [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ]`.
  private mutating func number() throws(Failure) -> JSONValue {
    let start = index
    if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
    guard isDigit(at: index) else {
      throw fail(index == start ? "unexpected character" : "expected a digit after -")
    }
    if bytes[index] == UInt8(ascii: "0") {
      index += 1
      if isDigit(at: index) { throw fail("leading zero in number") }
    } else {
      skipDigits()
    }
    var isInteger = true
    if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
      isInteger = false
      index += 1
      guard isDigit(at: index) else { throw fail("expected a digit after .") }
      skipDigits()
    }
    if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
      isInteger = false
      index += 1
      if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")
      {
        index += 1
      }
      guard isDigit(at: index) else { throw fail("expected a digit in the exponent") }
      skipDigits()
    }
    let text = String(decoding: bytes[start..<index], as: UTF8.self)
    if isInteger {
      if let value = UInt64(text) { return .integer(value) }
      if let value = Int64(text) { return .signed(value) }
    }
    guard let value = Double(text), value.isFinite else {
      throw Failure(offset: start, message: "number out of range \(JSONParser.shown(text))")
    }
    return .number(value)
  }
}

extension JSONValue {
  public var uint64: UInt64? {
    if case .integer(let value) = self { return value }
    return nil
  }
  public var double: Double? {
    switch self {
    case .integer(let value): Double(value)
    case .signed(let value): Double(value)
    case .number(let value): value
    default: nil
    }
  }
  public var string: String? {
    if case .string(let value) = self { return value }
    return nil
  }
  public var bool: Bool? {
    if case .bool(let value) = self { return value }
    return nil
  }
  public var array: [JSONValue]? {
    if case .array(let value) = self { return value }
    return nil
  }
  public var isNull: Bool { self == .null }
}
