import SystemPackage

/// vmw_balloon (VMware). Not a bus device: discovered as the loaded module
/// `/sys/module/vmw_balloon`; sized by debugfs `vmmemctl`, else meminfo
/// `Balloon:` (no target). Lever: `modprobe -r vmw_balloon` (all pages
/// return at once), `modprobe vmw_balloon` to re-admit; released, the module
/// is absent by design and is reloaded by its fixed name.
public struct VMwareDriver: BalloonDriver {
  public var kind: BalloonKind { .vmware }
  /// The delayed work that asks the host for its target and inflates or
  /// deflates towards it; it runs every second, and at once on the host's doorbell.
  public var eventSymbols: [KernelSymbol] {
    [KernelSymbol("vmballoon_work", module: "vmw_balloon")]
  }
  public init() {}

  public static let moduleName = "vmw_balloon"
  /// The module as discovery names it when loaded.
  public static let module = BalloonDevice(
    kind: .vmware, name: moduleName, sysPath: SysfsDiscovery.vmwModule, driver: nil)

  public static let meminfoSource = "meminfo Balloon (4 KiB pages only; 2 MiB pages not counted)"

  public func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice] {
    guard SystemFile.exists(sysfs.root.path(SysfsDiscovery.vmwModule)) else { return [] }
    return [
      BalloonDevice(
        kind: .vmware, name: Self.moduleName, sysPath: SysfsDiscovery.vmwModule,
        driver: Self.moduleName)
    ]
  }

  public func isValid(name: String) -> Bool { name == Self.moduleName }

  public func unlistedDevice(named name: String) -> BalloonDevice? {
    name == Self.moduleName ? Self.module : nil
  }

  /// debugfs `vmmemctl`; without it, `Balloon:` (≥ 6.15) for the current
  /// size, which misses 2 MiB balloon pages (docs/kernel-interfaces.md §1.6).
  public func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError)
    -> BalloonReading
  {
    let reason: String
    switch DebugfsFile.read(VmwBalloonReader.path, root: context.root, name: "vmmemctl") {
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
      if let bytes = context.meminfo.balloon {
        .known(bytes: bytes, source: Self.meminfoSource)
      } else {
        .unknown(reason: reason)
      }
    return BalloonReading(device: device, current: current, target: .unknown(reason: reason))
  }

  /// The pages look used: MemTotal stays.
  public func removesFromMemTotal(_ device: BalloonDevice) -> Bool { false }

  public func decide(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig
  ) -> (Decision, HoldState) {
    Policy.releasable(
      o, limit: limit, state: state, now: now, config: config,
      lever: .init(listedWhileHeld: false, releaseHidesTarget: true))
  }

  public func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool {
    // A built-in vmw_balloon has no initstate and cannot be unloaded.
    let loadable =
      held || SystemFile.exists(actuators.root.path("/sys/module/vmw_balloon/initstate"))
    return loadable && SystemFile.exists(actuators.root.path(actuators.modprobe))
  }

  public func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)
  {
    switch decision.action {
    case .release:
      try actuators.modprobe(["-r", Self.moduleName])
    case .readmit:
      try actuators.modprobe(
        [Self.moduleName] + (actuators.vmwShrinker ? ["vmwballoon_shrinker_enable=1"] : []))
    case .setTarget, .none, .alert:
      throw ActuatorError("vmware balloons have no \(decision.action.rawValue) lever")
    }
  }
}

extension VMwareDriver: UdevMatching {
  /// vmw_balloon is a module, not a bus device: its load and unload are the events.
  var eventSubsystems: [String] { ["module"] }

  func isBalloonEvent(
    subsystem: String, name: String, modalias: String?, sysattr: (String) -> String?
  ) -> Bool { name == UdevBalloonIDs.vmwModule }

  /// The module `/sys/module/vmw_balloon` (it is not a bus device).
  func discover(_ udev: Udev) throws(SourceError) -> [BalloonDevice] {
    try vmware(udev).map { [$0] } ?? []
  }

  func vmware(_ udev: Udev) throws(SourceError) -> BalloonDevice? {
    // libudev maps the pseudo-subsystem "module" to /sys/module/<name>.
    guard let module = try udev.device(subsystem: "module", sysname: UdevBalloonIDs.vmwModule)
    else { return nil }
    return BalloonDevice(
      kind: .vmware, name: module.sysname, sysPath: module.syspath,
      driver: UdevBalloonIDs.vmwModule)
  }
}
