/// Everything `status` shows and the policy decides on: the balloons' sizes,
/// the memory the balloon cannot take, and the limit. Built in one direction:
/// read → account → limit.
public struct GuestSnapshot: Sendable, Equatable {
  public var balloons: [BalloonReading]
  public var meminfo: Meminfo
  public var vmstat: Vmstat
  public var pinned: PinnedMemory
  public var limit: BalloonLimit
  /// Processes holding locked or pinned memory, largest first (VmLck + VmPin);
  /// empty when processes were not scanned.
  public var processes: [ProcessPins]
  /// How much of Σ VmPin could be read; nil when processes were not scanned.
  public var vmPinCoverage: VmPinCoverage?
  /// Caveats worth telling the user (e.g. a size that could not be known).
  public var notes: [String]

  /// Memory the guest would have without any balloon.
  public var guestBytes: UInt64 { limit.guestBytes }

  /// A balloon is over the limit when its present size or its known target
  /// exceeds it. Each balloon is held to the limit on its own.
  public func isOverLimit(_ balloon: BalloonReading) -> Bool {
    if let current = balloon.effectiveCurrentBytes, current > limit.bytes { return true }
    if let target = balloon.target.bytes, target > limit.bytes { return true }
    return false
  }

  public var overLimit: Bool { balloons.contains(where: isOverLimit) }

  /// Applies the accounting and the limit to readings already taken. Pure.
  public static func assemble(
    balloons: [BalloonReading], meminfo: Meminfo, vmstat: Vmstat, vmPinSumBytes: UInt64?,
    vmPinCoverage: VmPinCoverage? = nil, processes: [ProcessPins] = [], fraction: Double
  ) -> GuestSnapshot {
    var notes: [String] = []
    if let note = vmPinCoverage?.note { notes.append(note) }
    let pinned = PinnedAccounting.account(
      meminfo: meminfo, vmstat: vmstat, vmPinSumBytes: vmPinSumBytes)
    var guest = meminfo.memTotal
    for balloon in balloons where balloon.device.removesFromMemTotal {
      if let current = balloon.effectiveCurrentBytes {
        guest = guest +| current
      } else {
        notes.append(
          "guest size may be understated: \(balloon.device.name) takes its pages out of MemTotal and its size is unknown"
        )
      }
    }
    let limit = BalloonLimit.compute(
      guestBytes: guest, pinnedBytes: pinned.totalBytes, swapTotalBytes: meminfo.swapTotal,
      fraction: fraction)
    return GuestSnapshot(
      balloons: balloons, meminfo: meminfo, vmstat: vmstat, pinned: pinned, limit: limit,
      processes: processes, vmPinCoverage: vmPinCoverage, notes: notes)
  }
}

/// How much of Σ VmPin is known. A `/proc/<pid>/status` that cannot be read
/// (hidepid=1 for a non-root user) or parsed leaves that process's VmPin
/// unknown; the answer is then partial, never a failure, and `dma_pinned`
/// (which is at least the FOLL_PIN count) stays a floor.
public struct VmPinCoverage: Sendable, Equatable {
  /// Processes whose status could not be read or parsed.
  public var unreadableProcesses: Int
  /// Of those, how many count with the VmPin last read from them (the
  /// daemon keeps it, so a file turning unreadable never raises the limit).
  public var lastKnownProcesses: Int
  /// The first unreadable file and why, or why the whole scan failed.
  public var firstError: SourceError?
  /// /proc could not be listed at all: Σ VmPin is from an earlier scan, or unknown.
  public var scanFailed: Bool

  public init(
    unreadableProcesses: Int = 0, lastKnownProcesses: Int = 0, firstError: SourceError? = nil,
    scanFailed: Bool = false
  ) {
    self.unreadableProcesses = unreadableProcesses
    self.lastKnownProcesses = lastKnownProcesses
    self.firstError = firstError
    self.scanFailed = scanFailed
  }

  /// What one scan could not read (no last-known values: `status`, `limit`).
  public init(_ scan: ProcessScan) {
    self.init(
      unreadableProcesses: scan.unreadable.count, firstError: scan.unreadable.first?.error)
  }

  public var complete: Bool { unreadableProcesses == 0 && !scanFailed }

  /// The caveat shown with a partial answer; nil when complete.
  public var note: String? {
    if scanFailed {
      let why = firstError.map { " (\($0))" } ?? ""
      return "Σ VmPin not refreshed: the process scan failed\(why); dma_pinned may be understated"
    }
    guard unreadableProcesses > 0 else { return nil }
    let count =
      unreadableProcesses == 1 ? "1 process's VmPin" : "\(unreadableProcesses) processes' VmPin"
    let kept =
      lastKnownProcesses > 0 ? "; \(lastKnownProcesses) counted with their last-known VmPin" : ""
    let first = firstError.map { " (first: \($0))" } ?? ""
    return
      "Σ VmPin is partial: \(count) unknown\(first)\(kept); dma_pinned may be understated"
  }
}

/// How to take a snapshot.
public struct SnapshotOptions: Sendable {
  public var fraction: Double
  /// Reads the virtio target from the device; nil leaves it unknown.
  public var probe: (any VirtioConfigProbe)?
  /// Scan /proc/[pid]/status for Σ VmPin and the per-process list.
  public var scanProcesses: Bool

  public init(
    fraction: Double = BalloonLimit.defaultFraction, probe: (any VirtioConfigProbe)? = nil,
    scanProcesses: Bool = true
  ) {
    self.fraction = fraction
    self.probe = probe
    self.scanProcesses = scanProcesses
  }
}

public enum GuestSnapshotReader {
  /// One full, one-shot reading under `root`: the daemon's tick reader,
  /// strict (any discovered balloon or /proc that cannot be read fails it,
  /// naming the file), with the processes ranked for display.
  public static func read(root: Root, options: SnapshotOptions) throws(SourceError)
    -> GuestSnapshot
  {
    try reader(root: root, options: options, devices: nil).read(now: 0, strict: true).snapshot
  }

  /// The same, of `devices` as already discovered.
  public static func read(root: Root, devices: [BalloonDevice], options: SnapshotOptions)
    throws(SourceError) -> GuestSnapshot
  {
    try reader(root: root, options: options, devices: devices).read(now: 0, strict: true)
      .snapshot
  }

  static func reader(root: Root, options: SnapshotOptions, devices: [BalloonDevice]?)
    -> TickReader
  {
    TickReader(
      root: root,
      options: TickReader.Options(
        fraction: options.fraction, probe: options.probe, scanProcesses: options.scanProcesses,
        rankProcesses: true),
      devices: devices)
  }

  /// Processes with any locked or pinned memory, largest first; ties by pid.
  public static func rankByPinned(_ processes: [ProcessPins]) -> [ProcessPins] {
    processes
      .filter { $0.lockedBytes > 0 || $0.pinnedBytes > 0 }
      .sorted {
        let a = $0.lockedBytes +| $0.pinnedBytes
        let b = $1.lockedBytes +| $1.pinnedBytes
        return a != b ? a > b : $0.pid < $1.pid
      }
  }
}
