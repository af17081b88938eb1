import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A PSI trigger on `/proc/pressure/memory` (≥ 5.2, CONFIG_PSI): poll() reports
/// POLLPRI when tasks stall on memory for `stallMicroseconds` within a
/// `windowMicroseconds` window. The balloon inflating into a short guest is
/// exactly such a stall, so the daemon ticks at once instead of at the next
/// interval.
public final class PressureTrigger {
  public let fileDescriptor: Int32

  public static let path = "/proc/pressure/memory"

  /// nil with a reason when PSI is unavailable (old kernel, psi=0, no permission).
  /// Without CAP_SYS_RESOURCE the kernel only accepts windows that are
  /// multiples of 2 s, so a refused 1 s window is retried at 2 s.
  public static func open(root: Root, stallMicroseconds: Int = 100_000) -> Result<
    PressureTrigger, SourceError
  > {
    let path = root.path(PressureTrigger.path)
    var lastError = Errno.invalidArgument
    for window in [1_000_000, 2_000_000] {
      let fd = path.withPlatformString { Glibc.open($0, O_RDWR | O_NONBLOCK | O_CLOEXEC) }
      guard fd >= 0 else {
        return .failure(SourceError(path: path.string, .unreadable(Errno(rawValue: errno))))
      }
      let spec = "some \(stallMicroseconds) \(window)"
      let written = spec.withCString { write(fd, $0, strlen($0) + 1) }
      if written > 0 {
        return .success(PressureTrigger(fileDescriptor: fd, windowMicroseconds: window))
      }
      lastError = Errno(rawValue: errno)
      close(fd)
      guard lastError == .invalidArgument else { break }
    }
    return .failure(SourceError(path: path.string, .unreadable(lastError)))
  }

  /// The trigger's window: it fires at most once per window.
  public let windowMicroseconds: Int

  private init(fileDescriptor: Int32, windowMicroseconds: Int) {
    self.fileDescriptor = fileDescriptor
    self.windowMicroseconds = windowMicroseconds
  }

  deinit { close(fileDescriptor) }
}
