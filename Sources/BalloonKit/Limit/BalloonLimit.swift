/// What bounds the limit.
public enum LimitBound: String, Sendable, Equatable {
  /// `fraction × (guest − pinned)`.
  case fraction
  /// Guest swap: KB 340369 says the cap must not exceed the guest's swap.
  case swap
}

/// The pinned-aware balloon limit: the most memory the balloon may hold.
///
///     guest        = MemTotal (+ the balloon, where the driver took it out of MemTotal)
///     limit        = floor(fraction × max(0, guest − pinned))        fraction 0.65 by default
///     if 0 < SwapTotal < limit: limit = SwapTotal, bounded by swap
///     maxmemctl_mb = floor(limit / 1 MiB)                           VMware sched.mem.maxmemctl
///
/// KB 340369's example: a 4 GiB guest with 2 GiB pinned and 4 GiB swap gives
/// floor(0.65 × 2048 MiB) = 1331 MB (the KB writes "about 1330").
public struct BalloonLimit: Sendable, Equatable {
  public var bytes: UInt64
  public var fraction: Double
  public var boundedBy: LimitBound
  public var guestBytes: UInt64
  public var pinnedBytes: UInt64
  public var swapTotalBytes: UInt64

  /// `fraction × reclaimable` before the swap bound.
  public var fractionBytes: UInt64
  /// guest − pinned, floored at 0.
  public var reclaimableBytes: UInt64 { guestBytes > pinnedBytes ? guestBytes - pinnedBytes : 0 }

  /// VMware's `sched.mem.maxmemctl`, in MB (MiB): floor(limit / 1 MiB).
  public var maxmemctlMB: UInt64 { bytes / BalloonLimit.mebibyte }

  public static let mebibyte: UInt64 = 1 << 20
  /// VMware's default balloon cap since ESX 3.0.1, and the KB's rule of thumb.
  public static let defaultFraction = 0.65

  /// Whether `fraction` is usable: 0 < fraction ≤ 1.
  public static func isValid(fraction: Double) -> Bool { fraction > 0 && fraction <= 1 }

  public static func compute(
    guestBytes: UInt64, pinnedBytes: UInt64, swapTotalBytes: UInt64,
    fraction: Double = defaultFraction
  ) -> BalloonLimit {
    let reclaimable = guestBytes > pinnedBytes ? guestBytes - pinnedBytes : 0
    let scaled = floorProduct(fraction, reclaimable)
    var limit = scaled
    var bound = LimitBound.fraction
    if swapTotalBytes > 0 && swapTotalBytes < scaled {
      limit = swapTotalBytes
      bound = .swap
    }
    return BalloonLimit(
      bytes: limit, fraction: fraction, boundedBy: bound, guestBytes: guestBytes,
      pinnedBytes: pinnedBytes, swapTotalBytes: swapTotalBytes, fractionBytes: scaled)
  }

  /// floor(fraction × value) for 0 ≤ fraction ≤ 1 without trapping. Exact for
  /// values below 2^53 bytes (8 PiB), far beyond any guest.
  static func floorProduct(_ fraction: Double, _ value: UInt64) -> UInt64 {
    guard fraction > 0, value > 0 else { return 0 }
    guard fraction < 1 else { return value }
    let product = (fraction * Double(value)).rounded(.down)
    // Double(UInt64.max) rounds up to 2^64, which does not convert back.
    guard product < 18_446_744_073_709_549_568 else { return value }
    return min(UInt64(product), value)
  }
}

/// The host-side equivalents of the limit, for the administrator to apply.
public struct HostSettings: Sendable, Equatable {
  /// VMware .vmx: `sched.mem.maxmemctl = "<MB>"`.
  public var vmwareMaxmemctlMB: UInt64
  /// KVM (libvirt `virsh setmem`, QMP `balloon`): the lowest RAM target that
  /// keeps the balloon within the limit, in MiB, rounded so it errs safe.
  /// nil when the configured RAM is not known.
  public var kvmMinimumTargetMiB: UInt64?
  /// The configured RAM this floor is relative to, and where it came from.
  public var configuredRAMBytes: UInt64?
  public var configuredRAMSource: String?

  /// The host's RAM target is relative to the VM's configured RAM, which the
  /// guest sees (approximately) as the firmware's "System RAM" map. Round the
  /// configured size up and the limit down to whole MiB, so the floor is never
  /// below the true one.
  public static func compute(limit: BalloonLimit, configuredRAM: (bytes: UInt64, source: String)?)
    -> HostSettings
  {
    var floorMiB: UInt64?
    if let ram = configuredRAM {
      let ramMiB = (ram.bytes +| (BalloonLimit.mebibyte - 1)) / BalloonLimit.mebibyte
      let limitMiB = limit.bytes / BalloonLimit.mebibyte
      floorMiB = ramMiB > limitMiB ? ramMiB - limitMiB : 0
    }
    return HostSettings(
      vmwareMaxmemctlMB: limit.maxmemctlMB, kvmMinimumTargetMiB: floorMiB,
      configuredRAMBytes: configuredRAM?.bytes, configuredRAMSource: configuredRAM?.source)
  }
}
