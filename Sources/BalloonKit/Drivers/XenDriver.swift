import SystemPackage

/// The Xen balloon (xen-balloon, built in). Discovered as
/// `/sys/devices/system/xen_memory/xen_memory0`; sized against what the
/// toolstack granted (`XenBalloonStats.grantedBytes`, remembered in
/// `XenGrant` and the record's `XenKept`): the balloon is `granted − info/current_kb`, its target
/// `granted − target_kb`. Lever: write `target_kb` so the balloon sits
/// exactly at the limit (a partial hold), never above the grant, and the
/// host's target back when it fits again.
public struct XenDriver: BalloonDriver {
  public var kind: BalloonKind { .xen }
  /// The xenstore watch on memory/target: called once per new target the
  /// toolstack writes. xen-balloon is built into the kernel (module nil).
  /// The balloon itself is worked by a kthread since 5.16 (`balloon_thread`,
  /// entered once) and by `balloon_process` before, so the watch is the event.
  public var eventSymbols: [KernelSymbol] { [KernelSymbol("watch_target", module: nil)] }
  public init() {}

  public func discover(_ sysfs: SysfsDiscovery) throws(SourceError) -> [BalloonDevice] {
    guard SystemFile.exists(sysfs.root.path(SysfsDiscovery.xenDevice)) else { return [] }
    return [
      BalloonDevice(
        kind: .xen, name: "xen_memory0", sysPath: SysfsDiscovery.xenDevice, driver: "xen-balloon")
    ]
  }

  public func isValid(name: String) -> Bool { BalloonNames.numbered(name, after: "xen_memory") }

  /// The balloon's size and the size its reservation target implies.
  public func read(_ device: BalloonDevice, _ context: ReadContext) throws(SourceError)
    -> BalloonReading
  {
    let stats = try Self.stats(device, root: context.root)
    return BalloonReading(
      device: device,
      current: .known(bytes: stats.grantedBalloonBytes, source: Self.currentSource),
      target: .known(bytes: stats.grantedBalloonTargetBytes, source: Self.targetSource))
  }

  static let currentSource = "granted - info/current_kb"
  static let targetSource = "granted - target_kb"

  /// Reads the attributes with the grant this process remembers, and
  /// remembers the grant they show.
  static func stats(_ device: BalloonDevice, root: Root) throws(SourceError) -> XenBalloonStats {
    let key = root.path(device.sysPath).string
    let stats = try XenBalloonReader.read(
      device: device, root: root, rememberedGrantBytes: XenGrant.remembered(key))
    XenGrant.remember(stats.grantedBytes, for: key)
    return stats
  }

  public func payload(_ device: BalloonDevice, reading: BalloonReading, root: Root) -> (
    any BalloonPayload
  )? {
    guard let stats = try? Self.stats(device, root: root) else { return nil }
    return XenObservation(
      reservationBytes: stats.grantedBytes, targetKiB: stats.reservationTargetBytes / 1024,
      pageKiB: max(1, root.pageSize / 1024))
  }

  public func removesFromMemTotal(_ device: BalloonDevice) -> Bool { true }

  /// When the balloon's target exceeds the limit, set_target puts the balloon
  /// exactly at the limit; it is raised back toward the host's wish when the
  /// limit grows (in steps of at least the margin, or all the way).
  public func decide(
    _ o: BalloonObservation, limit: UInt64, state: HoldState, now: Double, config: PolicyConfig
  ) -> (Decision, HoldState) {
    let name = o.name
    if !o.present && state.held {
      var fresh = config.freshState
      fresh.releases = state.releases
      return (Decision(.none, balloon: name, why: .deviceGone), fresh)
    }
    guard o.present, let target = o.targetBytes, let xen = o.payload as? XenObservation else {
      return (Decision(.none, balloon: name, why: .targetUnknown), state)
    }
    var state = state
    let ours = Self.isOurs(written: state.xenWrittenTargetKiB, observed: xen)
    let hostWish = ours ? (state.xenHostBalloonTargetBytes ?? target) : target
    if !ours {
      // The toolstack set a new target (or we never wrote one): it is the
      // host's wish, and any hold of ours is over; decide from scratch.
      state.payload = nil
      state.endHold()
    }

    func setTarget(_ balloon: UInt64, _ reason: Decision.Reason) -> (Decision, HoldState) {
      let kib = Self.targetKiB(
        reservation: xen.reservationBytes, balloon: balloon, pageKiB: xen.pageKiB)
      guard o.leverAvailable else {
        return (
          Decision(.alert, balloon: name, why: .kind(KindReason(XenReason.notWritable(reason)))),
          state
        )
      }
      var next = state
      let restoresHost = balloon >= hostWish
      next.payload =
        restoresHost ? nil : XenHold(writtenTargetKiB: kib, hostBalloonTargetBytes: hostWish)
      next.held = !restoresHost
      if !restoresHost { next.releases += (state.held ? 0 : 1) }
      next.reason = restoresHost ? nil : reason.description
      return (
        Decision(
          .setTarget, balloon: name, why: reason, balloonTargetBytes: balloon, leverArgument: kib),
        next
      )
    }

    if target > limit {
      return setTarget(limit, .xen(.holdAtLimit(target: target, limit: limit)))
    }
    if ours {
      let desired = min(hostWish, limit)
      let step = UInt64((Double(limit) * config.margin).rounded(.up))
      if desired > target && (desired - target >= step || desired == hostWish) {
        return setTarget(
          desired,
          desired == hostWish
            ? .xen(.restore(hostTarget: hostWish))
            : .xen(.raise(limit: limit, hostTarget: hostWish)))
      }
      return (
        Decision(
          .none, balloon: name,
          why: .xen(.heldAt(target: target, hostTarget: hostWish, limit: limit))),
        state
      )
    }
    return (Decision(.none, balloon: name, why: Policy.underLimit(o, limit: limit)), state)
  }

