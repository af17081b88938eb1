/// The virtio balloon's device config (`struct virtio_balloon_config`), in the
/// device's 4 KiB units whatever the guest page size (VIRTIO_BALLOON_PFN_SHIFT).
public struct VirtioBalloonConfig: Sendable, Equatable {
  /// `num_pages`: the host's target, written by the host.
  public var numPages: UInt32
  /// `actual`: pages in the balloon, written by the driver after each change.
  public var actual: UInt32

  public init(numPages: UInt32, actual: UInt32) {
    self.numPages = numPages
    self.actual = actual
  }

  public var targetBytes: UInt64 { UInt64(numPages) * 4096 }
  public var actualBytes: UInt64 { UInt64(actual) * 4096 }
}

/// Why the config space could not be read; shown as `target: unknown (<reason>)`.
public struct ProbeError: Error, Sendable, Equatable, CustomStringConvertible {
  public var reason: String
  public init(_ reason: String) { self.reason = reason }
  public var description: String { reason }
}

/// Reads a virtio balloon's config space. The only implementation that touches
/// hardware writes the PCI_CFG window registers, so it is used only when the
/// user asks (`--probe-target`) or by the daemon: readers take it as an
/// optional argument and report the target as unknown without it.
public protocol VirtioConfigProbe: Sendable {
  func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig
}
