import ArgumentParser
import BalloonKit

/// Options that shape a reading: the limit's fraction and the virtio target probe.
struct SnapshotArguments: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "Share of the reclaimable memory (guest − pinned) the balloon may take, 0 < f ≤ 1.",
      discussion: "0.65 is VMware's default balloon cap and KB 340369's rule of thumb.",
      valueName: "f"))
  var fraction: Double = BalloonLimit.defaultFraction

  @Flag(
    help: ArgumentHelp(
      "Read the virtio balloon's target (num_pages) and actual size from its PCI config space.",
      discussion: """
        The kernel exposes the host's target nowhere else. Reading it WRITES the device's \
        VIRTIO_PCI_CAP_PCI_CFG window registers (bar, offset, length) in PCI config space, so it \
        is off unless asked for. Kernel lockdown refuses it; then the target is reported as \
        unknown with the reason. Live system only.
        """))
  var probeTarget = false

  func validate() throws {
    guard BalloonLimit.isValid(fraction: fraction) else {
      throw ValidationError("--fraction must be above 0 and at most 1, got \(fraction)")
    }
  }

  /// discover → read → account → limit, once, for `status` and `limit`.
  func snapshot(root: Root) throws -> GuestSnapshot {
    try GuestSnapshotReader.read(root: root, options: try options(root: root))
  }

  func options(root: Root, scanProcesses: Bool = true) throws -> SnapshotOptions {
    if probeTarget && !root.isLive {
      throw ValidationError(
        "--probe-target reads a live device's PCI config window; it cannot be used with --root")
    }
    return SnapshotOptions(
      fraction: fraction, probe: probeTarget ? VirtioPCIWindowProbe(root: root) : nil,
      scanProcesses: scanProcesses)
  }
}
