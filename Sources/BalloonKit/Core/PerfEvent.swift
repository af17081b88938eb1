import CLinux
public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The `kprobe` PMU's type number, which `perf_event_open` takes as the
/// event type (docs/kernel-interfaces.md, "Kprobe perf events"). nil: the
/// kernel has no kprobe PMU (built without KPROBE_EVENTS or PERF_EVENTS).
public enum KprobePMU {
  public static let typePath = "/sys/bus/event_source/devices/kprobe/type"

  public static func type(root: Root) throws(SourceError) -> UInt32? {
    let path = root.path(typePath)
    guard let bytes = try SystemFile.read(path) else { return nil }
    return try parseType(bytes, path: path.string)
  }

  /// One decimal number and a newline, as sysfs writes it.
  static func parseType(_ bytes: [UInt8], path: String) throws(SourceError) -> UInt32 {
    guard bytes.last == 0x0A, bytes.count >= 2, bytes.count <= 11,
      bytes.dropLast().allSatisfy({ (0x30...0x39).contains($0) }),
      let value = UInt32(String(decoding: bytes.dropLast(), as: UTF8.self))
    else {
      throw SourceError.malformed(path, "not a PMU type number")
    }
    return value
  }
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6\n`): a
/// kprobe perf event with pid -1 counts on one CPU, so one is opened per CPU.
public enum OnlineCPUs {
  public static let path = "/sys/devices/system/cpu/online"
  /// More than any machine balloonctl runs on has (NR_CPUS is 8192 on Debian).
  static let limit: Int32 = 8192

  public static func read(root: Root) throws(SourceError) -> [Int32] {
    let path = root.path(Self.path)
    return try parse(SystemFile.readRequired(path), path: path.string)
  }

  static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> [Int32] {
    guard bytes.last == 0x0A else { throw SourceError.malformed(path, "no newline at the end") }
    var cpus: [Int32] = []
    for range in bytes.dropLast().split(separator: 0x2C, omittingEmptySubsequences: false) {
      let ends = range.split(separator: 0x2D, omittingEmptySubsequences: false)
      guard ends.count == 1 || ends.count == 2,
        let low = number(ends[ends.startIndex]), let high = number(ends[ends.endIndex - 1]),
        low <= high, cpus.last.map({ $0 < low }) ?? true
      else {
        throw SourceError.malformed(
          path, "\"\(String(decoding: range, as: UTF8.self))\" is not a CPU or an ascending range")
      }
      cpus.append(contentsOf: low...high)
    }
    return cpus
  }

  private static func number(_ digits: ArraySlice<UInt8>) -> Int32? {
    guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ (0x30...0x39).contains($0) }),
      let value = Int32(String(decoding: digits, as: UTF8.self)), value < limit
    else { return nil }
    return value
  }
}

/// What the ring of a kprobe event holds that balloonctl reads: samples
/// (one per hit of the probed function) and the kernel's count of records
/// it had to drop because the ring was full.
public enum PerfRecord: Sendable, Equatable {
  /// A hit: the CLOCK_MONOTONIC time in nanoseconds and the CPU.
  case sample(timeNanoseconds: UInt64, cpu: UInt32)
  case lost(count: UInt64)
  /// Another record type (throttling notices); skipped by its size.
  case other(type: UInt32)

  static let headerSize = 8
  static let recordLost: UInt32 = 2
  static let recordSample: UInt32 = 9
  /// PERF_SAMPLE_IP | TID | TIME | CPU: the layout `parse` reads.
  static let sampleType: UInt64 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 7
  /// The header, then ip (u64), pid and tid (u32 each), time (u64), cpu and a reserved u32.
  static let sampleSize = headerSize + 32
  static let lostSize = headerSize + 16

  /// Every record in `bytes`, the ring's contents from tail to head (the
  /// layout of linux/perf_event.h's `perf_event_header` and PERF_RECORD_*,
  /// little-endian). Anything that does not fit that layout is an error
  /// naming `source`, never a trap or a guess.
  public static func parse(_ bytes: [UInt8], source: String) throws(SourceError) -> [PerfRecord] {
    var records: [PerfRecord] = []
    var offset = 0
    while offset < bytes.count {
      func bad(_ what: String) -> SourceError {
        .malformed(source, "record at byte \(offset): \(what)")
      }
      guard bytes.count - offset >= headerSize else { throw bad("truncated header") }
      let type = u32(bytes, offset)
      let size = Int(u16(bytes, offset + 6))
      guard size >= headerSize, size % 8 == 0 else { throw bad("size \(size) is not a record's") }
      guard size <= bytes.count - offset else {
        throw bad("size \(size) runs past the \(bytes.count - offset) bytes left")
      }
      switch type {
      case recordSample:
        guard size == sampleSize else {
          throw bad("sample of \(size) bytes, expected \(sampleSize)")
        }
        records.append(
          .sample(timeNanoseconds: u64(bytes, offset + 24), cpu: u32(bytes, offset + 32)))
      case recordLost:
        guard size == lostSize else {
          throw bad("lost record of \(size) bytes, expected \(lostSize)")
        }
        records.append(.lost(count: u64(bytes, offset + 16)))
      default:
        records.append(.other(type: type))
      }
      offset += size
    }
    return records
  }

  private static func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 {
    UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
  }

  private static func u32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
  }

  private static func u64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) }
  }
}

/// One kprobe perf event on one CPU: the fd `poll()` watches and its mmap'd
/// ring (one header page and `dataPages` data pages). No BPF: the kernel
/// writes a sample per hit, and the daemon reads it to know it was woken.
public final class KprobeEvent {
  public let fileDescriptor: Int32
  public let cpu: Int32
  public let symbol: KernelSymbol
  private let ring: UnsafeMutableRawPointer
  private let mappedSize: Int
  private let dataOffset: Int
  private let dataSize: Int

  /// 1 + 8 pages per CPU, as measured (docs/kernel-interfaces.md): far more
  /// than the few samples a target change writes between two reads.
  public static let dataPages = 8

  /// Opens, maps and enables the probe on `symbol`'s entry. The errno of
  /// the step that failed (EPERM under lockdown=confidentiality or without
  /// CAP_PERFMON, ENOENT for a symbol the kernel cannot probe).
  public static func open(symbol: KernelSymbol, pmuType: UInt32, cpu: Int32) throws(Errno)
    -> KprobeEvent
  {
    var attr = perf_event_attr()
    attr.type = pmuType
    attr.size = UInt32(MemoryLayout<perf_event_attr>.size)
    attr.config = 0  // bit 0 would make it a return probe
    attr.sample_period = 1
    attr.sample_type = PerfRecord.sampleType
    attr.wakeup_events = 1
    attr.disabled = 1
    attr.use_clockid = 1
    attr.clockid = CLOCK_MONOTONIC
    // The kernel copies the name (config1 = its address, config2 = offset 0)
    // during the call; module symbols resolve by name.
    let fd = symbol.name.withCString { name -> Int32 in
      attr.config1 = UInt64(UInt(bitPattern: name))
      attr.config2 = 0
      return balloonctl_perf_event_open(&attr, -1, cpu, -1, UInt(PERF_FLAG_FD_CLOEXEC))
    }
    guard fd >= 0 else { throw Errno(rawValue: errno) }
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    let size = (1 + dataPages) * pageSize
    guard let ring = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
      ring != MAP_FAILED
    else {
      let error = Errno(rawValue: errno)
      Glibc.close(fd)
      throw error
    }
    let page = ring.assumingMemoryBound(to: perf_event_mmap_page.self).pointee
    // data_offset and data_size are 0 on kernels before 4.1: the data then
    // starts at the second page.
    let offset = page.data_offset == 0 ? pageSize : Int(page.data_offset)
    let dataSize = page.data_size == 0 ? dataPages * pageSize : Int(page.data_size)
    guard offset + dataSize <= size, dataSize > 0, dataSize & (dataSize - 1) == 0 else {
      munmap(ring, size)
      Glibc.close(fd)
      throw .invalidArgument
    }
    let event = KprobeEvent(
      fd: fd, cpu: cpu, symbol: symbol, ring: ring, mappedSize: size, dataOffset: offset,
      dataSize: dataSize)
    guard balloonctl_perf_event_enable(fd) == 0 else { throw Errno(rawValue: errno) }
    return event
  }

  private init(
    fd: Int32, cpu: Int32, symbol: KernelSymbol, ring: UnsafeMutableRawPointer, mappedSize: Int,
    dataOffset: Int, dataSize: Int
  ) {
    fileDescriptor = fd
    self.cpu = cpu
    self.symbol = symbol
    self.ring = ring
    self.mappedSize = mappedSize
    self.dataOffset = dataOffset
    self.dataSize = dataSize
  }

  deinit {
    munmap(ring, mappedSize)
    Glibc.close(fileDescriptor)
  }

  private var head: UnsafeMutablePointer<UInt64> {
    (ring + MemoryLayout<perf_event_mmap_page>.offset(of: \.data_head)!)
      .assumingMemoryBound(to: UInt64.self)
  }

  private var tail: UnsafeMutablePointer<UInt64> {
    (ring + MemoryLayout<perf_event_mmap_page>.offset(of: \.data_tail)!)
      .assumingMemoryBound(to: UInt64.self)
  }

  /// Everything written since the last drain, parsed; the space is handed
  /// back to the kernel (data_tail advanced) even when it did not parse.
  public func drain() throws(SourceError) -> [PerfRecord] {
    let headValue = balloonctl_load_acquire_u64(
      UnsafeRawPointer(head).assumingMemoryBound(to: CUnsignedLongLong.self))
    let tailValue = UInt64(tail.pointee)
    let source = "kprobe \(symbol.name) on CPU \(cpu)"
    defer {
      balloonctl_store_release_u64(
        UnsafeMutableRawPointer(tail).assumingMemoryBound(to: CUnsignedLongLong.self),
        CUnsignedLongLong(headValue))
    }
    guard headValue >= tailValue, headValue - tailValue <= UInt64(dataSize) else {
      throw SourceError.malformed(
        source,
        "ring head \(headValue) and tail \(tailValue) are more than its \(dataSize) bytes apart")
    }
    let count = Int(headValue - tailValue)
    if count == 0 { return [] }
    var bytes = [UInt8](repeating: 0, count: count)
    let data = ring + dataOffset
    let start = Int(tailValue % UInt64(dataSize))
    let first = min(count, dataSize - start)
    bytes.withUnsafeMutableBytes { out in
      out.baseAddress!.copyMemory(from: data + start, byteCount: first)
      if first < count {
        (out.baseAddress! + first).copyMemory(from: data, byteCount: count - first)
      }
    }
    return try PerfRecord.parse(bytes, source: source)
  }
}
