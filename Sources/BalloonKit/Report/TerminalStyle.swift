/// How the human reports may draw: colour, and block characters or ASCII.
/// Decided once from the environment and whether stdout is a terminal, so
/// the renderers stay pure and every case is a table test.
public struct TerminalStyle: Sendable, Equatable {
  /// ANSI colour (emphasis of an alarm).
  public var color: Bool
  /// Block characters for bars and sparklines; ASCII when false.
  public var unicode: Bool

  public init(color: Bool, unicode: Bool) {
    self.color = color
    self.unicode = unicode
  }

  /// No colour, block characters: what the renderers do by default.
  public static let plain = TerminalStyle(color: false, unicode: true)

  /// - Parameters:
  ///   - environment: the process environment (`NO_COLOR`, `TERM`, and the
  ///     locale variables).
  ///   - isTerminal: whether stdout is a terminal.
  public static func detect(environment: [String: String], isTerminal: Bool) -> TerminalStyle {
    TerminalStyle(
      color: colorAllowed(environment: environment, isTerminal: isTerminal),
      unicode: localeIsUTF8(environment: environment))
  }

  /// Colour only on a terminal, and not when the user opted out: `NO_COLOR`
  /// set to any non-empty value (no-color.org: an empty one does not count),
  /// or `TERM=dumb` (a terminal that interprets no escape sequences).
  public static func colorAllowed(environment: [String: String], isTerminal: Bool) -> Bool {
    guard isTerminal else { return false }
    if let noColor = environment["NO_COLOR"], !noColor.isEmpty { return false }
    if environment["TERM"] == "dumb" { return false }
    return true
  }

  /// Whether the character set is UTF-8, by the environment rule POSIX
  /// setlocale(LC_CTYPE, "") follows: the first non-empty of LC_ALL, LC_CTYPE,
  /// LANG names the locale, and none means "C". The codeset is what follows
  /// the `.` ("en_US.UTF-8", "C.utf8"), before any `@modifier`. balloonctl
  /// does not call setlocale (it would change how the C library formats
  /// numbers for the whole process) and the rule needs no installed locale.
  public static func localeIsUTF8(environment: [String: String]) -> Bool {
    let name =
      ["LC_ALL", "LC_CTYPE", "LANG"].lazy.compactMap { environment[$0] }.first { !$0.isEmpty }
      ?? "C"
    guard let dot = name.firstIndex(of: ".") else { return false }
    let codeset = name[name.index(after: dot)...].prefix { $0 != "@" }
    let folded = codeset.lowercased().filter { $0 != "-" && $0 != "_" }
    return folded == "utf8"
  }

  /// `text` in bold red when colour is on.
  public func alarm(_ text: String) -> String {
    color ? "\u{1B}[1;31m\(text)\u{1B}[0m" : text
  }

  /// `text` in bold yellow when colour is on: worth a look, not an alarm.
  public func notice(_ text: String) -> String {
    color ? "\u{1B}[1;33m\(text)\u{1B}[0m" : text
  }
}

/// Widths as a terminal draws them, and lines wrapped to fit 80 columns.
public enum TerminalText {
  /// The width every human report fits: a terminal's default.
  public static let width = 80

  /// Columns `text` takes on a terminal: East Asian wide and fullwidth
  /// characters take 2, combining marks, zero-width characters and ANSI
  /// escape sequences 0, every other printable character 1.
  public static func columns(_ text: String) -> Int {
    var total = 0
    var inEscape = false
    for scalar in text.unicodeScalars {
      if inEscape {
        // CSI sequences end with a byte in 0x40...0x7E (here: `m`, `H`, `J`, `K`).
        if (0x40...0x7E).contains(scalar.value) && scalar != "[" { inEscape = false }
        continue
      }
      if scalar == "\u{1B}" {
        inEscape = true
        continue
      }
      total += width(scalar)
    }
    return total
  }

  static func width(_ scalar: Unicode.Scalar) -> Int {
    let value = scalar.value
    if value < 0x20 || (0x7F..<0xA0).contains(value) { return 0 }
    switch scalar.properties.generalCategory {
    case .nonspacingMark, .enclosingMark, .format: return 0
    default: break
    }
    if value == 0x200B { return 0 }
    return isWide(value) ? 2 : 1
  }

  /// The East Asian Wide and Fullwidth blocks (Unicode's EastAsianWidth.txt,
  /// grouped by block), emoji included.
  static func isWide(_ value: UInt32) -> Bool {
    switch value {
    case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
      0xA000...0xA4CF, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60,
      0xFFE0...0xFFE6, 0x1F300...0x1F64F, 0x1F900...0x1F9FF, 0x20000...0x2FFFD,
      0x30000...0x3FFFD:
      true
    default: false
    }
  }

  /// The widest line of `text`, in columns.
  public static func widestLine(_ text: String) -> Int {
    text.split(separator: "\n", omittingEmptySubsequences: false).map { columns(String($0)) }
      .max() ?? 0
  }

  /// `line` broken at spaces so that each piece fits `width` columns; the
  /// pieces after the first start with `indent` spaces. A word longer than
  /// the room left (a long path) is cut, so every piece fits.
  public static func wrap(_ line: String, indent: Int, width: Int = TerminalText.width) -> [String]
  {
    guard columns(line) > width else { return [line] }
    let margin = String(repeating: " ", count: max(0, min(indent, width / 2)))
    var pieces: [String] = []
    var current = ""
    // Leading spaces belong to the first piece; the rest splits at spaces.
    let leading = line.prefix { $0 == " " }
    var words = line.dropFirst(leading.count).split(
      separator: " ", omittingEmptySubsequences: false
    )
    .map(String.init)
    current = String(leading)
    var atStart = true
    while !words.isEmpty {
      let word = words.removeFirst()
      // A run of spaces where a line breaks goes with the break.
      if atStart && word.isEmpty && !pieces.isEmpty { continue }
      let candidate = atStart ? current + word : current + " " + word
      if columns(candidate) <= width {
        current = candidate
        atStart = false
        continue
      }
      if atStart {
        // Not even one word fits: cut it at the width.
        var head = current
        var rest = Substring(word)
        while let next = rest.first, columns(head + String(next)) <= width {
          head.append(next)
          rest = rest.dropFirst()
        }
        if rest.count == word.count, let next = rest.first {
          // Guarantee progress even for a character wider than the room.
          head.append(next)
          rest = rest.dropFirst()
        }
        pieces.append(head)
        current = margin
        if !rest.isEmpty { words.insert(String(rest), at: 0) }
        continue
      }
      pieces.append(String(current.reversed().drop { $0 == " " }.reversed()))
      current = margin
      atStart = true
      words.insert(word, at: 0)
    }
    if !atStart || pieces.isEmpty { pieces.append(current) }
    return pieces
  }

  /// Every line of `text` that is wider than `width` wrapped, continuing
  /// under its value: the column after the first gap of two spaces within
  /// the line's first 24 columns ("Note      text" continues under "text"),
  /// else two more than the line's own indentation.
  public static func fit(_ text: String, width: Int = TerminalText.width) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false)
      .flatMap { wrap(String($0), indent: hangingIndent(String($0)), width: width) }
      .joined(separator: "\n")
  }

  static func hangingIndent(_ line: String) -> Int {
    let characters = Array(line.prefix(24))
    let leading = characters.prefix { $0 == " " }.count
    var index = leading
    while index + 1 < characters.count {
      if characters[index] == " " && characters[index + 1] == " " {
        var end = index
        while end < characters.count && characters[end] == " " { end += 1 }
        if end < characters.count { return end }
        break
      }
      index += 1
    }
    return leading + 2
  }
}
