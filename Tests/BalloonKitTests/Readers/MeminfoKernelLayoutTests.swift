import SystemPackage
import Testing

@testable import BalloonKit

/// The tick's one-pass meminfo parser (`parseKernelLayout`) against the
/// strict one (`parseStrictly`): on every fixture, on this machine's own
/// /proc/meminfo and on altered copies, the public `parse` gives the same
/// answer or the same error as the strict parser, and the one-pass parser
/// answers only when the strict parser accepts, with the same values.
@Suite("MeminfoReader: the one-pass parser agrees with the strict one")
struct MeminfoKernelLayoutTests {
  static let path = "/proc/meminfo"

  /// The strict parser's answer, or its error's text.
  static func strict(_ bytes: [UInt8]) -> Result<Meminfo, SourceError> {
    bytes.withUnsafeBufferPointer { buffer in
      Result { () throws(SourceError) -> Meminfo in
        try MeminfoReader.parseStrictly(buffer, path: path)
      }
    }
  }

  static func layout(_ bytes: [UInt8]) -> Meminfo? {
    bytes.withUnsafeBufferPointer { MeminfoReader.parseKernelLayout($0) }
  }

  static func parse(_ bytes: [UInt8]) -> Result<Meminfo, SourceError> {
    Result { () throws(SourceError) -> Meminfo in try MeminfoReader.parse(bytes, path: path) }
  }

  /// Checks one input; returns whether the one-pass parser answered.
  @discardableResult
  static func agree(_ bytes: [UInt8], _ label: @autoclosure () -> String) -> Bool {
    let strict = strict(bytes)
    let fast = layout(bytes)
    switch (strict, fast) {
    case (.success(let expected), let fast?):
      #expect(fast == expected, "\(label())")
    case (.failure(let error), let fast?):
      Issue.record("\(label()): one-pass parser answered \(fast), strict says \(error)")
    default:
      break
    }
    switch (parse(bytes), strict) {
    case (.success(let a), .success(let b)): #expect(a == b, "\(label())")
    case (.failure(let a), .failure(let b)):
      #expect(a.description == b.description, "\(label())")
    case (let a, let b): Issue.record("\(label()): parse \(a) but strict \(b)")
    }
    return fast != nil
  }

  @Test("the required mask is the required keys", arguments: [0])
  func requiredMask(_: Int) {
    var mask: UInt32 = 0
    for field in MeminfoReader.Field.required { mask |= 1 << UInt32(field.rawValue) }
    #expect(MeminfoReader.Field.requiredMask == mask)
  }

  @Test("every key is matched by the one-pass matcher as by the table", arguments: [0])
  func keys(_: Int) {
    for field in MeminfoReader.Field.allCases {
      let key = Array(field.name.utf8)
      let found = key.withUnsafeBufferPointer {
        MeminfoReader.Field.known($0.baseAddress!, count: $0.count)
      }
      #expect(found == field)
      // One byte off is no key.
      var other = key
      other[other.count - 1] ^= 0x20
      let none = other.withUnsafeBufferPointer {
        MeminfoReader.Field.known($0.baseAddress!, count: $0.count)
      }
      #expect(none == nil, "\(field.name)")
    }
  }

  @Test("real files: the one-pass parser answers, as the strict one", arguments: Fixtures.allTrees)
  func fixtures(_ tree: String) throws {
    let bytes = try Fixtures.bytes(tree, Self.path)
    #expect(Self.agree(bytes, tree))
    #expect(try Self.strict(bytes).get().memTotal > 0)
  }

  @Test("this machine's /proc/meminfo", arguments: [0])
  func live(_: Int) throws {
    let bytes = try SystemFile.readRequired("/proc/meminfo")
    #expect(Self.agree(bytes, "live"))
  }

