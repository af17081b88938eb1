/// One line of the settings file (its bytes without the line end): a blank
/// line, a comment, or one `KEY=VALUE` assignment as sh would read it. Works
/// on Unicode scalars, never on `Character`s: a grapheme cluster can swallow
/// the ASCII character the grammar looks for ("\r\n" is one Character, and so
/// is "=" followed by a combining mark).
struct SettingsLine {
  var number: Int
  var path: String

  func error(_ what: String) -> SourceError {
    .malformed(path, line: number, what)
  }

  /// The key and the (unquoted) value, or nil for a blank or comment line.
  func assignment(_ bytes: ArraySlice<UInt8>) throws(SourceError) -> (String, String)? {
    let text = try scalars(bytes)
    var index = 0
    func at(_ position: Int) -> Unicode.Scalar? {
      position < text.count ? text[position] : nil
    }
    func skipBlanks() -> Int {
      let start = index
      while let scalar = at(index), Self.isBlank(scalar) { index += 1 }
      return index - start
    }

    _ = skipBlanks()
    guard let first = at(index), first != "#" else { return nil }

    // `export KEY=VALUE` is the same assignment to sh.
    let export: [Unicode.Scalar] = ["e", "x", "p", "o", "r", "t"]
    if text.count > index + export.count, Array(text[index..<index + export.count]) == export,
      let after = at(index + export.count), Self.isBlank(after)
    {
      index += export.count
      _ = skipBlanks()
    }

    let keyStart = index
    while let scalar = at(index), Self.isNameCharacter(scalar) { index += 1 }
    let key = String(String.UnicodeScalarView(text[keyStart..<index]))
    guard let equals = at(index), equals == "=", !key.isEmpty else {
      if let scalar = at(index), !scalar.isASCII {
        throw notAllowed(scalar, column: index + 1, in: text)
      }
      if let scalar = at(index), Self.isBlank(scalar), !key.isEmpty {
        _ = skipBlanks()
        if at(index) == "=" {
          throw error(
            "no blank allowed before \"=\" (sh reads \"\(key) =\" as a command): \(quoted(text))")
        }
      }
      throw error("expected KEY=VALUE, got \(quoted(text))")
    }
    if let digit = key.unicodeScalars.first, ("0"..."9").contains(digit) {
      throw error("\(key) is not a name (a name starts with a letter or _)")
    }
    index += 1

    var value = String.UnicodeScalarView()
    let valueStart = index
    if let quote = at(index), quote == "'" || quote == "\"" {
      index += 1
      while true {
        guard let scalar = at(index) else {
          throw error(
            "\(key): the quote \(quote) at column \(valueStart + 1) is not closed on this line")
        }
        index += 1
        if scalar == quote { break }
        if quote == "\"", scalar == "$" || scalar == "`" || scalar == "\\" {
          throw error(
            "\(key): \"\(scalar)\" inside double quotes is special to sh; use single quotes")
        }
        guard Self.isPrintableASCII(scalar) else {
          throw notAllowed(scalar, column: index, in: text)
        }
        value.append(scalar)
      }
      if let next = at(index), !Self.isBlank(next) {
        throw error("\(key): text after the closing quote at column \(index + 1): \(quoted(text))")
      }
    } else {
      while let scalar = at(index), !Self.isBlank(scalar) {
        if scalar == "'" || scalar == "\"" {
          throw error(
            "\(key): a quote inside a value (column \(index + 1)); quote the whole value: \(quoted(text))"
          )
        }
        guard Self.isPrintableASCII(scalar) else {
          throw notAllowed(scalar, column: index + 1, in: text)
        }
        if Self.shellSpecial.contains(scalar) {
          throw error(
            "\(key): \"\(scalar)\" (column \(index + 1)) is special to sh; put the value in single quotes"
          )
        }
        value.append(scalar)
        index += 1
      }
    }

    let blanks = skipBlanks()
    if let rest = at(index), !(rest == "#" && blanks > 0) {
      throw error(
        "\(key): text after the value at column \(index + 1) (sh would run it as a command; quote a value that has blanks): \(quoted(text))"
      )
    }
    return (key, String(value))
  }

