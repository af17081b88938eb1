import Synchronization
import SystemPackage

/// The daemon's PCI window probe: once the kernel refuses the window's
/// config write with EPERM (lockdown, docs/kernel-interfaces.md §10.3), the
/// refusal is remembered per device and returned without writing again, so
/// the target is reported unknown with the reason and the kernel's lockdown
/// message is not logged every tick. A restart tries again.
public final class RefusedOnceProbe: VirtioConfigProbe {
  let probe: any VirtioConfigProbe
  private let refused = Mutex<[String: ProbeError]>([:])

  public init(_ probe: any VirtioConfigProbe) { self.probe = probe }

  /// The first refusal kept, if any (for the log and the state file).
  public var refusal: ProbeError? { refused.withLock { $0.values.first } }

  public func readBalloonConfig(pciAddress: String) throws(ProbeError) -> VirtioBalloonConfig {
    if let known = refused.withLock({ $0[pciAddress] }) { throw known }
    do {
      return try probe.readBalloonConfig(pciAddress: pciAddress)
    } catch {
      guard Self.isRefusal(error) else { throw error }
      let latched = ProbeError("\(error.reason); not tried again until balloonctl restarts")
      refused.withLock { $0[pciAddress] = latched }
      throw latched
    }
  }

  /// The EPERM of SysfsPCIConfigSpace.writeFailure: what lockdown answers.
  static func isRefusal(_ error: ProbeError) -> Bool {
    error.reason.hasPrefix(
      SysfsPCIConfigSpace.writeFailure(.notPermitted, path: "/").reason)
  }
}