  /// Stopping: target_kb goes back to the host's wish (the reservation minus
  /// the balloon it asked for), unless the toolstack set a target since
  /// (then it stands).
  public func giveBack(_ o: BalloonObservation, state: HoldState, config: PolicyConfig) -> (
    Decision, HoldState
  ) {
    guard state.held else { return (Decision(.none, balloon: o.name, why: .exiting), state) }
    var released = config.freshState
    released.releases = state.releases
    guard o.unreadable == nil, let xen = o.payload as? XenObservation else {
      return (Decision(.none, balloon: o.name, why: .exitBlocked(hostTargetUnknown)), state)
    }
    guard Self.isOurs(written: state.xenWrittenTargetKiB, observed: xen) else {
      return (Decision(.none, balloon: o.name, why: .xen(.exitTargetNotOurs)), released)
    }
    guard let wish = state.xenHostBalloonTargetBytes else {
      return (Decision(.none, balloon: o.name, why: .exitBlocked(hostTargetUnknown)), state)
    }
    return (
      Decision(
        .setTarget, balloon: o.name, why: .exiting, balloonTargetBytes: wish,
        leverArgument: Self.targetKiB(
          reservation: xen.reservationBytes, balloon: wish, pageKiB: xen.pageKiB)),
      released
    )
  }

  var hostTargetUnknown: KindReason { KindReason(XenReason.hostTargetUnknown) }

  /// target_kb for a balloon of `balloon` bytes: the reservation minus the
  /// balloon, rounded up to a whole page, so the balloon's target lands at or
  /// below it (by less than a page) and target_kb reads back as written: the
  /// kernel keeps the target in pages and drops the rest of a KiB value
  /// (docs/kernel-interfaces.md §3.1). Never above the reservation.
  static func targetKiB(reservation: UInt64, balloon: UInt64, pageKiB: UInt64 = 4) -> UInt64 {
    let page = max(pageKiB, 1)
    let kib = ((reservation > balloon ? reservation - balloon : 0) +| 1023) / 1024
    return min((kib +| (page - 1)) / page * page, reservation / 1024)
  }

  /// Whether target_kb is the one balloonctl wrote. Exact: writes are whole
  /// pages, so the kernel reads them back unchanged, and anything else is the
  /// toolstack's (or a forged state file's).
  static func isOurs(written: UInt64?, observed: XenObservation) -> Bool {
    written != nil && written == observed.targetKiB
  }

  /// Ours only if target_kb is the one we wrote.
  public func resumedHoldProblem(
    _ hold: HoldState, device: BalloonDevice, observation: BalloonObservation
  ) -> ResumedHoldProblem? {
    let written = hold.xenWrittenTargetKiB
    let xen = observation.payload as? XenObservation
    return xen.map { Self.isOurs(written: written, observed: $0) } == true
      ? nil : .kind(KindReason(XenReason.notOurTarget(written: written, observed: xen?.targetKiB)))
  }

  public func heldDetail(_ hold: HoldState) -> [String]? {
    guard let wish = hold.xenHostBalloonTargetBytes else { return [] }
    return ["    host asked for \(ByteFormat.human(wish)); held at the limit until it fits"]
  }

  public func leverAvailable(_ device: BalloonDevice, held: Bool, actuators: Actuators) -> Bool {
    SystemFile.exists(actuators.root.path(device.sysPath + "/target_kb"))
  }

