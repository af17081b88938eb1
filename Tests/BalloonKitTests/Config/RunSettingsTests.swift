import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The settings file parser (`RunSettings.parse`): the subset of sh it accepts,
/// and a one-line error naming the file and line for everything else.
@Suite("settings file")
struct RunSettingsTests {
  static let path = "/etc/default/balloonctl"

  /// The example installed as /etc/default/balloonctl.
  static let shippedFile = FilePath(#filePath).removingLastComponent().removingLastComponent()
    .removingLastComponent().removingLastComponent().appending("udev")
    .appending("balloonctl.default")

  static func shipped() throws -> [UInt8] { try SystemFile.readRequired(shippedFile) }

  /// LF line ends to CRLF, as a Windows editor saves the file.
  static func crlf(_ bytes: [UInt8]) -> [UInt8] {
    bytes.flatMap { $0 == 0x0A ? [0x0D, 0x0A] : [$0] }
  }

  static func parse(_ bytes: [UInt8]) throws(SourceError) -> RunSettings {
    try RunSettings.parse(bytes, path: path)
  }

  // MARK: the shipped file

  @Test("the shipped file selects enforce and nothing else")
  func shippedFile() throws {
    var expected = RunSettings()
    expected.mode = .enforce
    #expect(try Self.parse(Self.shipped()) == expected)
  }

  @Test("the shipped file saved with CRLF line ends still selects enforce")
  func shippedCRLF() throws {
    let bytes = Self.crlf(try Self.shipped())
    #expect(bytes.contains(0x0D))
    #expect(try Self.parse(bytes).mode == .enforce)
  }

  @Test("the shipped file with a UTF-8 byte order mark, and with CRLF too, selects enforce")
  func shippedBOM() throws {
    let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
    #expect(try Self.parse(bom + Self.shipped()).mode == .enforce)
    #expect(try Self.parse(bom + Self.crlf(try Self.shipped())).mode == .enforce)
  }

  @Test("every documented default in the shipped file, uncommented, is accepted")
  func shippedDefaults() throws {
    let text = String(decoding: try Self.shipped(), as: UTF8.self)
    let uncommented = text.split(separator: "\n", omittingEmptySubsequences: false).map {
      $0.hasPrefix("#BALLOONCTL_") ? $0.dropFirst() : $0
    }.joined(separator: "\n")
    let settings = try Self.parse(Array(uncommented.utf8))
    #expect(settings.mode == .enforce)
    #expect(settings.intervalSeconds == 1)
    #expect(settings.fraction == 0.65)
    #expect(settings.levers == [.virtio, .vmware, .xen])
    #expect(settings.onExit == .hold)
    #expect(settings.metricsFile == "/var/lib/prometheus/node-exporter/balloonctl.prom")
  }

  // MARK: good files

  struct Good: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    var expected: RunSettings
    var testDescription: String { name }

    init(_ name: String, _ text: String, _ fill: (inout RunSettings) -> Void) {
      self.init(name, Array(text.utf8), fill)
    }

    init(_ name: String, _ bytes: [UInt8], _ fill: (inout RunSettings) -> Void) {
      self.name = name
      self.bytes = bytes
      var expected = RunSettings()
      fill(&expected)
      self.expected = expected
    }
  }

