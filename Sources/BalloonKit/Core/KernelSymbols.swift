import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A function the kernel can probe by name: its name and the module that
/// holds it (nil: the kernel image itself).
public struct KernelSymbol: Sendable, Hashable, CustomStringConvertible {
  public var name: String
  public var module: String?

  public init(_ name: String, module: String?) {
    self.name = name
    self.module = module
  }

  public var description: String { module.map { "\(name) [\($0)]" } ?? name }
}

/// Finds named functions in `/proc/kallsyms` (docs/kernel-interfaces.md,
/// "Kernel symbols"), checking every line's format on the way: one
/// `ADDRESS TYPE NAME` line per symbol, with `\t[MODULE]` after a module's.
/// The file is several MiB, so it is read in chunks and only the wanted
/// names are kept.
public struct KallsymsScanner {
  public static let path = "/proc/kallsyms"
  /// Far above any kernel's list (a Debian kernel with its modules loaded
  /// writes about 6 MiB); a larger one is not the kernel's file.
  public static let sizeLimit = 128 << 20
  /// KSYM_NAME_LEN is 512 since 6.1 (128 before); a longer name is not one.
  static let nameLimit = 512

  let wanted: Set<String>
  let path: String
  /// Each wanted symbol found, in file order (a name may appear more than once).
  public private(set) var found: [KernelSymbol] = []
  public private(set) var lineCount = 0
  private var carry: [UInt8] = []
  private var size = 0

  public init(wanted: Set<String>, path: String = KallsymsScanner.path) {
    self.wanted = wanted
    self.path = path
  }

  /// Reads the list under `root` and returns the wanted symbols found.
  public static func find(_ names: Set<String>, root: Root) throws(SourceError) -> [KernelSymbol] {
    let filePath = root.path(path)
    var scanner = KallsymsScanner(wanted: names, path: filePath.string)
    guard let fd = try SystemFile.openForReading(filePath) else {
      throw SourceError(path: filePath.string, .unreadable(.noSuchFileOrDirectory))
    }
    defer { try? fd.close() }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let count: Int
      do {
        count = try buffer.withUnsafeMutableBytes { try fd.read(into: $0, retryOnInterrupt: true) }
      } catch let error as Errno {
        throw SourceError(path: filePath.string, .unreadable(error))
      } catch {
        throw SourceError(path: filePath.string, .unreadable(.ioError))
      }
      if count == 0 { break }
      try buffer.withUnsafeBufferPointer { bytes throws(SourceError) in
        try scanner.feed(UnsafeBufferPointer(rebasing: bytes[0..<count]))
      }
    }
    try scanner.finish()
    return scanner.found
  }

  /// Takes the next bytes of the file (any split, even inside a line).
  public mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>) throws(SourceError) {
    size += bytes.count
    guard size <= Self.sizeLimit else {
      throw SourceError(path: path, .tooLarge(limit: Self.sizeLimit))
    }
    var start = 0
    while let end = bytes[start...].firstIndex(of: 0x0A) {
      if carry.isEmpty {
        try line(UnsafeBufferPointer(rebasing: bytes[start..<end]))
      } else {
        carry.append(contentsOf: bytes[start..<end])
        let whole = carry
        carry.removeAll(keepingCapacity: true)
        try whole.withUnsafeBufferPointer { line throws(SourceError) in try self.line(line) }
      }
      start = end + 1
    }
    carry.append(contentsOf: bytes[start...])
    guard carry.count <= 64 + Self.nameLimit * 2 else {
      throw SourceError.malformed(path, line: lineCount + 1, "line too long for a symbol")
    }
  }

  /// The end of the file: it ends with a newline, and lists something.
  public mutating func finish() throws(SourceError) {
    guard carry.isEmpty else {
      throw SourceError.malformed(path, line: lineCount + 1, "last line has no newline")
    }
    guard lineCount > 0 else { throw SourceError.malformed(path, "lists no symbols") }
  }

  /// `ffffffff81d38f70 t virtballoon_changed` or
  /// `ffffffffc06e1230 t virtballoon_changed\t[virtio_balloon]`; the address
  /// is all zeros when kptr_restrict hides it.
  private mutating func line(_ line: UnsafeBufferPointer<UInt8>) throws(SourceError) {
    lineCount += 1
    let number = lineCount
    func bad(_ what: String) -> SourceError {
      .malformed(path, line: number, "\(what) (expected \"ADDRESS TYPE NAME\")")
    }
    var index = 0
    while index < line.count, Self.isHex(line[index]) { index += 1 }
    guard index > 0, index <= 16 else { throw bad("no hexadecimal address") }
    guard index + 3 <= line.count, line[index] == 0x20, Self.isLetter(line[index + 1]),
      line[index + 2] == 0x20
    else { throw bad("no one-letter symbol type after the address") }
    let nameStart = index + 3
    var nameEnd = nameStart
    while nameEnd < line.count, line[nameEnd] > 0x20, line[nameEnd] < 0x7F { nameEnd += 1 }
    guard nameEnd > nameStart, nameEnd - nameStart <= Self.nameLimit else {
      throw bad("no symbol name")
    }
    var module: UnsafeBufferPointer<UInt8>?
    if nameEnd < line.count {
      // "\t[" MODULE "]" and nothing after it.
      guard line[nameEnd] == 0x09, nameEnd + 3 < line.count, line[nameEnd + 1] == 0x5B,
        line[line.count - 1] == 0x5D
      else { throw bad("unexpected text after the name") }
      let moduleBytes = UnsafeBufferPointer(rebasing: line[(nameEnd + 2)..<(line.count - 1)])
      guard moduleBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x5B && $0 != 0x5D }) else {
        throw bad("module name is not one word")
      }
      module = moduleBytes
    }
    let name = String(
      decoding: UnsafeBufferPointer(rebasing: line[nameStart..<nameEnd]), as: UTF8.self)
    if wanted.contains(name) {
      found.append(KernelSymbol(name, module: module.map { String(decoding: $0, as: UTF8.self) }))
    }
  }

  private static func isHex(_ byte: UInt8) -> Bool {
    (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte)
  }

  private static func isLetter(_ byte: UInt8) -> Bool {
    (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
  }
}
