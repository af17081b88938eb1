import CLinux
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The guard must outlive the pressure it guards against. Measured in the
/// QEMU suite: a balloon outrunning the interval drove a 1 GiB guest into OOM
/// within 0.7 s, and the OOM killer took the daemon right after the pinned
/// workload. So `run` does what earlyoom does, and a little more.
public enum SelfProtection {
  /// The OOM killer's adjustment `run` gives itself: low enough that the
  /// workload goes first, not -1000, so a runaway daemon can still be killed
  /// (the unit sets the same with OOMScoreAdjust=).
  public static let oomScoreAdjust = -900

  /// Sets our own `oom_score_adj`; nil when applied, else why not (lowering
  /// needs CAP_SYS_RESOURCE).
  public static func lowerOOMScore() -> String? {
    do {
      let fd = try FileDescriptor.open(
        "/proc/self/oom_score_adj", .writeOnly, options: .closeOnExec, retryOnInterrupt: true)
      try fd.closeAfter { _ = try fd.writeAll("\(oomScoreAdjust)".utf8) }
      return nil
    } catch {
      return "\(error)"
    }
  }

  /// What `lockWorkingSet` did.
  public struct LockOutcome: Sendable {
    /// File-backed mappings whose start-up pages were dropped, and their size.
    public var mappingsDropped = 0
    public var bytesDropped: UInt64 = 0
    /// Why start-up pages were not dropped (/proc/self/smaps unreadable); the
    /// lock is still taken.
    public var dropProblem: String?
    /// mlockall needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK.
    public var lockProblem: String?
  }

  /// Locks the pages the ticks use, not the pages start-up used. Called once,
  /// after the first tick and before the loop's:
  ///
  /// 1. `malloc_trim(0)` gives back the heap start-up freed.
  /// 2. Every file-backed mapping's pages are unmapped from this process:
  ///    code and read-only data (argument parsing, settings, libudev set-up,
  ///    the first tick) with `MADV_DONTNEED`, which for a mapping holding no
  ///    private copies only drops page-table entries (the next touch maps
  ///    the same page-cache page again, so no content changes), and writable
  ///    ones (`.data`, whose written pages are private copies) with
  ///    `MADV_PAGEOUT`, which leaves private copies alone without swap.
  /// 3. Our executable's pages that no process maps any more are dropped from
  ///    the page cache (`POSIX_FADV_DONTNEED`). On a fault the kernel maps
  ///    the cached pages around the faulting one too (64 KiB), so a cache
  ///    still full of start-up's pages would be mapped, and locked, again.
  ///    Only this binary's file, whose next reader just reads it from disk.
  /// 4. `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: only pages faulted
  ///    in from now on are locked, i.e. what the ticks touch (plus rarer
  ///    paths, rediscovery or the process scan, when they first run, and the
  ///    64 KiB the kernel maps around each faulting page). Under pressure a
  ///    tick then never waits for its own code to be read back in. The locked
  ///    pages count in `Mlocked`, and so in the guest's pinned memory, as they
  ///    should. BENCHMARKS.md (section 3) measures them and the alternatives.
  public static func lockWorkingSet() -> LockOutcome {
    drop(writable: true, evictExecutable: true)
  }

  /// Locks again what the ticks touch now, after the loop's first ticks:
  /// the first ones also run code once (the first wait, the first vmstat
  /// read, first-use set-up of the runtime), whose 64 KiB fault-around
  /// windows `lockWorkingSet` then kept locked for good (BENCHMARKS.md,
  /// section 3). `munlockall`, then the read-only file mappings' pages are
  /// unmapped again and locked on fault as before. Nothing is evicted from
  /// the page cache and writable mappings are left alone, so the next tick
  /// maps its pages back from the cache (minor faults, no I/O); they are
  /// unlocked only between this call and that tick, in the same wake-up.
  public static func relockWorkingSet() -> LockOutcome {
    _ = munlockall()
    return drop(writable: false, evictExecutable: false)
  }

