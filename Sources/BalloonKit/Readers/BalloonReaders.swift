import SystemPackage

/// The one entry point the rest of balloonctl uses to size a balloon: picks
/// the reader for the device's kind. `current` and `target` are always the
/// balloon's own size in bytes; a source that is absent (debugfs not
/// mounted, no probe) is `.unknown(reason:)`, a malformed one throws.
public enum BalloonReaders {
  public static func read(
    _ device: BalloonDevice, root: Root, meminfo: Meminfo, vmstat: Vmstat,
    probe: (any VirtioConfigProbe)?
  ) throws(SourceError) -> BalloonReading {
    switch device.kind {
    case .virtio:
      return try VirtioBalloonReader.read(
        device: device, root: root, meminfo: meminfo, vmstat: vmstat, probe: probe)
    case .vmware: return try vmware(device, root: root, meminfo: meminfo)
    case .xen: return try xen(device, root: root)
    case .hyperv: return try hyperV(device, root: root, vmstat: vmstat)
    }
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

  public static let meminfoBalloonVMwareSource =
    "meminfo Balloon (4 KiB pages only; 2 MiB pages not counted)"
  public static let hyperVTargetReason =
    "Hyper-V exposes no target (the host sends balloon requests)"

  /// vmw: debugfs `vmmemctl`; without it, `Balloon:` (≥ 6.15) for the
  /// current size, which misses 2 MiB balloon pages (docs/kernel-interfaces.md §1.6).
  static func vmware(_ device: BalloonDevice, root: Root, meminfo: Meminfo) throws(SourceError)
    -> BalloonReading
  {
    let reason: String
    switch debugfsFile(VmwBalloonReader.path, root: root, name: "vmmemctl") {
    case .present(let file):
      let stats = try VmwBalloonReader.parse(file.bytes, path: file.path)
      return BalloonReading(
        device: device,
        current: .known(bytes: stats.currentBytes, source: "vmmemctl current"),
        target: .known(bytes: stats.targetBytes, source: "vmmemctl target"),
        extraFeatures: stats.usedCapabilities.map(VmwBalloonReader.capabilityNames) ?? [])
    case .unavailable(let why): reason = why
    }
    let current: Sourced =
      if let bytes = meminfo.balloon {
        .known(bytes: bytes, source: meminfoBalloonVMwareSource)
      } else {
        .unknown(reason: reason)
      }
    return BalloonReading(device: device, current: current, target: .unknown(reason: reason))
  }

  /// Xen: the balloon's size and the size its reservation target implies.
  static func xen(_ device: BalloonDevice, root: Root) throws(SourceError) -> BalloonReading {
    let stats = try XenBalloonReader.read(device: device, root: root)
    return BalloonReading(
      device: device,
      current: .known(bytes: stats.balloonBytes, source: "info/low_kb + info/high_kb"),
      target: .known(
        bytes: stats.balloonTargetBytes, source: "info/current_kb + balloon - target_kb"))
  }

  /// Hyper-V: debugfs `hv-balloon`, else `nr_balloon_pages` (≥ 6.15). The
  /// host never publishes a target.
  static func hyperV(_ device: BalloonDevice, root: Root, vmstat: Vmstat) throws(SourceError)
    -> BalloonReading
  {
    let current: Sourced
    switch debugfsFile(HypervBalloonReader.path, root: root, name: "hv-balloon") {
    case .present(let file):
      let stats = try HypervBalloonReader.parse(file.bytes, path: file.path)
      current = .known(bytes: stats.balloonedBytes, source: "hv-balloon pages_ballooned")
    case .unavailable(let reason):
      current =
        if let bytes = vmstat.balloonBytes {
          .known(bytes: bytes, source: "nr_balloon_pages")
        } else {
          .unknown(reason: reason)
        }
    }
    return BalloonReading(
      device: device, current: current, target: .unknown(reason: hyperVTargetReason))
  }

  enum DebugfsFile {
    case present((bytes: [UInt8], path: String))
    case unavailable(String)
  }

  /// A debugfs stats file, or why it cannot be had: debugfs not mounted or
  /// not readable, or the file absent (driver not loaded, CONFIG_DEBUG_FS
  /// off). Read errors other than absence count as "not readable".
  static func debugfsFile(_ kernelPath: String, root: Root, name: String) -> DebugfsFile {
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
