#if canImport(Glibc)
  import Glibc
#endif

/// The clocks the daemon runs on.
public enum Clock {
  /// Seconds since boot, including suspend (CLOCK_BOOTTIME).
  public static func boottime() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_BOOTTIME, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
  }

  /// Seconds since the epoch.
  public static func wall() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec)
  }
}
