import BalloonKit
import Logging
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Log lines under systemd: the sd-daemon priority prefix reaches journald,
/// so `journalctl -p warning` finds warnings (without it every line is info).
@Suite("journal log lines")
struct JournalLogHandlerTests {
  @Test(
    "swift-log levels map to sd-daemon priorities",
    arguments: [
      (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3),
      (.critical, 2),
    ])
  func priorities(_ level: Logger.Level, _ priority: Int) {
    #expect(JournalLogHandler.priority(level) == priority)
  }

  @Test("a line: <N>, the message, logfmt metadata sorted and quoted where needed; one line")
  func lineFormat() {
    let line = JournalLogHandler.line(
      level: .warning, message: "release virtio0",
      metadata: [
        "reason": "target 665.6 MiB exceeds the limit", "balloon": "virtio0",
        "quote": "say \"hi\"", "empty": "", "eq": "a=b",
      ])
    #expect(
      line
        == "<4>release virtio0 balloon=virtio0 empty=\"\" eq=\"a=b\" quote=\"say \\\"hi\\\"\" reason=\"target 665.6 MiB exceeds the limit\"\n"
    )
    let multi = JournalLogHandler.line(level: .error, message: "a\nb", metadata: ["k": "x\ny"])
    #expect(multi == "<3>a b k=\"x\\ny\"\n")
  }

  @Test("JOURNAL_STREAM must name the fd's own device and inode")
  func streamMatch() throws {
    var first: [Int32] = [0, 0]
    var second: [Int32] = [0, 0]
    #expect(pipe(&first) == 0 && pipe(&second) == 0)
    defer { (first + second).forEach { close($0) } }
    var info = stat()
    #expect(fstat(first[1], &info) == 0)
    let stream = "\(info.st_dev):\(info.st_ino)"
    #expect(JournalLogHandler.matches(stream, fd: first[1]))
    #expect(!JournalLogHandler.matches(stream, fd: second[1]), "another pipe")
    for bad in ["", ":", "\(info.st_dev)", "\(info.st_dev):", "x:\(info.st_ino)", "\(stream):1"] {
      #expect(!JournalLogHandler.matches(bad, fd: first[1]), "\(bad)")
    }
  }

  @Test("the daemon's lines carry the priority when stderr is the journal, and not otherwise")
  func daemonLines() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    let root = guest.tree.base.string
    let limit = try #require(
      try JSONParser.parse(Balloonctl.run(["status", "--json", "--root", root]).stdout)["limit"]?[
        "bytes"]?.uint64)
    try guest.setVirtioBalloon(bytes: limit + (16 << 20))
    let arguments = ["run", "--once", "--mode", "report", "--root", root]
    let journal = try Balloonctl.run(arguments, journalStream: true)
    #expect(journal.status == 0, "\(journal.stderr)")
    let line = try #require(
      journal.stderr.split(separator: "\n").first { $0.contains("would release virtio0") })
    #expect(line.hasPrefix("<5>would release virtio0 "), "\(line)")
    #expect(line.contains(" balloon=virtio0"))
    #expect(line.contains(" reason=\""), "reason is quoted: \(line)")
    let plain = try Balloonctl.run(arguments)
    let plainLine = try #require(
      plain.stderr.split(separator: "\n").first { $0.contains("would release virtio0") })
    #expect(!plainLine.hasPrefix("<"), "no prefix outside the journal: \(plainLine)")
  }

  @Test("metadata values read back with a logfmt parser: blanks, quotes, =, newlines, controls")
  func logfmtRoundTrip() throws {
    let values: Logger.Metadata = [
      "blank": "a b", "quote": "say \"hi\"", "equals": "k=v", "newline": "one\ntwo",
      "tab": "a\tb", "backslash": "C:\\dir", "empty": "", "cr": "x\ry", "bell": "\u{7}",
      "unicode": "ünï", "plain": "virtio0", "all": " \"=\n\\ ",
    ]
    let line = JournalLogHandler.line(level: .warning, message: "lever failed", metadata: values)
    #expect(line.hasPrefix("<4>") && line.hasSuffix("\n"))
    #expect(line.filter { $0 == "\n" }.count == 1, "one line: \(line)")
    let pairs = try #require(Logfmt.parse(String(line.dropFirst(3).dropLast())), "\(line)")
    // The message's words are bare keys; every metadata key comes back with its value.
    #expect(pairs.filter { $0.value == nil }.map(\.key) == ["lever", "failed"])
    var parsed: [String: String] = [:]
    for pair in pairs { if let value = pair.value { parsed[pair.key] = value } }
    #expect(parsed == values.mapValues { "\($0)" })
  }

  @Test("the daemon's journal line parses as logfmt, its reason whole")
  func daemonLineIsLogfmt() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    let root = guest.tree.base.string
    let limit = try #require(
      try JSONParser.parse(Balloonctl.run(["status", "--json", "--root", root]).stdout)["limit"]?[
        "bytes"]?.uint64)
    try guest.setVirtioBalloon(bytes: limit + (16 << 20))
    let result = try Balloonctl.run(
      ["run", "--once", "--mode", "report", "--root", root], journalStream: true)
    #expect(result.status == 0, "\(result.stderr)")
    let line = try #require(
      result.stderr.split(separator: "\n").first { $0.contains("would release virtio0") })
    let pairs = try #require(Logfmt.parse(String(line.dropFirst(3))), "\(line)")
    let parsed = Dictionary(pairs.compactMap { p in p.value.map { (p.key, $0) } }) { $1 }
    #expect(parsed["balloon"] == "virtio0")
    #expect(parsed["action"] == "release")
    let reason = try #require(parsed["reason"])
    #expect(reason.contains(" ") && !reason.contains("\""), "\(reason)")
  }
}