  private static func drop(writable dropWritable: Bool, evictExecutable evict: Bool)
    -> LockOutcome
  {
    var outcome = LockOutcome()
    _ = malloc_trim(0)
    do {
      let smaps = try SystemFile.readRequired("/proc/self/smaps")
      for mapping in fileMappings(smaps: smaps) {
        if !dropWritable && (mapping.writable || mapping.anonymousKiB != 0) { continue }
        let address = UnsafeMutableRawPointer(bitPattern: mapping.range.lowerBound)
        let length = Int(mapping.range.count)
        // MADV_PAGEOUT (Linux >= 5.4) is 21; the constant does not import
        // into Swift. Older kernels refuse it (EINVAL): the pages stay.
        let advice = mapping.writable || mapping.anonymousKiB != 0 ? 21 : MADV_DONTNEED
        if madvise(address, length, advice) == 0 {
          outcome.mappingsDropped += 1
          outcome.bytesDropped += UInt64(length)
        }
      }
      if evict { evictExecutable() }
    } catch {
      outcome.dropProblem = "\(error)"
    }
    // MCL_ONFAULT (Linux >= 4.4) is 4; the constant does not import into Swift.
    let onFault: Int32 = 4
    if mlockall(Int32(MCL_CURRENT) | Int32(MCL_FUTURE) | onFault) != 0 {
      outcome.lockProblem = "\(Errno(rawValue: errno))"
    }
    return outcome
  }

  private static func evictExecutable() {
    let fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    close(fd)
  }

  /// One file-backed mapping of /proc/PID/smaps.
  public struct FileMapping: Equatable, Sendable {
    public var range: Range<UInt>
    public var writable: Bool
    public var inode: UInt64
    /// Private copies (COW) inside it; their content is not the file's.
    public var anonymousKiB: UInt64

    public init(range: Range<UInt>, writable: Bool, inode: UInt64, anonymousKiB: UInt64) {
      self.range = range
      self.writable = writable
      self.inode = inode
      self.anonymousKiB = anonymousKiB
    }
  }

  /// The file-backed mappings in `/proc/PID/smaps` text: each mapping is a
  /// header line `start-end perms offset major:minor inode path` (numbers in
  /// hex but the inode; the path may be absent) followed by `Key: value kB`
  /// lines. File-backed means a non-zero inode (anonymous memory, the heap, the stack and the vDSO have
  /// 0). A mapping whose header or Anonymous line does not parse is left
  /// out: this only chooses what to drop, and what is left out stays resident.
  public static func fileMappings(smaps: [UInt8]) -> [FileMapping] {
    var mappings: [FileMapping] = []
    var current: FileMapping?
    var anonymousSeen = false
    func finish() {
      if let current, anonymousSeen { mappings.append(current) }
      current = nil
      anonymousSeen = false
    }
    for line in smaps.split(separator: UInt8(ascii: "\n")) {
      guard let first = line.first else { continue }
      if hexDigit(first) != nil, line.contains(UInt8(ascii: "-")) {
        finish()
        current = header(line)
        continue
      }
      let key = Array("Anonymous:".utf8)
      guard current != nil, line.starts(with: key) else { continue }
      let fields = line.dropFirst(key.count).split(separator: UInt8(ascii: " "))
      guard fields.count == 2, fields[1].elementsEqual("kB".utf8), let kib = decimal(fields[0])
      else {
        current = nil
        continue
      }
      current?.anonymousKiB = kib
      anonymousSeen = true
    }
    finish()
    return mappings
  }

  /// A header line, or nil when it is not file-backed or does not parse.
  private static func header(_ line: ArraySlice<UInt8>) -> FileMapping? {
    let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 5)
    guard fields.count >= 5, fields[1].count == 4, let inode = decimal(fields[4]), inode != 0
    else { return nil }
    let bounds = fields[0].split(separator: UInt8(ascii: "-"))
    guard bounds.count == 2, let start = hex(bounds[0]), let end = hex(bounds[1]), start < end
    else { return nil }
    return FileMapping(
      range: start..<end, writable: fields[1].dropFirst().first == UInt8(ascii: "w"),
      inode: inode, anonymousKiB: 0)
  }

  private static func hexDigit(_ digit: UInt8) -> UInt8? {
    switch digit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
    default: return nil
    }
  }

  private static func hex(_ digits: ArraySlice<UInt8>) -> UInt? {
    guard !digits.isEmpty, digits.count <= 16 else { return nil }
    var value: UInt = 0
    for digit in digits {
      guard let nibble = hexDigit(digit) else { return nil }
      value = value << 4 | UInt(nibble)
    }
    return value
  }

  private static func decimal(_ digits: ArraySlice<UInt8>) -> UInt64? {
    guard !digits.isEmpty, digits.count <= 19 else { return nil }
    var value: UInt64 = 0
    for digit in digits {
      guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
      value = value * 10 + UInt64(digit - UInt8(ascii: "0"))
    }
    return value
  }
}
