/// The ranges a state file's numbers must be in: what balloonctl itself can
/// write, with room to spare. Outside them the file is corrupt.
public enum StateRange {
  public static let version: ClosedRange<UInt64> = 0...1_000_000
  /// Linux's PID_MAX_LIMIT.
  public static let pid: ClosedRange<UInt64> = 1...4_194_304
  /// Seconds since the epoch (2^40 s is beyond year 36000).
  public static let epochSeconds: ClosedRange<UInt64> = 0...(1 << 40)
  /// CLOCK_BOOTTIME seconds (1e10 s is three centuries of uptime).
  public static let boottime: ClosedRange<Double> = 0...1e10
  /// The blind re-admit back-off (the policy caps it at 10 min).
  public static let backoff: ClosedRange<Double> = 0...86_400
  public static let releases: ClosedRange<UInt64> = 0...(1 << 32)
  /// Xen target_kb (2^50 KiB is 1 EiB).
  public static let kibibytes: ClosedRange<UInt64> = 0...(1 << 50)
  public static let bytes: ClosedRange<UInt64> = 0...(1 << 60)
  /// `--interval` 0.1 to 60 s.
  public static let intervalMilliseconds: ClosedRange<UInt64> = 100...60_000
  /// Far more balloons than any guest has.
  public static let maxBalloons = 256
  /// Reasons and paths are short texts.
  public static let maxTextBytes = 4096
}