/// logfmt as Go's go-logfmt reads it: `key`, `key=value`, `key="quoted"` with
/// `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX` escapes, separated by blanks.
/// nil for anything else (an unterminated quote, an unknown escape, `=` with
/// no key).
enum Logfmt {
  static func parse(_ text: String) -> [(key: String, value: String?)]? {
    var pairs: [(key: String, value: String?)] = []
    var scalars = Array(text.unicodeScalars)[...]
    func skipBlanks() { while let c = scalars.first, c == " " { scalars.removeFirst() } }
    skipBlanks()
    while !scalars.isEmpty {
      var key = ""
      while let c = scalars.first, c != " ", c != "=" {
        if c == "\"" || c.value < 0x20 { return nil }
        key.unicodeScalars.append(scalars.removeFirst())
      }
      if key.isEmpty { return nil }
      guard scalars.first == "=" else {
        pairs.append((key, nil))
        skipBlanks()
        continue
      }
      scalars.removeFirst()
      var value = ""
      if scalars.first == "\"" {
        scalars.removeFirst()
        var closed = false
        while let c = scalars.popFirst() {
          if c == "\"" {
            closed = true
            break
          }
          guard c == "\\" else {
            if c.value < 0x20 { return nil }
            value.unicodeScalars.append(c)
            continue
          }
          switch scalars.popFirst() {
          case "\"": value += "\""
          case "\\": value += "\\"
          case "n": value += "\n"
          case "r": value += "\r"
          case "t": value += "\t"
          case "u":
            let hex = String(String.UnicodeScalarView(scalars.prefix(4)))
            guard hex.count == 4, let code = UInt32(hex, radix: 16), let u = Unicode.Scalar(code)
            else { return nil }
            scalars.removeFirst(4)
            value.unicodeScalars.append(u)
          default: return nil
          }
        }
        if !closed { return nil }
        if let c = scalars.first, c != " " { return nil }
      } else {
        while let c = scalars.first, c != " " {
          if c == "\"" || c == "=" || c.value < 0x20 { return nil }
          value.unicodeScalars.append(scalars.removeFirst())
        }
      }
      pairs.append((key, value))
      skipBlanks()
    }
    return pairs
  }
}
