import Synchronization
import SystemPackage

/// The Xen balloon's sysfs attributes (drivers/xen/xen-balloon.c), in bytes.
/// Xen's own numbers are about the domain's *reservation*; balloonctl's
/// `current`/`target` are the balloon's size, derived here.
///
/// Two views of the balloon. The kernel's, `low + high`, counts on 6.1 the
/// pages between `memory` and `maxmem` that were never populated (a domU
/// booted with memory=512,maxmem=1024 starts with `low_kb=524288`), while 7.3
/// starts at 0 and grows by hotplug (docs/kernel-interfaces.md §3.1). The
/// toolstack's, which balloonctl uses: the balloon is what the toolstack
/// took back from what it granted, `granted − current`, where `granted` is
/// the largest reservation seen (target or current; see `XenGrant`). The
/// same VM then reads the same on both kernels.
public struct XenBalloonStats: Sendable, Equatable {
  /// `target_kb`: the target of the total reservation (not of the balloon).
  public var reservationTargetBytes: UInt64
  /// `info/current_kb`: the current reservation.
  public var currentReservationBytes: UInt64
  /// `info/low_kb`, `info/high_kb`: low- and high-memory pages in the balloon.
  public var lowBytes: UInt64
  public var highBytes: UInt64

  /// The largest reservation the toolstack granted that was seen before this
  /// reading (nil: none remembered).
  public var rememberedGrantBytes: UInt64?

  public init(
    reservationTargetBytes: UInt64, currentReservationBytes: UInt64, lowBytes: UInt64,
    highBytes: UInt64, rememberedGrantBytes: UInt64? = nil
  ) {
    self.reservationTargetBytes = reservationTargetBytes
    self.currentReservationBytes = currentReservationBytes
    self.lowBytes = lowBytes
    self.highBytes = highBytes
    self.rememberedGrantBytes = rememberedGrantBytes
  }

  /// The kernel's count of ballooned pages: `low + high`. `read` guarantees
  /// the sums below fit; a value built by hand that does not saturates at
  /// `UInt64.max`.
  public var balloonBytes: UInt64 { lowBytes.saturatingAdd(highBytes) }

  /// The balloon size the target implies in the kernel's view: every page
  /// the domain has (reservation + balloon) minus the reservation target,
  /// clamped at 0.
  public var balloonTargetBytes: UInt64 {
    let total = currentReservationBytes.saturatingAdd(balloonBytes)
    return total > reservationTargetBytes ? total - reservationTargetBytes : 0
  }

  /// The reservation the toolstack granted: the largest of the target, the
  /// current reservation and the one remembered. balloonctl writes
  /// `target_kb` only at or below it, so its own writes never raise it.
  public var grantedBytes: UInt64 {
    max(reservationTargetBytes, currentReservationBytes, rememberedGrantBytes ?? 0)
  }

  /// The balloon as the toolstack sees it: what it took back from its grant.
  public var grantedBalloonBytes: UInt64 {
    grantedBytes - min(grantedBytes, currentReservationBytes)
  }

  /// The balloon size the target implies against the grant.
  public var grantedBalloonTargetBytes: UInt64 {
    grantedBytes - min(grantedBytes, reservationTargetBytes)
  }
}

/// The largest reservation granted per Xen balloon, remembered by this
/// process (the daemon keeps it from tick to tick). A process that starts
/// later knows only the present (the target and the current reservation), so
/// it may see a smaller balloon than the toolstack took, never a larger one,
/// and never writes a target above what the toolstack granted.
public enum XenGrant {
  private static let seen = Mutex<[String: UInt64]>([:])

  /// What is remembered for the balloon at `path` (its sysfs directory).
  public static func remembered(_ path: String) -> UInt64? {
    seen.withLock { $0[path] }
  }

  /// Remembers `bytes` for `path` if it is larger than what is remembered.
  public static func remember(_ bytes: UInt64, for path: String) {
    seen.withLock { $0[path] = max($0[path] ?? 0, bytes) }
  }

  /// Forgets everything (tests).
  public static func forget() {
    seen.withLock { $0.removeAll() }
  }
}

extension UInt64 {
  fileprivate func saturatingAdd(_ other: UInt64) -> UInt64 {
    let (sum, overflow) = addingReportingOverflow(other)
    return overflow ? .max : sum
  }
}

public enum XenBalloonReader {
  /// The attributes, relative to the device's directory, all KiB.
  public static let targetFile = "target_kb"
  public static let currentFile = "info/current_kb"
  public static let lowFile = "info/low_kb"
  public static let highFile = "info/high_kb"

  /// Reads the device's attributes below `root`. Every one is required: a
  /// missing or malformed one throws, naming the file.
  public static func read(
    device: BalloonDevice, root: Root, rememberedGrantBytes: UInt64? = nil
  ) throws(SourceError) -> XenBalloonStats {
    func kilobytes(_ name: String) throws(SourceError) -> UInt64 {
      let file = root.path(device.sysPath + "/" + name)
      let bytes = try SystemFile.readRequired(file)
      let value = try KernelText.singleDecimal(bytes, path: file.string)
      return try KernelField.bytes(value, unit: 1024, key: name, path: file.string, line: nil)
    }
    let stats = XenBalloonStats(
      reservationTargetBytes: try kilobytes(targetFile),
      currentReservationBytes: try kilobytes(currentFile),
      lowBytes: try kilobytes(lowFile), highBytes: try kilobytes(highFile),
      rememberedGrantBytes: rememberedGrantBytes)
    let (balloon, o1) = stats.lowBytes.addingReportingOverflow(stats.highBytes)
    let (_, o2) = stats.currentReservationBytes.addingReportingOverflow(balloon)
    if o1 || o2 {
      let file = root.path(device.sysPath + "/info")
      throw .malformed(file.string, "current_kb + low_kb + high_kb overflows 64 bits")
    }
    return stats
  }
}