  static let goods: [Good] = [
    Good("CRLF line ends", "# guard\r\nBALLOONCTL_MODE=enforce\r\nBALLOONCTL_INTERVAL=2\r\n") {
      $0.mode = .enforce
      $0.intervalSeconds = 2
    },
    Good(
      "a byte order mark at the start",
      [0xEF, 0xBB, 0xBF] + Array("BALLOONCTL_MODE=enforce\n".utf8)
    ) {
      $0.mode = .enforce
    },
    Good("export", "export BALLOONCTL_MODE=enforce\nexport\t BALLOONCTL_ON_EXIT=readmit\n") {
      $0.mode = .enforce
      $0.onExit = .readmit
    },
    Good(
      "inline comments after a blank",
      "BALLOONCTL_MODE=enforce   # the service acts\nBALLOONCTL_LOG_LEVEL='info'\t#x\nBALLOONCTL_MARGIN=0.1 #\n"
    ) {
      $0.mode = .enforce
      $0.logLevel = "info"
      $0.margin = 0.1
    },
    Good(
      "single and double quotes",
      "BALLOONCTL_MODE=\"report\"\nBALLOONCTL_LEVERS='virtio, xen'\nBALLOONCTL_METRICS_FILE=\"/run/balloonctl/a #1.prom\"\nBALLOONCTL_VMW_SHRINKER='yes'\n"
    ) {
      $0.mode = .report
      $0.levers = [.virtio, .xen]
      $0.metricsFile = "/run/balloonctl/a #1.prom"
      $0.vmwShrinker = true
    },
    Good("blank lines with spaces and tabs", "\n   \n\t\n  BALLOONCTL_MODE=report  \n \t \n\n") {
      $0.mode = .report
    },
    Good(
      "the value 0.1, .5 and 1",
      "BALLOONCTL_INTERVAL=0.1\nBALLOONCTL_MARGIN=.5\nBALLOONCTL_FRACTION=1\n"
    ) {
      $0.intervalSeconds = 0.1
      $0.margin = 0.5
      $0.fraction = 1
    },
    Good(
      "a commented-out key, then the same key set once",
      "#BALLOONCTL_MODE=report\n# BALLOONCTL_MODE=report\nBALLOONCTL_MODE=enforce\n"
    ) {
      $0.mode = .enforce
    },
    Good("no line end at the end", "BALLOONCTL_MODE=enforce") { $0.mode = .enforce },
    Good("no line end at the end, after CR", "BALLOONCTL_MODE=enforce\r") { $0.mode = .enforce },
    Good("an empty file", "") { _ in },
    Good("non-ASCII text in comments", "# Grenze × 0,65 — café\nBALLOONCTL_MODE=report # ✓\n") {
      $0.mode = .report
    },
    Good(
      "# inside an unquoted value is literal, as in sh",
      "BALLOONCTL_METRICS_FILE=/run/balloonctl/a#b.prom\n"
    ) {
      $0.metricsFile = "/run/balloonctl/a#b.prom"
    },
  ]

  @Test("accepted", arguments: goods)
  func accepted(_ good: Good) throws {
    #expect(try Self.parse(good.bytes) == good.expected)
  }

  // MARK: bad files

  struct Bad: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    /// The exact start of the error: `<path>: line N: ...`.
    var says: String
    var testDescription: String { name }

    init(_ name: String, _ text: String, says: String) {
      self.init(name, Array(text.utf8), says: says)
    }

