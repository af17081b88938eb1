/// A JSON document with ordered keys and explicit nulls: `--json` output keeps
/// the documented key order, prints unknown values as `null` and sizes as
/// exact 64-bit integers (no Double rounding above 2^53).
public indirect enum JSONValue: Sendable, Equatable {
  case null
  case bool(Bool)
  case integer(UInt64)
  case signed(Int64)
  case number(Double)
  case string(String)
  case array([JSONValue])
  case object([(String, JSONValue)])

  public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
    switch (lhs, rhs) {
    case (.null, .null): true
    case (.bool(let a), .bool(let b)): a == b
    case (.integer(let a), .integer(let b)): a == b
    case (.signed(let a), .signed(let b)): a == b
    case (.number(let a), .number(let b)): a == b
    case (.string(let a), .string(let b)): a == b
    case (.array(let a), .array(let b)): a == b
    case (.object(let a), .object(let b)):
      a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    default: false
    }
  }

  /// `nil` becomes `null`.
  public static func optional(_ value: UInt64?) -> JSONValue {
    value.map(JSONValue.integer) ?? .null
  }
  public static func optional(_ value: String?) -> JSONValue {
    value.map(JSONValue.string) ?? .null
  }

  /// The member `key` of an object, or nil.
  public subscript(key: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.first { $0.0 == key }?.1
  }

  /// Pretty-printed with two-space indentation, keys in insertion order.
  public func rendered(pretty: Bool = true) -> String {
    var out = ""
    write(into: &out, indent: pretty ? 0 : nil)
    return out
  }

  private func write(into out: inout String, indent: Int?) {
    switch self {
    case .null: out += "null"
    case .bool(let value): out += value ? "true" : "false"
    case .integer(let value): out += String(value)
    case .signed(let value): out += String(value)
    case .number(let value):
      out += value.isFinite ? "\(value)" : "null"
    case .string(let value): JSONValue.escape(value, into: &out)
    case .array(let items):
      guard !items.isEmpty else {
        out += "[]"
        return
      }
      out += "["
      for (index, item) in items.enumerated() {
        if index > 0 { out += "," }
        JSONValue.newline(&out, indent.map { $0 + 1 })
        item.write(into: &out, indent: indent.map { $0 + 1 })
      }
      JSONValue.newline(&out, indent)
      out += "]"
    case .object(let members):
      guard !members.isEmpty else {
        out += "{}"
        return
      }
      out += "{"
      for (index, (key, value)) in members.enumerated() {
        if index > 0 { out += "," }
        JSONValue.newline(&out, indent.map { $0 + 1 })
        JSONValue.escape(key, into: &out)
        out += indent == nil ? ":" : ": "
        value.write(into: &out, indent: indent.map { $0 + 1 })
      }
      JSONValue.newline(&out, indent)
      out += "}"
    }
  }

  private static func newline(_ out: inout String, _ indent: Int?) {
    guard let indent else { return }
    out += "\n" + String(repeating: "  ", count: indent)
  }

  private static func escape(_ text: String, into out: inout String) {
    out += "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20:
        let hex = String(scalar.value, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
      default: out.unicodeScalars.append(scalar)
      }
    }
    out += "\""
  }
}
