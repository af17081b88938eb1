import SystemPackage

/// One process's locked and pinned memory, from `/proc/[pid]/status`
/// (fs/proc/task_mmu.c `task_mem()`, fs/proc/array.c).
public struct ProcessPins: Sendable, Equatable {
  /// `Pid:` (the thread-group leader's pid when read from `/proc/[pid]`).
  public var pid: Int32
  /// `Name:` (the command name, as the kernel escapes it).
  public var name: String
  /// `VmLck:` (`mm->locked_vm`: VM_LOCKED mappings, plus vfio type1 DMA
  /// pins), in bytes; 0 when absent (kernel threads have no mm).
  public var lockedBytes: UInt64
  /// `VmPin:` (`mm->pinned_vm`, ≥ 3.2: RDMA, io_uring fixed buffers,
  /// iommufd), in bytes; 0 when absent.
  public var pinnedBytes: UInt64

  public init(pid: Int32, name: String, lockedBytes: UInt64 = 0, pinnedBytes: UInt64 = 0) {
    self.pid = pid
    self.name = name
    self.lockedBytes = lockedBytes
    self.pinnedBytes = pinnedBytes
  }
}

public enum ProcessStatusReader {
  /// Parses one `status` file: `Key:\tvalue` lines. `Name:` and `Pid:` are
  /// required; `VmLck:`/`VmPin:` end in ` kB`. Other keys are not parsed.
  /// One of these keys twice, or a last line without its newline (a file cut
  /// off), is an error rather than a guess.
  public static func parse(_ bytes: [UInt8], path: String) throws(SourceError) -> ProcessPins {
    if bytes.isEmpty { throw .malformed(path, "empty") }
    return try bytes.withUnsafeBufferPointer { buffer throws(SourceError) in
      var name: String?
      var pid: Int32?
      var locked: UInt64 = 0
      var pinned: UInt64 = 0
      // The line each key was first seen on, for the duplicate check.
      var nameLine = 0
      var pidLine = 0
      var lockedLine = 0
      var pinnedLine = 0
      func once(_ seen: inout Int, _ key: String, _ number: Int) throws(SourceError) {
        if seen != 0 {
          throw .malformed(path, line: number, "\"\(key)\" appears again (first on line \(seen))")
        }
        seen = number
      }
      try KernelText.forEachLine(buffer, path: path) { number, line throws(SourceError) in
        if line.isEmpty { return }
        guard let colon = KernelText.firstIndex(of: 0x3a, in: buffer, line) else {
          throw .malformed(path, line: number, "no \":\" in \(KernelText.quoted(buffer, line))")
        }
        let key = line.lowerBound..<colon
        if KernelText.equals(buffer, key, "Name") {
          try once(&nameLine, "Name", number)
          // The kernel prints "Name:\t" then the escaped comm; keep the rest as is.
          var start = colon + 1
          if start < line.upperBound, buffer[start] == 0x09 { start += 1 }
          name = KernelText.string(buffer, start..<line.upperBound)
        } else if KernelText.equals(buffer, key, "Pid") {
          try once(&pidLine, "Pid", number)
          let value = KernelText.trimmed(buffer, (colon + 1)..<line.upperBound)
          let parsed = try KernelField.decimal(buffer, value, key: "Pid", path: path, line: number)
          guard let fits = Int32(exactly: parsed) else {
            throw .malformed(path, line: number, "\"Pid\" value \(parsed) is out of range")
          }
          pid = fits
        } else if KernelText.equals(buffer, key, "VmLck") {
          try once(&lockedLine, "VmLck", number)
          locked = try KernelField.kilobytes(
            buffer, KernelText.trimmed(buffer, (colon + 1)..<line.upperBound), key: "VmLck",
            path: path, line: number)
        } else if KernelText.equals(buffer, key, "VmPin") {
          try once(&pinnedLine, "VmPin", number)
          pinned = try KernelField.kilobytes(
            buffer, KernelText.trimmed(buffer, (colon + 1)..<line.upperBound), key: "VmPin",
            path: path, line: number)
        }
      }
      guard let name else { throw SourceError(path: path, .missingField("Name")) }
      guard let pid else { throw SourceError(path: path, .missingField("Pid")) }
      try KernelText.requireFinalNewline(buffer, path: path)
      return ProcessPins(pid: pid, name: name, lockedBytes: locked, pinnedBytes: pinned)
    }
  }

  /// Every process under `root/proc`: the numeric directories, which are the
  /// thread-group leaders (threads are not listed, only reachable by tid).
  /// A process that exits between the listing and the read (ENOENT, ESRCH)
  /// is skipped. A `status` that cannot be read (EACCES under hidepid=1) or
  /// is malformed does not fail the scan: it is listed in `unreadable`, so
  /// the caller knows Σ VmPin is partial. Only an unlistable `/proc` throws.
  /// Sorted by pid.
  public static func scan(root: Root) throws(SourceError) -> ProcessScan {
    let proc = root.path("/proc")
    guard let names = try SystemFile.list(proc) else {
      throw SourceError(path: proc.string, .unreadable(.noSuchFileOrDirectory))
    }
    var scan = ProcessScan()
    for name in names where isPID(name) {
      let file = root.path("/proc/\(name)/status")
      do {
        guard let bytes = try SystemFile.read(file) else { continue }  // exited
        scan.processes.append(try parse(bytes, path: file.string))
      } catch {
        if case .unreadable(let errno) = error.problem, errno == .noSuchProcess { continue }
        scan.unreadable.append(ProcessScan.Unreadable(pid: Int32(name), error: error))
      }
    }
    scan.processes.sort { $0.pid < $1.pid }
    scan.unreadable.sort { ($0.pid ?? .max) < ($1.pid ?? .max) }
    return scan
  }

  static func isPID(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
  }
}

/// One scan of `/proc/[pid]/status`: the processes that could be read, and
/// the ones that could not (their VmPin is unknown, so Σ VmPin is a floor).
public struct ProcessScan: Sendable, Equatable {
  public struct Unreadable: Sendable, Equatable {
    /// From the directory name; nil if it does not fit a pid.
    public var pid: Int32?
    /// Names the file (`/proc/<pid>/status`) and what went wrong.
    public var error: SourceError

    public init(pid: Int32?, error: SourceError) {
      self.pid = pid
      self.error = error
    }
  }

  public var processes: [ProcessPins]
  public var unreadable: [Unreadable]

  public init(processes: [ProcessPins] = [], unreadable: [Unreadable] = []) {
    self.processes = processes
    self.unreadable = unreadable
  }

  /// Σ VmPin over the processes that could be read.
  public var vmPinSumBytes: UInt64 { processes.reduce(0) { $0 +| $1.pinnedBytes } }
}
