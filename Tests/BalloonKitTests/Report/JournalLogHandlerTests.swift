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
}
