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
    processes: [ProcessPins] = [], fraction: Double
  ) -> GuestSnapshot {
    var notes: [String] = []
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
      processes: processes, notes: notes)
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
  /// One full, one-shot reading of `devices` under `root`.
  public static func read(root: Root, devices: [BalloonDevice], options: SnapshotOptions)
    throws(SourceError) -> GuestSnapshot
  {
    let meminfo = try MeminfoReader.read(from: root)
    let vmstat = try VmstatReader.read(from: root)
    var balloons: [BalloonReading] = []
    for device in devices {
      balloons.append(
        try BalloonReaders.read(
          device, root: root, meminfo: meminfo, vmstat: vmstat, probe: options.probe))
    }
    var processes: [ProcessPins] = []
    var vmPinSum: UInt64?
    if options.scanProcesses {
      let all = try ProcessStatusReader.scan(root: root)
      vmPinSum = all.reduce(0) { $0 +| $1.pinnedBytes }
      processes = rankByPinned(all)
    }
    return GuestSnapshot.assemble(
      balloons: balloons, meminfo: meminfo, vmstat: vmstat, vmPinSumBytes: vmPinSum,
      processes: processes, fraction: options.fraction)
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