  public func act(_ decision: Decision, on device: BalloonDevice, actuators: Actuators)
    throws(ActuatorError)
  {
    guard decision.action == .setTarget else {
      throw ActuatorError("xen balloons are not released or re-admitted; see set_target")
    }
    guard let kib = decision.leverArgument else {
      throw ActuatorError("set_target without target_kb")
    }
    try actuators.write(String(kib), to: device.sysPath + "/target_kb", alreadyDone: nil)
  }

  public var leverArgumentName: String? { "target_kb" }

  public func holdJSON(_ hold: HoldState) -> [(String, JSONValue)] {
    [
      ("xen_written_target_kib", .optional(hold.xenWrittenTargetKiB)),
      ("xen_host_balloon_target_bytes", .optional(hold.xenHostBalloonTargetBytes)),
    ]
  }

  public func parseHold(_ record: StateFields, into hold: inout HoldState) throws(SourceError) {
    let written = try record.optionalInteger("xen_written_target_kib", StateRange.kibibytes)
    let wish = try record.optionalInteger("xen_host_balloon_target_bytes", StateRange.bytes)
    if written != nil || wish != nil {
      hold.payload = XenHold(writtenTargetKiB: written, hostBalloonTargetBytes: wish)
    }
  }

  /// The grant the reading was sized against, kept when it grows.
  public func remember(_ observation: BalloonObservation, kept: (any RecordPayload)?) -> (
    any RecordPayload
  )? {
    let before = (kept as? XenKept)?.grantedBytes ?? 0
    guard let xen = observation.payload as? XenObservation, xen.reservationBytes > before else {
      return kept
    }
    return XenKept(grantedBytes: xen.reservationBytes)
  }

  /// A grant from a previous run of this boot is remembered again (the
  /// reader sizes against it); from another boot (a persistent --state-dir,
  /// a VM given less memory since) it is dropped, so it is not written back
  /// as this boot's: the grant is then what the present shows, a smaller
  /// balloon, never memory the toolstack did not grant.
  public func resume(
    _ kept: (any RecordPayload)?, sysPath: String, root: Root, sameBoot: Bool
  ) -> (any RecordPayload)? {
    guard sameBoot, !sysPath.isEmpty, let grant = kept as? XenKept else { return nil }
    XenGrant.remember(grant.grantedBytes, for: root.path(sysPath).string)
    return grant
  }

  /// `xen_granted_bytes`, null until a grant is seen.
  public func recordJSON(_ kept: (any RecordPayload)?) -> [(String, JSONValue)] {
    [("xen_granted_bytes", .optional((kept as? XenKept)?.grantedBytes))]
  }

  /// Absent or null in a state file from before the grant was kept.
  public func parseRecord(_ record: StateFields) throws(SourceError) -> (any RecordPayload)? {
    try record.optionalInteger("xen_granted_bytes", StateRange.bytes).map(XenKept.init)
  }

  /// Ours only if target_kb is the one written, which takes a reading.
  public var verifiesResumedHoldByReading: Bool { true }
  /// The hold follows the limit (set_target), not a re-admit threshold.
  public var readmitsAtThreshold: Bool { false }
}

/// Xen's memory of a balloon, held or not: the largest reservation the
/// toolstack granted that the daemon saw (`XenGrant`), kept so that a
/// restarted daemon still sizes the balloon against it
/// (docs/kernel-interfaces.md §3.1).
public struct XenKept: RecordPayload, Equatable {
  public var grantedBytes: UInt64
}

extension BalloonRecord {
  /// Xen: the grant kept (nil: none seen, or another kind).
  public var xenGrantedBytes: UInt64? {
    get { (kept as? XenKept)?.grantedBytes }
    set { kept = newValue.map(XenKept.init) }
  }
}

/// Why the Xen driver decided what it did.
public enum XenReason: KindReasonValue, Equatable {
  case holdAtLimit(target: UInt64, limit: UInt64)
  case restore(hostTarget: UInt64)
  case raise(limit: UInt64, hostTarget: UInt64)
  case heldAt(target: UInt64, hostTarget: UInt64, limit: UInt64)
  case notWritable(Decision.Reason)
  /// A resumed hold whose target_kb is not the one written.
  case notOurTarget(written: UInt64?, observed: UInt64?)
  /// Stopping: the toolstack set a target since; it stands.
  case exitTargetNotOurs
  /// Stopping: the host's target cannot be restored (unknown or unreadable).
  case hostTargetUnknown

