import BalloonKit
import Testing

/// The error `body` throws, or nil when it returns.
func sourceError(_ body: () throws(SourceError) -> Void) -> SourceError? {
  do {
    try body()
    return nil
  } catch {
    return error
  }
}

/// The parsers with a pure `parse(bytes, path:)`.
enum Parser: String, Sendable, CaseIterable {
  case meminfo, vmstat, processStatus, vmmemctl, hvBalloon

  var path: String {
    switch self {
    case .meminfo: "/fixture/proc/meminfo"
    case .vmstat: "/fixture/proc/vmstat"
    case .processStatus: "/fixture/proc/812/status"
    case .vmmemctl: "/fixture/sys/kernel/debug/vmmemctl"
    case .hvBalloon: "/fixture/sys/kernel/debug/hv-balloon"
    }
  }

  func parse(_ bytes: [UInt8]) throws(SourceError) {
    switch self {
    case .meminfo: _ = try MeminfoReader.parse(bytes, path: path)
    case .vmstat: _ = try VmstatReader.parse(bytes, path: path, pageSize: 4096)
    case .processStatus: _ = try ProcessStatusReader.parse(bytes, path: path)
    case .vmmemctl: _ = try VmwBalloonReader.parse(bytes, path: path)
    case .hvBalloon: _ = try HypervBalloonReader.parse(bytes, path: path)
    }
  }
}

struct MalformedCase: Sendable, CustomTestStringConvertible {
  var parser: Parser
  var name: String
  var bytes: [UInt8]
  /// The line the error must name; nil for whole-file problems.
  var line: Int?
  /// Text the error's description must contain.
  var says: String

  init(_ parser: Parser, _ name: String, _ text: String, line: Int?, says: String) {
    self.parser = parser
    self.name = name
    self.bytes = Array(text.utf8)
    self.line = line
    self.says = says
  }

  var testDescription: String { "\(parser.rawValue): \(name)" }
}

private let huge = "99999999999999999999"  // > UInt64.max
private let max64 = "18446744073709551615"  // UInt64.max: overflows once scaled

