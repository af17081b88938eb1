import SystemPackage

/// virtio_balloon has no file of its own (no sysfs or debugfs size,
/// docs/kernel-interfaces.md §2.3):
/// the current size comes from the generic balloon counters, the target
/// only from the device's config space, through an optional probe.
public enum VirtioBalloonReader {
  public static let notProbedReason =
    "not probed; --probe-target reads it from the device's PCI config window"
  public static let notPCIReason = "not a PCI device: no config-space access for this transport"
  public static let noCounterReason =
    "no balloon counter: no nr_balloon_pages, Balloon: or balloon_inflate/balloon_deflate"

  /// The balloon's size from the kernel's counters, best first:
  /// `nr_balloon_pages` (≥ 6.15), `Balloon:` (≥ 6.15), then the
  /// `balloon_inflate − balloon_deflate` events (CONFIG_MEMORY_BALLOON). The
  /// events cover every balloon_compaction driver, which on a virtio guest is
  /// the virtio balloon. `vmstatPath` names the file in an underflow error
  /// (built only then: the daemon reads this every tick).
  public static func current(
    meminfo: Meminfo, vmstat: Vmstat, vmstatPath: @autoclosure () -> String
  )
    throws(SourceError) -> Sourced
  {
    if let bytes = vmstat.balloonBytes { return .known(bytes: bytes, source: "nr_balloon_pages") }
    if let bytes = meminfo.balloon { return .known(bytes: bytes, source: "meminfo Balloon") }
    if let inflated = vmstat.balloonInflatedBytes, let deflated = vmstat.balloonDeflatedBytes {
      guard inflated >= deflated else {
        throw .malformed(
          vmstatPath(),
          "balloon_deflate (\(deflated) bytes) exceeds balloon_inflate (\(inflated) bytes)")
      }
      return .known(bytes: inflated - deflated, source: "balloon_inflate - balloon_deflate")
    }
    return .unknown(reason: noCounterReason)
  }

  /// The host's target (`num_pages`) and the device's `actual`, when the
  /// probe is given and the device sits on PCI.
  public static func target(device: BalloonDevice, probe: (any VirtioConfigProbe)?)
    -> (target: Sourced, actualBytes: UInt64?)
  {
    guard let probe else { return (.unknown(reason: notProbedReason), nil) }
    guard let pciAddress = device.pciAddress else { return (.unknown(reason: notPCIReason), nil) }
    do {
      let config = try probe.readBalloonConfig(pciAddress: pciAddress)
      return (
        .known(bytes: config.targetBytes, source: "virtio config num_pages"), config.actualBytes
      )
    } catch {
      return (.unknown(reason: error.reason), nil)
    }
  }

  public static func read(
    device: BalloonDevice, root: Root, meminfo: Meminfo, vmstat: Vmstat,
    probe: (any VirtioConfigProbe)?
  ) throws(SourceError) -> BalloonReading {
    let current = try current(
      meminfo: meminfo, vmstat: vmstat, vmstatPath: root.path(VmstatReader.path).string)
    let (target, actual) = target(device: device, probe: probe)
    var reading = BalloonReading(
      device: device, current: current, target: target, deviceActualBytes: actual)
    if let inflated = vmstat.balloonInflatedBytes, let deflated = vmstat.balloonDeflatedBytes,
      inflated >= deflated
    {
      reading.eventCountBytes = inflated - deflated
    }
    return reading
  }
}
