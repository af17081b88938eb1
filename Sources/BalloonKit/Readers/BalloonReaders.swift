import SystemPackage

/// The one entry point the rest of balloonctl uses to size a balloon: asks
/// the device's kind's driver (Drivers/). `current` and `target` are always
/// the balloon's own size in bytes; a source that is absent (debugfs not
/// mounted, no probe) is `.unknown(reason:)`, a malformed one throws.
public enum BalloonReaders {
  public static func read(
    _ device: BalloonDevice, root: Root, meminfo: Meminfo, vmstat: Vmstat,
    probe: (any VirtioConfigProbe)?
  ) throws(SourceError) -> BalloonReading {
    try device.kind.driver.read(
      device, ReadContext(root: root, meminfo: meminfo, vmstat: vmstat, probe: probe))
  }

  /// Reads every discovered balloon: the one path `status`, `limit`,
  /// `run --once` and the daemon share. A balloon that cannot be read is a
  /// failure naming its file, never a balloon left out: one-shot commands
  /// fail on it, the daemon keeps its hold and pulls no lever on it.
  public static func readAll(
    _ devices: [BalloonDevice], root: Root, meminfo: Meminfo, vmstat: Vmstat,
    probe: (any VirtioConfigProbe)?
  ) -> [Result<BalloonReading, SourceError>] {
    devices.map { device in
      do throws(SourceError) {
        return .success(
          try read(device, root: root, meminfo: meminfo, vmstat: vmstat, probe: probe))
      } catch {
        return .failure(error)
      }
    }
  }

  public static let meminfoBalloonVMwareSource = VMwareDriver.meminfoSource
  public static let hyperVTargetReason = HyperVDriver.targetReason
}

/// A debugfs stats file, or why it cannot be had: debugfs not mounted or
/// not readable, or the file absent (driver not loaded, CONFIG_DEBUG_FS
/// off). Read errors other than absence count as "not readable".
public enum DebugfsFile {
  case present((bytes: [UInt8], path: String))
  case unavailable(String)

  public static func read(_ kernelPath: String, root: Root, name: String) -> DebugfsFile {
    switch Debugfs.state(root: root) {
    case .notMounted: return .unavailable("debugfs not mounted")
    case .notReadable(let why): return .unavailable("debugfs not readable: \(why)")
    case .mounted: break
    }
    let file = root.path(kernelPath)
    do {
      guard let bytes = try SystemFile.read(file) else { return .unavailable("\(name) absent") }
      return .present((bytes, file.string))
    } catch {
      if case .unreadable(let errno) = error.problem {
        return .unavailable("debugfs not readable: \(errno.description)")
      }
      return .unavailable("debugfs not readable: \(error.description)")
    }
  }
}