    init(_ name: String, _ bytes: [UInt8], says: String) {
      self.name = name
      self.bytes = bytes
      self.says = RunSettingsTests.path + ": " + says
    }
  }

  static let bads: [Bad] = [
    Bad(
      "a key set twice", "BALLOONCTL_MODE=report\n# later\nBALLOONCTL_MODE=enforce\n",
      says: "line 3: BALLOONCTL_MODE is set again (first set on line 1)"),
    Bad(
      "a key set twice, CRLF", "BALLOONCTL_MODE=report\r\n\r\nexport BALLOONCTL_MODE=report\r\n",
      says: "line 3: BALLOONCTL_MODE is set again (first set on line 1)"),
    Bad(
      "a byte order mark in the middle", "# settings\n\u{FEFF}BALLOONCTL_MODE=enforce\n",
      says:
        "line 2: character \\u{FEFF} (byte order mark) at column 1; keys and values are plain ASCII: \"\\u{FEFF}BALLOONCTL_MODE=enforce\""
    ),
    Bad(
      "a second byte order mark at the start",
      [0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF] + Array("BALLOONCTL_MODE=enforce".utf8),
      says: "line 1: character \\u{FEFF} (byte order mark) at column 1"),
    Bad(
      "a zero-width space in a key", "BALLOONCTL\u{200B}_MODE=enforce\n",
      says: "line 1: character \\u{200B} (zero-width space) at column 11"),
    Bad(
      "a non-ASCII letter in a key", "BALLOONCTL_MODÉ=enforce\n",
      says: "line 1: character \\u{C9} at column 15"),
    Bad(
      "a no-break space in a value", "BALLOONCTL_MODE=enforce\u{A0}\n",
      says: "line 1: character \\u{A0} (no-break space) at column 24"),
    Bad(
      "invalid UTF-8, even in a comment",
      Array("BALLOONCTL_MODE=enforce\n# caf".utf8) + [0xE9, 0x0A],
      says: "line 2: not valid UTF-8 (byte 0xE9 at column 6)"),
    Bad(
      "a NUL byte", Array("\nBALLOONCTL_MODE=".utf8) + [0] + Array("enforce".utf8),
      says: "line 2: control character \\u{0} (NUL) at column 17"),
    Bad(
      "old Mac line ends (a lone CR): the whole file is one comment line",
      "# guard\rBALLOONCTL_MODE=enforce\r",
      says: "line 1: control character \\r (a carriage return not before a line feed) at column 8"),
    Bad(
      "a line separator inside a comment", "# guard\u{2028}BALLOONCTL_MODE=enforce\n",
      says: "line 1: character \\u{2028} (line separator) at column 8"),
    Bad(
      "a bidirectional override inside a comment", "# \u{202E}\nBALLOONCTL_MODE=report\n",
      says: "line 1: character \\u{202E} at column 3"),
    Bad(
      "an unterminated double quote", "BALLOONCTL_MODE=\"enforce\n",
      says: "line 1: BALLOONCTL_MODE: the quote \" at column 17 is not closed on this line"),
    Bad(
      "an unterminated single quote", "BALLOONCTL_LEVERS='virtio,\nxen'\n",
      says: "line 1: BALLOONCTL_LEVERS: the quote ' at column 19 is not closed on this line"),
    Bad(
      "a blank inside an unquoted value", "BALLOONCTL_LEVERS=virtio, xen\n",
      says: "line 1: BALLOONCTL_LEVERS: text after the value at column 27"),
    Bad(
      "two assignments on a line", "BALLOONCTL_MODE=report BALLOONCTL_INTERVAL=2\n",
      says: "line 1: BALLOONCTL_MODE: text after the value at column 24"),
    Bad(
      "text after the closing quote", "BALLOONCTL_MODE=\"report\"x\n",
      says: "line 1: BALLOONCTL_MODE: text after the closing quote at column 25"),
    Bad(
      "a # right after the closing quote (sh reads it as part of the value)",
      "BALLOONCTL_MODE='report'# x\n",
      says: "line 1: BALLOONCTL_MODE: text after the closing quote at column 25"),
    Bad(
      "a quote inside an unquoted value", "BALLOONCTL_MODE=en\"force\"\n",
      says: "line 1: BALLOONCTL_MODE: a quote inside a value (column 19)"),
    Bad(
      "blanks around =", "BALLOONCTL_MODE = enforce\n",
      says: "line 1: no blank allowed before \"=\""),
    Bad(
      "no =", "\n\nBALLOONCTL_MODE\n",
      says: "line 3: expected KEY=VALUE, got \"BALLOONCTL_MODE\""),
    Bad("export without an assignment", "export\n", says: "line 1: expected KEY=VALUE"),
    Bad(
      "a name starting with a digit", "1BALLOONCTL_MODE=report\n",
      says: "line 1: 1BALLOONCTL_MODE is not a name"),
    Bad(
      "an unknown key", "BALLOONCTL_MOD=enforce\n",
      says: "line 1: unknown setting BALLOONCTL_MOD (known: BALLOONCTL_MODE,"),
    Bad(
      "a lower-case key", "balloonctl_mode=enforce\n",
      says: "line 1: unknown setting balloonctl_mode"),
    Bad(
      "an unquoted $", "BALLOONCTL_METRICS_FILE=$HOME/b.prom\n",
      says: "line 1: BALLOONCTL_METRICS_FILE: \"$\" (column 25) is special to sh"),
    Bad(
      "an unquoted ~", "BALLOONCTL_METRICS_FILE=~/b.prom\n",
      says: "line 1: BALLOONCTL_METRICS_FILE: \"~\" (column 25) is special to sh"),
    Bad(
      "$ inside double quotes", "BALLOONCTL_METRICS_FILE=\"$HOME/b.prom\"\n",
      says: "line 1: BALLOONCTL_METRICS_FILE: \"$\" inside double quotes is special to sh"),
    Bad(
      "a tab inside quotes", "BALLOONCTL_LEVERS='virtio,\txen'\n",
      says: "line 1: control character \\t at column 27"),
    Bad(
      "an empty value", "BALLOONCTL_MODE=\n",
      says: "line 1: BALLOONCTL_MODE=\"\": expected enforce or report"),
    Bad(
      "an empty value before a comment", "BALLOONCTL_MODE= # enforce\n",
      says: "line 1: BALLOONCTL_MODE=\"\": expected enforce or report"),
    Bad(
      "# without a blank before it is part of the value", "BALLOONCTL_MODE=report#x\n",
      says: "line 1: BALLOONCTL_MODE=\"report#x\": expected enforce or report"),
    Bad(
      "an interval below 0.1", "BALLOONCTL_INTERVAL=0.05\n",
      says: "line 1: BALLOONCTL_INTERVAL=\"0.05\": expected seconds between ticks"),
    Bad(
      "an exponent", "BALLOONCTL_INTERVAL=1e1\n",
      says: "line 1: BALLOONCTL_INTERVAL=\"1e1\": expected seconds between ticks"),
    Bad(
      "nan", "BALLOONCTL_FRACTION=nan\n",
      says: "line 1: BALLOONCTL_FRACTION=\"nan\": expected limit fraction"),
    Bad(
      "a negative margin", "BALLOONCTL_MARGIN=-0.1\n",
      says: "line 1: BALLOONCTL_MARGIN=\"-0.1\": expected re-admit margin"),
    Bad(
      "a relative metrics path", "BALLOONCTL_METRICS_FILE='b.prom'\n",
      says: "line 1: BALLOONCTL_METRICS_FILE=\"b.prom\": expected an absolute path"),
    Bad(
      "an escaped quote shows escaped", "BALLOONCTL_MODE='\"enforce\"'\n",
      says: "line 1: BALLOONCTL_MODE=\"\\\"enforce\\\"\": expected enforce or report"),
  ]

  @Test("refused with the file and line", arguments: bads)
  func refused(_ bad: Bad) {
    let error = sourceError { () throws(SourceError) in _ = try Self.parse(bad.bytes) }
    let text = error.map { "\($0)" } ?? "accepted"
    #expect(text.hasPrefix(bad.says), "\(text)")
    #expect(!text.contains("\n"), "\(text)")
    #expect(!text.contains("\u{FEFF}") && !text.contains("\r"), "an invisible character shown raw")
  }

  // MARK: never a trap, never a hang

  @Test("load: a FIFO or a directory is refused at once (opening a FIFO would block)")
  func loadNonRegular() throws {
    let tree = try TemporaryTree()
    let fifo = tree.path("/fifo")
    #expect(makeFIFO(fifo))
    let error = sourceError { () throws(SourceError) in _ = try RunSettings.load(FilePath(fifo)) }
    #expect(error == SourceError(path: fifo, .wrongType("is a FIFO; expected a regular file")))
    try tree.mkdir("/directory")
    let directory = tree.path("/directory")
    let notFile = sourceError { () throws(SourceError) in
      _ = try RunSettings.load(FilePath(directory))
    }
    #expect(notFile == SourceError(path: directory, .wrongType("is a directory; expected a regular file")))
  }

  @Test("arbitrary bytes give settings or an error, in bounded time")
  func arbitraryBytes() throws {
    var generator = SplitMix64(seed: 0x5E77_1265)
    let alphabet =
      Array("BALLOONCTL_MODE=enforce report 0.1 '\"#$ \t\r\nexport".utf8)
      + [0x00, 0x7F, 0x80, 0xBF, 0xC3, 0xE2, 0xEF, 0xBB, 0xF0, 0xFF]
    let shipped = try Self.shipped()
    for round in 0..<1000 {
      var bytes: [UInt8]
      if round % 2 == 0 {
        let count = Int(generator.next() % 96)
        bytes = (0..<count).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
      } else {
        bytes = shipped
        for _ in 0..<4 {
          let at = Int(generator.next() % UInt64(bytes.count))
          bytes[at] = UInt8(truncatingIfNeeded: generator.next())
        }
      }
      _ = sourceError { () throws(SourceError) in _ = try Self.parse(bytes) }
    }
    // Large inputs: one long line, many lines, one long quote.
    for bytes in [
      [UInt8](repeating: UInt8(ascii: "="), count: 1 << 18),
      [UInt8](repeating: 0x0A, count: 1 << 18),
      Array("BALLOONCTL_MODE='".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 18),
      Array("BALLOONCTL_INTERVAL=".utf8) + [UInt8](repeating: UInt8(ascii: "1"), count: 1 << 16),
    ] {
      _ = sourceError { () throws(SourceError) in _ = try Self.parse(bytes) }
    }
  }
}

/// A small seeded generator, so a failure repeats.
struct SplitMix64 {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// Creates a FIFO at `path` (for tests that put one where a file belongs).
func makeFIFO(_ path: String) -> Bool {
  mkfifo(path, 0o600) == 0
}