@Suite("Malformed input: every parser names the file (and line)")
struct MalformedInputTests {
  static let cases: [MalformedCase] = [
    // /proc/meminfo
    .init(.meminfo, "empty", "", line: nil, says: "missing \"MemTotal\""),
    .init(
      .meminfo, "truncated mid-line", "MemTotal:        8139468 kB\nMemFree:         50",
      line: 2, says: "does not end in \" kB\""),
    .init(.meminfo, "non-numeric", "MemTotal:   12x4 kB\n", line: 1, says: "is not a number"),
    .init(.meminfo, "overflow", "MemTotal: \(huge) kB\n", line: 1, says: "overflows 64 bits"),
    .init(
      .meminfo, "overflow once in bytes", "MemTotal: \(max64) kB\n", line: 1, says: "overflows"),
    .init(.meminfo, "NUL byte", "MemTotal: 1 kB\nMem\0Free: 1 kB\n", line: 2, says: "NUL byte"),
    .init(.meminfo, "no colon", "MemTotal: 1 kB\nSwapTotal 0 kB\n", line: 2, says: "no \":\""),
    // /proc/vmstat
    .init(.vmstat, "empty", "", line: nil, says: "empty"),
    .init(
      .vmstat, "truncated mid-line", "nr_free_pages 880761\nnr_balloon_pa", line: 2,
      says: "no value"),
    .init(.vmstat, "non-numeric", "nr_balloon_pages abc\n", line: 1, says: "is not a number"),
    .init(.vmstat, "overflow", "balloon_inflate \(huge)\n", line: 1, says: "overflows 64 bits"),
    .init(
      .vmstat, "overflow once in bytes", "nr_free_pages 1\nnr_balloon_pages \(max64)\n", line: 2,
      says: "overflows"),
    .init(.vmstat, "NUL byte", "nr_balloon_pages 1\0\n", line: 1, says: "NUL byte"),
    // /proc/[pid]/status
    .init(.processStatus, "empty", "", line: nil, says: "empty"),
    .init(
      .processStatus, "truncated mid-line", "Name:\tinit\nPid:\t1\nVmLck:\t     10", line: 3,
      says: "does not end in \" kB\""),
    .init(.processStatus, "non-numeric", "Name:\tx\nPid:\tabc\n", line: 2, says: "is not a number"),
    .init(
      .processStatus, "overflow", "Name:\tx\nPid:\t7\nVmPin:\t\(huge) kB\n", line: 3,
      says: "overflows 64 bits"),
    .init(
      .processStatus, "overflow once in bytes", "Name:\tx\nPid:\t7\nVmLck:\t\(max64) kB\n", line: 3,
      says: "overflows"),
    .init(
      .processStatus, "pid out of range", "Name:\tx\nPid:\t4294967296\n", line: 2,
      says: "out of range"),
    .init(.processStatus, "NUL byte", "Name:\tin\0it\nPid:\t1\n", line: 1, says: "NUL byte"),
    .init(
      .processStatus, "no Pid line", "Name:\tinit\nState:\tS (sleeping)\n", line: nil,
      says: "missing \"Pid\""),
    .init(.processStatus, "no colon", "Name:\tinit\nPid 1\n", line: 2, says: "no \":\""),
    // debugfs vmmemctl
    .init(.vmmemctl, "empty", "", line: nil, says: "empty"),
    .init(
      .vmmemctl, "truncated mid-line", "target:               262144 pages\ncurr", line: 2,
      says: "no \":\""),
    .init(
      .vmmemctl, "truncated before current", "target:               262144 pages\n", line: nil,
      says: "missing \"current\""),
    .init(
      .vmmemctl, "only the GET_TARGET counter",
      "target:                 3601 (   0 failed)\ncurrent:                0 pages\n", line: nil,
      says: "missing \"target\""),
    .init(
      .vmmemctl, "non-numeric", "target:               abc pages\ncurrent: 0 pages\n", line: 1,
      says: "is not a page count"),
    .init(
      .vmmemctl, "trailing junk", "target                :  12x4\n", line: 1,
      says: "is not a page count"),
    .init(
      .vmmemctl, "overflow", "target                : \(huge)\ncurrent: 0\n", line: 1,
      says: "overflows 64 bits"),
    .init(
      .vmmemctl, "overflow once in bytes",
      "target                : 1\ncurrent               : \(max64)\n",
      line: 2, says: "overflows"),
    .init(
      .vmmemctl, "NUL byte", "target: 1 pages\ncur\0rent: 1 pages\n", line: 2, says: "NUL byte"),
    .init(
      .vmmemctl, "bad capabilities", "used capabilities     :             0xZZ\n", line: 1,
      says: "is not hexadecimal"),
    // debugfs hv-balloon
    .init(.hvBalloon, "empty", "", line: nil, says: "empty"),
    .init(
      .hvBalloon, "truncated mid-line", "page_size             : 4096\npages_ballo", line: 2,
      says: "no \":\""),
    .init(
      .hvBalloon, "no pages_ballooned", "page_size             : 4096\npages_added           : 0\n",
      line: nil, says: "missing \"pages_ballooned\""),
    .init(
      .hvBalloon, "non-numeric", "pages_ballooned       : lots\n", line: 1, says: "is not a number"),
    .init(
      .hvBalloon, "overflow", "pages_ballooned       : \(huge)\n", line: 1,
      says: "overflows 64 bits"),
    .init(
      .hvBalloon, "overflow once in bytes",
      "page_size             : 4096\npages_ballooned       : \(max64)\n",
      line: 2, says: "overflows"),
    .init(.hvBalloon, "page size 0", "page_size             : 0\n", line: 1, says: "is 0"),
    .init(
      .hvBalloon, "NUL byte", "pages_ballooned       : 1\0\n", line: 1, says: "NUL byte"),
    .init(
      .hvBalloon, "bad total_pages_commited",
      "pages_ballooned       : 1\ntotal_pages_commited  : -5\n", line: 2, says: "is not a number"),
  ]

  @Test("every parser has an empty, truncated, non-numeric, overflow and NUL case")
  func coverage() {
    for parser in Parser.allCases {
      let names = Set(Self.cases.filter { $0.parser == parser }.map(\.name))
      for required in ["empty", "truncated mid-line", "non-numeric", "overflow", "NUL byte"] {
        #expect(names.contains(required), "\(parser) lacks \(required)")
      }
    }
  }

  @Test("the error names the file, the line and the problem", arguments: cases)
  func malformed(_ c: MalformedCase) throws {
    let error = try #require(sourceError { () throws(SourceError) in try c.parser.parse(c.bytes) })
    #expect(error.path == c.parser.path)
    #expect(error.description.hasPrefix(c.parser.path + ": "))
    #expect(error.description.contains(c.says), "\(error)")
    if let line = c.line {
      #expect(error.description.hasPrefix("\(c.parser.path): line \(line): "), "\(error)")
    } else {
      #expect(!error.description.contains(": line "), "\(error)")
    }
  }
}
