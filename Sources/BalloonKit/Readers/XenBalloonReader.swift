import SystemPackage

/// The Xen balloon's sysfs attributes (drivers/xen/xen-balloon.c), in bytes.
/// Xen's own numbers are about the domain's *reservation*; balloonctl's
/// `current`/`target` are the balloon's size, derived here.
public struct XenBalloonStats: Sendable, Equatable {
  /// `target_kb`: the target of the total reservation (not of the balloon).
  public var reservationTargetBytes: UInt64
  /// `info/current_kb`: the current reservation.
  public var currentReservationBytes: UInt64
  /// `info/low_kb`, `info/high_kb`: low- and high-memory pages in the balloon.
  public var lowBytes: UInt64
  public var highBytes: UInt64

  public init(
    reservationTargetBytes: UInt64, currentReservationBytes: UInt64, lowBytes: UInt64,
    highBytes: UInt64
  ) {
    self.reservationTargetBytes = reservationTargetBytes
    self.currentReservationBytes = currentReservationBytes
    self.lowBytes = lowBytes
    self.highBytes = highBytes
  }

  /// The balloon's size: `low + high`. `read` guarantees the sums below fit;
  /// a value built by hand that does not saturates at `UInt64.max`.
  public var balloonBytes: UInt64 { lowBytes.saturatingAdd(highBytes) }

  /// The balloon size the target implies: every page the domain has
  /// (reservation + balloon) minus the reservation target, clamped at 0.
  public var balloonTargetBytes: UInt64 {
    let total = currentReservationBytes.saturatingAdd(balloonBytes)
    return total > reservationTargetBytes ? total - reservationTargetBytes : 0
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
  public static func read(device: BalloonDevice, root: Root) throws(SourceError)
    -> XenBalloonStats
  {
    func kilobytes(_ name: String) throws(SourceError) -> UInt64 {
      let file = root.path(device.sysPath + "/" + name)
      let bytes = try SystemFile.readRequired(file)
      let value = try KernelText.singleDecimal(bytes, path: file.string)
      return try KernelField.bytes(value, unit: 1024, key: name, path: file.string, line: nil)
    }
    let stats = XenBalloonStats(
      reservationTargetBytes: try kilobytes(targetFile),
      currentReservationBytes: try kilobytes(currentFile),
      lowBytes: try kilobytes(lowFile), highBytes: try kilobytes(highFile))
    let (balloon, o1) = stats.lowBytes.addingReportingOverflow(stats.highBytes)
    let (_, o2) = stats.currentReservationBytes.addingReportingOverflow(balloon)
    if o1 || o2 {
      let file = root.path(device.sysPath + "/info")
      throw .malformed(file.string, "current_kb + low_kb + high_kb overflows 64 bits")
    }
    return stats
  }
}