  public var description: String {
    let h = ByteFormat.human
    switch self {
    case .holdAtLimit(let target, let limit):
      return "balloon target \(h(target)) exceeds the limit \(h(limit)); holding it at the limit"
    case .restore(let host):
      return "the host's target \(h(host)) is under the limit again; restoring it"
    case .raise(let limit, let host):
      return "the limit rose to \(h(limit)); raising the balloon toward the host's \(h(host))"
    case .heldAt(let target, let host, let limit):
      return "held at \(h(target)) (host asked for \(h(host)), limit \(h(limit)))"
    case .notWritable(let inner): return "\(inner); target_kb not writable"
    case .exitTargetNotOurs:
      return "target_kb is no longer the one balloonctl wrote; left as the host set it"
    case .hostTargetUnknown:
      return "the host's target is not known; target_kb left as is"
    case .notOurTarget(let written, let observed):
      return
        "the state file says held at target_kb \(written.map { "\($0)" } ?? "unknown"), but target_kb is \(observed.map { "\($0)" } ?? "unreadable")"
    }
  }
}

extension Decision.Reason {
  static func xen(_ reason: XenReason) -> Self { .kind(KindReason(reason)) }
}

/// Xen's facts in an observation: the memory the domain has with no balloon
/// (the reservation the toolstack granted), and target_kb as read;
/// set_target converts the balloon size with them, so target_kb is never
/// written above the grant.
public struct XenObservation: BalloonPayload, Equatable {
  public var reservationBytes: UInt64
  public var targetKiB: UInt64
  /// The kernel's page in KiB: the unit target_kb is kept in.
  public var pageKiB: UInt64 = 4
}

/// Xen's memory of a hold: the target_kb we wrote, and the balloon size the
/// host had asked for.
public struct XenHold: HoldPayload, Equatable {
  public var writtenTargetKiB: UInt64?
  public var hostBalloonTargetBytes: UInt64?
}

extension HoldState {
  /// Xen: the target_kb balloonctl wrote (its hold).
  public var xenWrittenTargetKiB: UInt64? {
    get { (payload as? XenHold)?.writtenTargetKiB }
    set { updateXen { $0.writtenTargetKiB = newValue } }
  }

  /// Xen: the balloon size the host asked for when the hold began.
  public var xenHostBalloonTargetBytes: UInt64? {
    get { (payload as? XenHold)?.hostBalloonTargetBytes }
    set { updateXen { $0.hostBalloonTargetBytes = newValue } }
  }

  private mutating func updateXen(_ change: (inout XenHold) -> Void) {
    var xen = (payload as? XenHold) ?? XenHold()
    change(&xen)
    payload = xen.writtenTargetKiB == nil && xen.hostBalloonTargetBytes == nil ? nil : xen
  }
}

extension Decision {
  /// set_target on Xen: the target_kb to write.
  public var xenTargetKiB: UInt64? { leverArgument }
}

extension BalloonObservation {
  /// A Xen balloon's observation with its reservation and target_kb.
  public init(
    kind: BalloonKind, name: String, present: Bool = true, bound: Bool = true,
    currentBytes: UInt64?, targetBytes: UInt64?, leverAvailable: Bool = true,
    xenReservationBytes: UInt64?, xenTargetKiB: UInt64?, unreadable: SourceError? = nil
  ) {
    var payload: XenObservation?
    if let xenReservationBytes, let xenTargetKiB {
      payload = XenObservation(reservationBytes: xenReservationBytes, targetKiB: xenTargetKiB)
    }
    self.init(
      kind: kind, name: name, present: present, bound: bound, currentBytes: currentBytes,
      targetBytes: targetBytes, leverAvailable: leverAvailable, payload: payload,
      unreadable: unreadable)
  }
}

extension XenDriver: UdevMatching {
  /// xen_memory has one device, the balloon.
  var eventSubsystems: [String] { [UdevBalloonIDs.xenSubsystem] }

  func isBalloonEvent(
    subsystem: String, name: String, modalias: String?, sysattr: (String) -> String?
  ) -> Bool { true }

  /// `xen_memory0` in subsystem `xen_memory`; the built-in driver is not
  /// bound to it, so the driver is always `xen-balloon`.
  func discover(_ udev: Udev) throws(SourceError) -> [BalloonDevice] {
    try xen(udev).map { [$0] } ?? []
  }

  func xen(_ udev: Udev) throws(SourceError) -> BalloonDevice? {
    guard
      let device = try udev.device(
        subsystem: UdevBalloonIDs.xenSubsystem, sysname: UdevBalloonIDs.xenDevice)
    else { return nil }
    return BalloonDevice(
      kind: .xen, name: device.sysname, sysPath: device.syspath, driver: UdevBalloonIDs.xenDriver)
  }
}