  /// Every byte of two real files replaced by each of a few bytes that
  /// matter to the layout, and deleted: the one-pass parser never accepts
  /// what the strict one refuses and never reads another value.
  @Test("altered copies", arguments: ["virtio-6.18", "pre-4.16"])
  func altered(_ tree: String) throws {
    let original = try Fixtures.bytes(tree, Self.path)
    let replacements: [UInt8] = [0x20, 0x09, 0x0a, 0x3a, 0x30, 0x39, 0x78, 0x00, 0x42]
    var answered = 0
    var refused = 0
    for offset in original.indices {
      for byte in replacements where original[offset] != byte {
        var copy = original
        copy[offset] = byte
        if Self.agree(copy, "\(tree) [\(offset)] = \(byte)") { answered += 1 } else { refused += 1 }
      }
      var shorter = original
      shorter.remove(at: offset)
      if Self.agree(shorter, "\(tree) without [\(offset)]") { answered += 1 } else { refused += 1 }
    }
    // Both outcomes occur: altered values are read, broken lines refused.
    #expect(answered > 100)
    #expect(refused > 100)
  }

  @Test("kernel-shaped problems are left to the strict parser")
  func problems() throws {
    let original = try Fixtures.bytes("virtio-6.18", Self.path)
    let text = String(decoding: original, as: UTF8.self)
    let cases: [(String, String)] = [
      ("repeated key", text + "Mlocked:         526336 kB\n"),
      ("cut off", String(text.dropLast())),
      ("missing required key", text.replacingOccurrences(of: "Shmem:", with: "Shmex:")),
      (
        "no unit",
        text.replacingOccurrences(of: "Percpu:             2712 kB", with: "Percpu: 2712")
      ),
      (
        "overflow in kB",
        text.replacingOccurrences(
          of: "Percpu:             2712 kB", with: "Percpu: 18014398509481984 kB")
      ),
      ("no colon", text + "garbage\n"),
      ("empty", ""),
    ]
    for (label, input) in cases {
      #expect(!Self.agree(Array(input.utf8), label), "\(label)")
      #expect(throws: SourceError.self, "\(label)") {
        try MeminfoReader.parse(Array(input.utf8), path: Self.path)
      }
    }
    // What the strict parser accepts beyond the kernel's layout is still read.
    let blank = text + "   \n"
    #expect(Self.agree(Array(blank.utf8), "blank line"))
    let unknown = text + "Zswap:                 0 kB\n"
    #expect(Self.agree(Array(unknown.utf8), "unknown key"))
  }
}

@Suite("KeptOpenFile: one read when a short read is the end")
struct KeptOpenFileShortReadTests {
  static func bytes(_ file: KeptOpenFile) throws -> [UInt8] {
    #expect(try file.refresh())
    return try file.withBytes { Array($0) }
  }

  @Test("a file larger than the buffer is read whole, a smaller one in one read", arguments: [0])
  func whole(_: Int) throws {
    let tree = try TemporaryTree()
    let big = (0..<10_000).map { UInt8(0x41 + $0 % 26) }
    try tree.write("/proc/meminfo", big)
    let file = KeptOpenFile(tree.root.path("/proc/meminfo"), capacity: 4096, shortReadIsEnd: true)
    #expect(try Self.bytes(file) == big)
    // Re-read after the file shrank: the short read ends it, nothing stale is kept.
    try tree.write("/proc/meminfo", Array(big.prefix(100)))
    #expect(try Self.bytes(file) == Array(big.prefix(100)))
    // The live file: one read gives what a read to the end gives.
    let live = KeptOpenFile("/proc/meminfo", capacity: 8192, shortReadIsEnd: true)
    let text = String(decoding: try Self.bytes(live), as: UTF8.self)
    #expect(text.hasPrefix("MemTotal:") && text.hasSuffix(" kB\n"))
    #expect(try MeminfoReader.parse(try Self.bytes(live), path: "/proc/meminfo").memTotal > 0)
  }
}

extension String {
  fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
    var parts = self.split(separator: target, omittingEmptySubsequences: false).map(String.init)
    guard parts.count > 1 else { return self }
    let first = parts.removeFirst()
    return parts.reduce(first) { $0 + replacement + $1 }
  }
}