  /// The line as Unicode scalars. Invalid UTF-8, control characters and
  /// characters that look like a line break or reorder text are refused even
  /// in a comment: they could make a setting look present, or absent, when it
  /// is not.
  private func scalars(_ bytes: ArraySlice<UInt8>) throws(SourceError) -> [Unicode.Scalar] {
    var result: [Unicode.Scalar] = []
    result.reserveCapacity(bytes.count)
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    var offset = bytes.startIndex
    loop: while true {
      switch decoder.decode(&iterator) {
      case .scalarValue(let scalar):
        if Self.isForbiddenAnywhere(scalar) {
          throw notAllowed(scalar, column: result.count + 1, in: result)
        }
        result.append(scalar)
        offset += UTF8.width(scalar)
      case .emptyInput:
        break loop
      case .error:
        let byte = offset < bytes.endIndex ? bytes[offset] : 0
        let hex = String(byte, radix: 16, uppercase: true)
        throw error(
          "not valid UTF-8 (byte 0x\(hex.count < 2 ? "0" + hex : hex) at column \(result.count + 1)); save the file as UTF-8"
        )
      }
    }
    return result
  }

  private func notAllowed(_ scalar: Unicode.Scalar, column: Int, in text: [Unicode.Scalar])
    -> SourceError
  {
    let what: String
    if let name = Self.names[scalar.value] {
      what = "\(Self.escaped(scalar)) (\(name))"
    } else {
      what = Self.escaped(scalar)
    }
    let kind = scalar.isASCII ? "control character" : "character"
    if Self.isForbiddenAnywhere(scalar) {
      return error("\(kind) \(what) at column \(column)")
    }
    return error(
      "\(kind) \(what) at column \(column); keys and values are plain ASCII: \(quoted(text))")
  }

  private func quoted(_ text: [Unicode.Scalar]) -> String {
    let limit = 120
    let shown = text.prefix(limit).map(Self.escaped).joined()
    return "\"" + shown + (text.count > limit ? "...\"" : "\"")
  }

  /// Printable ASCII as is; everything else as `\t`, `\r` or `\u{FEFF}`, so an
  /// invisible character shows in the error.
  static func escaped(_ scalar: Unicode.Scalar) -> String {
    switch scalar {
    case "\t": return "\\t"
    case "\r": return "\\r"
    case "\n": return "\\n"
    case "\"": return "\\\""
    case "\\": return "\\\\"
    default:
      if isPrintableASCII(scalar) { return String(scalar) }
      return "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
    }
  }

  static func escaped(_ text: String) -> String {
    text.unicodeScalars.map(escaped).joined()
  }

  static func isBlank(_ scalar: Unicode.Scalar) -> Bool { scalar == " " || scalar == "\t" }

  static func isPrintableASCII(_ scalar: Unicode.Scalar) -> Bool {
    (0x20...0x7E).contains(scalar.value)
  }

  static func isNameCharacter(_ scalar: Unicode.Scalar) -> Bool {
    ("A"..."Z").contains(scalar) || ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar)
      || scalar == "_"
  }

  /// Outside quotes these make sh expand, redirect, chain or escape; `~` is
  /// tilde-expanded in an assignment. balloonctl does none of that.
  static let shellSpecial: Set<Unicode.Scalar> = [
    "$", "`", "\\", ";", "&", "|", "<", ">", "(", ")", "~",
  ]

  /// C0 controls but tab (a lone CR, a NUL), DEL, C1 controls (NEL), the
  /// Unicode line and paragraph separators, and the bidirectional overrides
  /// and isolates.
  static func isForbiddenAnywhere(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x09: false
    case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
    default: false
    }
  }

  static let names: [UInt32: String] = [
    0x00: "NUL",
    0x0D: "a carriage return not before a line feed",
    0x85: "next line",
    0xA0: "no-break space",
    0x200B: "zero-width space",
    0x200C: "zero-width non-joiner",
    0x200D: "zero-width joiner",
    0x2028: "line separator",
    0x2029: "paragraph separator",
    0x2060: "word joiner",
    0xFEFF: "byte order mark",
  ]
}
