/// hv_balloon (Hyper-V Dynamic Memory). Discovered as the vmbus device with
/// the Dynamic Memory class_id; sized by debugfs `hv-balloon`, else
/// `nr_balloon_pages`. The host never publishes a target, and there is no
/// safe lever (unbinding hv_balloon loses the pages until reboot): alert only.
public struct HyperVDriver: BalloonDriver {
  public var kind: BalloonKind { .hyperv }
  /// The work item that inflates on the host's balloon request (hv_balloon).
  public var eventSymbols: [KernelSymbol] { [KernelSymbol("balloon_up", module: "hv_balloon")] }
  public init() {}

  public static let targetReason = "Hyper-V exposes no target (the host sends balloon requests)"

  public func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice] {
    guard let names = try SystemFile.list(sysfs.root.path(SysfsDiscovery.vmbusDevices)) else {
      return []
    }
    var found: [BalloonDevice] = []
    for name in names {
      let sysPath = sysfs.resolve(directory: SysfsDiscovery.vmbusDevices, entry: name)
      guard try sysfs.attribute(sysPath + "/class_id") == SysfsDiscovery.hyperVClassID else {
        continue
      }
      found.append(
        BalloonDevice(
          kind: .hyperv, name: name, sysPath: sysPath, driver: sysfs.driver(of: sysPath)))
    }
    return found
  }

  /// A vmbus instance GUID, lower-case hex.
  public func isValid(name: String) -> Bool {
    let groups = name.split(separator: "-", omittingEmptySubsequences: false)
    return groups.map(\.utf8.count) == [8, 4, 4, 4, 12]
      && groups.allSatisfy {
        $0.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
      }
  }

  public func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError)
    -> BalloonReading
  {
    let current: Sourced
    switch DebugfsFile.read(HypervBalloonReader.path, root: context.root, name: "hv-balloon") {
    case .present(let file):
      let stats = try HypervBalloonReader.parse(file.bytes, path: file.path)
      current = .known(bytes: stats.balloonedBytes, source: "hv-balloon pages_ballooned")
    case .unavailable(let reason):
      current =
        if let bytes = context.vmstat.balloonBytes {
          .known(bytes: bytes, source: "nr_balloon_pages")
        } else {
          .unknown(reason: reason)
        }
    }
    return BalloonReading(
      device: device, current: current, target: .unknown(reason: Self.targetReason))
  }

  public func removesFromMemTotal(_ device: BalloonDevice) -> Bool { true }

  public var sizedByVmstat: Bool { true }

  public func decide(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig
  ) -> (Decision, HoldState) {
    Policy.alertOnly(o, limit: limit, state: state) {
      .kind(KindReason(HyperVReason.over(current: $0, limit: $1)))
    }
  }

  public func giveBack(_ o: BalloonObservation, state: HoldState, config: PolicyConfig) -> (
    Decision, HoldState
  ) {
    var released = state
    released.endHold()
    return (Decision(.none, balloon: o.name, why: .exiting), released)
  }

  public func resumedHoldProblem(
    _ hold: HoldState, device: BalloonDevice, observation: BalloonObservation
  ) -> ResumedHoldProblem? {
    .kind(KindReason(HyperVReason.neverHeld))
  }

  /// The host alone sizes it; the guest can only be told (alert).
  public var hasLever: Bool { false }

  public func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool {
    false
  }

  public func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)
  {
    throw ActuatorError("hyperv balloons have no lever (see alert)")
  }
}

extension HyperVDriver: UdevMatching {
  var eventSubsystems: [String] { ["vmbus"] }

  func isBalloonEvent(
    subsystem: String, name: String, modalias: String?, sysattr: (String) -> String?
  ) -> Bool {
    if let modalias { return modalias.lowercased() == UdevBalloonIDs.hyperVModalias }
    return sysattr("class_id")?.lowercased() == UdevBalloonIDs.hyperVClassID
  }

  /// Subsystem `vmbus` with the Dynamic Memory `class_id`.
  func discover(_ udev: Udev) throws(SourceError) -> [BalloonDevice] {
    let enumerator = try udev.enumerator()
    try enumerator.match(subsystem: "vmbus")
    try enumerator.match(sysattr: "class_id", value: UdevBalloonIDs.hyperVClassID)
    return try enumerator.devices().map { device in
      BalloonDevice(
        kind: .hyperv, name: device.sysname, sysPath: device.syspath, driver: device.driver)
    }
  }
}

/// Why the Hyper-V driver alerts.
public enum HyperVReason: KindReasonValue, Equatable {
  case over(current: UInt64, limit: UInt64)
  case neverHeld

  public var description: String {
    switch self {
    case .neverHeld: "the state file says held, but Hyper-V balloons are never held"
    case .over(let current, let limit):
      "current \(ByteFormat.human(current)) exceeds the limit \(ByteFormat.human(limit)); Hyper-V has no safe lever (unbinding hv_balloon loses the pages until reboot)"
    }
  }
}
