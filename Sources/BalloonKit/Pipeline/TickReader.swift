public import Logging
import SystemPackage

/// One balloon as a tick saw it: discovery's device, its reading (or why it
/// could not be read), and the observation the policy decides on.
public struct BalloonSight: Sendable {
  public var device: BalloonDevice
  /// Discovery lists it now. A held balloon it does not list (an unloaded
  /// vmw_balloon, an unplugged device) is seen too, identified from the state file.
  public var listed: Bool
  /// Unlisted, but its driver's fixed device (acted on by name, not path).
  public var actsUnlisted: Bool
  public var reading: BalloonReading?
  public var observation: BalloonObservation

  public var key: String { BalloonRecord.key(kind: device.kind, name: device.name) }
}

/// What one tick read, in one direction: discovery → files → accounting →
/// limit. The only input of the policy besides the holds.
public struct TickReading: Sendable {
  public var snapshot: GuestSnapshot
  /// Discovery's balloons in its order, then held balloons it no longer lists.
  public var sights: [BalloonSight]
  /// Balloons discovery lists whose files could not be read this tick.
  public var unreadable: [(device: BalloonDevice, error: SourceError)]
  /// Discovery's list this tick.
  public var devices: [BalloonDevice]
}

/// The first stage of the pipeline shared by `status`, `limit`, `run --once`
/// and the daemon: keeps the discovery cache and the files read every tick
/// open, sets the read cadence, and turns one tick's reads into one
/// `TickReading`. Reads only.
public final class TickReader {
  public struct Options: Sendable {
    public var fraction: Double
    /// Reads the virtio target from the device; nil leaves it unknown.
    public var probe: (any VirtioConfigProbe)?
    /// Scan /proc/<pid>/status for Σ VmPin (and, with `rankProcesses`, keep the list).
    public var scanProcesses: Bool
    public var rankProcesses: Bool
    /// The levers (enforce mode): the observation says whether each can be
    /// pulled here. nil (report mode, one-shot commands): every lever counts as there.
    public var levers: Actuators?
    /// Enforce mode reads /proc/vmstat every tick while a virtio size comes
    /// from its counters (they lead the lagging gauge).
    public var enforcing: Bool
    /// See `ControllerConfig` for these three.
    public var processScanSeconds: Double
    public var processScanSecondsWithoutCounters: Double
    public var rediscoverSeconds: Double

    public init(
      fraction: Double = BalloonLimit.defaultFraction, probe: (any VirtioConfigProbe)? = nil,
      scanProcesses: Bool = true, rankProcesses: Bool = false, levers: Actuators? = nil,
      enforcing: Bool = false, processScanSeconds: Double = 600,
      processScanSecondsWithoutCounters: Double = 30, rediscoverSeconds: Double = 300
    ) {
      self.fraction = fraction
      self.probe = probe
      self.scanProcesses = scanProcesses
      self.rankProcesses = rankProcesses
      self.levers = levers
      self.enforcing = enforcing
      self.processScanSeconds = processScanSeconds
      self.processScanSecondsWithoutCounters = processScanSecondsWithoutCounters
      self.rediscoverSeconds = rediscoverSeconds
    }
  }

  /// How often /proc/vmstat is read when nothing needs it every tick (its
  /// pin counters move slowly; a change of them triggers the process scan).
  public static let vmstatEveryTicks = 10

  public let root: Root
  public let options: Options
  let logger: Logger

  public private(set) var devices: [BalloonDevice] = []
  private var lastDiscovery = -Double.infinity
  private var discoveryDue = true

  // The two files read every tick stay open (one pread each).
  private let meminfoFile: KeptOpenFile
  private let vmstatFile: KeptOpenFile
  // Their paths as strings, made once: a FilePath-to-String conversion per
  // tick showed in the idle tick's profile (BENCHMARKS.md).
  private let meminfoPath: String
  private let vmstatPath: String
  private var vmPinSum: UInt64?
  /// VmPin per pid from the last scan, so a status that turns unreadable
  /// keeps counting what it pinned (the limit never rises for that reason).
  private var lastKnownVmPin: [Int32: UInt64] = [:]
  private var vmPinCoverage: VmPinCoverage?
  private var loggedScanProblem: String?
  private var lastProcessScan = -Double.infinity
  private var lastFollOutstanding: UInt64?
  /// The last /proc/vmstat read, its age in ticks, and whether the last tick
  /// saw a virtio size without the device's own `actual`.
  private var lastVmstat: Vmstat?
  private var ticksSinceVmstat = 0
  private var sizedByCounters = false
  /// Per balloon key, last tick's read error: a new one asks for discovery
  /// (a device being unplugged then shows as gone, not unreadable).
  private var lastUnreadable: [String: String] = [:]

  /// - Parameter devices: balloons already discovered; nil discovers on the
  ///   first read (and again on `invalidateDevices` or after `rediscoverSeconds`).
  public init(
    root: Root, options: Options,
    logger: Logger = Logger(label: "balloonctl", factory: { _ in SwiftLogNoOpLogHandler() }),
    devices: [BalloonDevice]? = nil
  ) {
    if let devices {
      self.devices = devices
      discoveryDue = false
      lastDiscovery = .infinity
    }
    self.root = root
    self.options = options
    self.logger = logger
    meminfoFile = KeptOpenFile(
      root.path(MeminfoReader.path), capacity: 8192, shortReadIsEnd: true)
    vmstatFile = KeptOpenFile(root.path(VmstatReader.path), capacity: 16384)
    meminfoPath = meminfoFile.path.string
    vmstatPath = vmstatFile.path.string
  }

  /// Ask for discovery on the next read (a udev event arrived, a lever was pulled).
  public func invalidateDevices() { discoveryDue = true }

  /// Make the next read take /proc/vmstat afresh (an OOM kill is recorded
  /// with the sizes of that moment, not of a few ticks ago).
  public func invalidateVmstat() { lastVmstat = nil }

  /// One tick's reading. `strict` (`status`, `limit`, `run --once`): a
  /// discovered balloon or /proc that cannot be read fails it, naming the
  /// file. Otherwise (the daemon) an unreadable balloon is a sight with the
  /// error, and a failed process scan keeps the last Σ VmPin.
  /// `held`: keys of balloons held now; those discovery does not list are seen too.
  public func read(now: Double, strict: Bool, held: [BalloonRecord] = []) throws(SourceError)
    -> TickReading
  {
    if discoveryDue || now - lastDiscovery >= options.rediscoverSeconds {
      let found = try Discovery.discover(root: root)
      if found != devices {
        logger.info(
          "balloons discovered",
          metadata: ["balloons": "\(found.map { "\($0.name)(\($0.driver ?? "unbound"))" })"])
      }
      devices = found
      lastDiscovery = now
      discoveryDue = false
    }

    let meminfo = try readMeminfo()
    let vmstat = try vmstatForTick(meminfo: meminfo)
    // The same reading for every command. A listed balloon that cannot be
    // read is not gone: the daemon keeps its hold and pulls no lever on it.
    let results = BalloonReaders.readAll(
      devices, root: root, meminfo: meminfo, vmstat: vmstat, probe: options.probe)
    var readings: [BalloonReading] = []
    var unreadable: [(device: BalloonDevice, error: SourceError)] = []
    for (device, result) in zip(devices, results) {
      switch result {
      case .success(let reading): readings.append(reading)
      case .failure(let error):
        if strict { throw error }
        unreadable.append((device, error))
      }
    }
    var processes: [ProcessPins] = []
    if options.scanProcesses {
      processes = try refreshVmPin(vmstat: vmstat, now: now, strict: strict)
    }
    noteReadErrors(unreadable)
    sizedByCounters = readings.contains { $0.device.kind.driver.sizedByCounters($0) }
    let snapshot = GuestSnapshot.assemble(
      balloons: readings, meminfo: meminfo, vmstat: vmstat,
      vmPinSumBytes: options.scanProcesses ? vmPinSum : nil,
      vmPinCoverage: options.scanProcesses ? vmPinCoverage : nil,
      processes: options.rankProcesses ? GuestSnapshotReader.rankByPinned(processes) : [],
      fraction: options.fraction)

    let heldKeys = Set(held.filter { $0.hold.held }.map(\.key))
    var sights: [BalloonSight] = []
    for (device, result) in zip(devices, results) {
      let key = BalloonRecord.key(kind: device.kind, name: device.name)
      var reading: BalloonReading?
      var error: SourceError?
      switch result {
      case .success(let value): reading = value
      case .failure(let failure): error = failure
      }
      var observation = observe(
        device, reading: reading, listed: true, actsUnlisted: false,
        held: heldKeys.contains(key))
      observation.unreadable = error
      sights.append(
        BalloonSight(
          device: device, listed: true, actsUnlisted: false, reading: reading,
          observation: observation))
    }
    // Held balloons discovery no longer lists. Their identity comes from the
    // state file, so no path of theirs is ever read or acted on: only a
    // driver's fixed device (the vmw_balloon module, by name) can be re-admitted.
    for record in held where record.hold.held {
      guard !devices.contains(where: { $0.kind == record.kind && $0.name == record.name }) else {
        continue
      }
      let fixed = record.kind.driver.unlistedDevice(named: record.name)
      let device =
        fixed ?? BalloonDevice(kind: record.kind, name: record.name, sysPath: "", driver: nil)
      sights.append(
        BalloonSight(
          device: device, listed: false, actsUnlisted: fixed != nil, reading: nil,
          observation: observe(
            device, reading: nil, listed: false, actsUnlisted: fixed != nil, held: true)))
    }
    return TickReading(
      snapshot: snapshot, sights: sights, unreadable: unreadable, devices: devices)
  }

  /// A listed balloon read again on its own, just before a lever is pulled
  /// (the state may have moved since the tick began). nil: not listed, or
  /// it cannot be read now.
  public func reread(_ sight: BalloonSight, held: Bool) -> BalloonSight? {
    guard devices.contains(sight.device) else { return nil }
    do {
      let meminfo = try readMeminfo()
      let vmstat = try readVmstat()
      let reading = try BalloonReaders.read(
        sight.device, root: root, meminfo: meminfo, vmstat: vmstat, probe: options.probe)
      var fresh = sight
      fresh.reading = reading
      fresh.observation = observe(
        sight.device, reading: reading, listed: sight.listed, actsUnlisted: sight.actsUnlisted,
        held: held)
      return fresh
    } catch {
      return nil
    }
  }

  private func observe(
    _ device: BalloonDevice, reading: BalloonReading?, listed: Bool, actsUnlisted: Bool,
    held: Bool
  ) -> BalloonObservation {
    // An unlisted device's path is not trusted (it came from the state file).
    let canAct = listed || actsUnlisted
    return BalloonObservation(
      kind: device.kind, name: device.name, present: listed,
      bound: listed && device.bound,
      currentBytes: reading?.effectiveCurrentBytes, targetBytes: reading?.target.bytes,
      leverAvailable: canAct
        ? (options.levers?.leverAvailable(for: device, held: held) ?? true) : false,
      payload: reading.flatMap { device.kind.driver.payload(device, reading: $0, root: root) })
  }

  /// A new read error (or a changed one) asks for discovery on the next tick.
  private func noteReadErrors(_ unreadable: [(device: BalloonDevice, error: SourceError)]) {
    var now: [String: String] = [:]
    for (device, error) in unreadable {
      let key = BalloonRecord.key(kind: device.kind, name: device.name)
      let text = error.description
      now[key] = text
      if lastUnreadable[key] != text { discoveryDue = true }
    }
    lastUnreadable = now
  }

  private func readMeminfo() throws(SourceError) -> Meminfo {
    guard try meminfoFile.refresh() else {
      throw SourceError(path: meminfoPath, .unreadable(.noSuchFileOrDirectory))
    }
    return try meminfoFile.withBytes { bytes throws(SourceError) in
      try MeminfoReader.parse(bytes, path: meminfoPath)
    }
  }

  /// /proc/vmstat (the costlier of the two files) is read every tick only
  /// when it holds the freshest evidence of a size the daemon acts on: a
  /// virtio balloon in enforce mode without the device's `actual` (the
  /// balloon_inflate/deflate events lead the lagging gauge), or a kernel
  /// without `Balloon:` in meminfo (< 6.15: the events are the only size).
  /// Otherwise every `vmstatEveryTicks` ticks, for the pin counters.
  private func vmstatForTick(meminfo: Meminfo) throws(SourceError) -> Vmstat {
    let sizedByVmstat = devices.contains { $0.kind.driver.sizedByVmstat }
    let everyTick =
      (sizedByVmstat && meminfo.balloon == nil) || (options.enforcing && sizedByCounters)
    if let lastVmstat, !everyTick, ticksSinceVmstat + 1 < Self.vmstatEveryTicks {
      ticksSinceVmstat += 1
      return lastVmstat
    }
    let vmstat = try readVmstat()
    lastVmstat = vmstat
    ticksSinceVmstat = 0
    return vmstat
  }

  private func readVmstat() throws(SourceError) -> Vmstat {
    guard try vmstatFile.refresh() else {
      throw SourceError(path: vmstatPath, .unreadable(.noSuchFileOrDirectory))
    }
    return try vmstatFile.withBytes { bytes throws(SourceError) in
      try VmstatReader.parse(bytes, path: vmstatPath, pageSize: root.pageSize)
    }
  }

  /// The FOLL_PIN pages outstanding (nil: the kernel has no counters).
  private static func follOutstanding(_ vmstat: Vmstat) -> UInt64? {
    guard let acquired = vmstat.follPinAcquired, let released = vmstat.follPinReleased else {
      return nil
    }
    return acquired > released ? acquired - released : 0
  }

  /// Whether Σ VmPin is re-scanned now: never scanned, the global pin count
  /// moved, or the backstop ran out.
  private func processScanDue(outstanding: UInt64?, now: Double) -> Bool {
    let backstop =
      outstanding == nil ? options.processScanSecondsWithoutCounters : options.processScanSeconds
    return vmPinSum == nil || outstanding != lastFollOutstanding
      || now - lastProcessScan >= backstop
  }

  // MARK: The steady tick (Controller.steadyTick)

  /// Whether every balloon's reading comes from the kernel's counters alone
  /// (its driver's `steadyFromCounters`; virtio without a probe: its size
  /// from nr_balloon_pages or Balloon:, its target unknown,
  /// docs/kernel-interfaces.md) and nothing but the
  /// counters is read for it: report mode, no lever to check, no process
  /// list kept. Then a tick whose /proc/meminfo has the same `Balloon:` and
  /// whose /proc/vmstat is the cached one reads the same balloons as the
  /// last tick, and only the limit can differ.
  var readsCountersOnly: Bool {
    options.probe == nil && options.levers == nil && !options.enforcing
      && !options.rankProcesses && devices.allSatisfy { $0.kind.driver.steadyFromCounters }
  }

  /// The steady tick's read: /proc/meminfo, in the kernel's layout, and
  /// /proc/vmstat when it is due. nil when this tick would do more
  /// (discovery or a process scan due, vmstat's balloon or pin counters
  /// moved) or a file reads or parses otherwise; the tick then takes the full path, which reads it again
  /// and names any problem. Changes nothing: `noteSteadyTick` commits.
  func readSteadyMeminfo(now: Double) -> Meminfo? {
    steadyVmstat = nil
    guard !discoveryDue, now - lastDiscovery < options.rediscoverSeconds, let lastVmstat
    else { return nil }
    var vmstat = lastVmstat
    if ticksSinceVmstat + 1 >= Self.vmstatEveryTicks {
      // Due for its pin counters: the tick stays steady only if the
      // counters the balloon readings and the process scan depend on are
      // as cached (then so are the readings, and the limit's DMA-pinned part).
      guard let fresh = try? readVmstat(), fresh.balloonBytes == lastVmstat.balloonBytes,
        fresh.balloonInflatedBytes == lastVmstat.balloonInflatedBytes,
        fresh.balloonDeflatedBytes == lastVmstat.balloonDeflatedBytes,
        Self.follOutstanding(fresh) == Self.follOutstanding(lastVmstat)
      else { return nil }
      vmstat = fresh
    }
    guard
      !options.scanProcesses
        || !processScanDue(outstanding: Self.follOutstanding(vmstat), now: now),
      (try? meminfoFile.refresh()) == true
    else { return nil }
    if ticksSinceVmstat + 1 >= Self.vmstatEveryTicks { steadyVmstat = vmstat }
    return try? meminfoFile.withBytes { MeminfoReader.parseKernelLayout($0) }
  }

  /// The /proc/vmstat the steady tick read (when due), kept by `noteSteadyTick`.
  private var steadyVmstat: Vmstat?

  /// The limit `read` would compute from this meminfo, the cached vmstat and
  /// Σ VmPin (as GuestSnapshot.assemble does), with `balloonBytes` the sizes
  /// of the balloons that take their pages out of MemTotal.
  func steadyLimitBytes(_ meminfo: Meminfo, balloonBytes: UInt64) -> (
    limit: UInt64, pinned: UInt64
  )? {
    guard let vmstat = steadyVmstat ?? lastVmstat else { return nil }
    let pinned = PinnedAccounting.account(
      meminfo: meminfo, vmstat: vmstat, vmPinSumBytes: options.scanProcesses ? vmPinSum : nil)
    let limit = BalloonLimit.compute(
      guestBytes: meminfo.memTotal +| balloonBytes, pinnedBytes: pinned.totalBytes,
      swapTotalBytes: meminfo.swapTotal, fraction: options.fraction
    ).bytes
    return (limit, pinned.totalBytes)
  }

  /// What `read` changes on a tick that reads only /proc/meminfo: the
  /// cached vmstat grows a tick older, or is replaced by the one just read.
  func noteSteadyTick() {
    if let steadyVmstat {
      lastVmstat = steadyVmstat
      ticksSinceVmstat = 0
      self.steadyVmstat = nil
    } else {
      ticksSinceVmstat += 1
    }
  }

  /// Σ VmPin, refreshed when the global pin count moved or the backstop ran
  /// out. A process whose status cannot be read counts with the VmPin last
  /// read from it (unknown, and so 0, if never read); the answer is marked
  /// partial. `strict` fails on an unlistable /proc. Returns the processes
  /// scanned this tick (empty when no scan ran).
  private func refreshVmPin(vmstat: Vmstat, now: Double, strict: Bool) throws(SourceError)
    -> [ProcessPins]
  {
    let outstanding = Self.follOutstanding(vmstat)
    guard processScanDue(outstanding: outstanding, now: now) else { return [] }
    lastProcessScan = now
    let scan: ProcessScan
    do {
      scan = try ProcessStatusReader.scan(root: root)
    } catch {
      if strict { throw error }
      vmPinCoverage = VmPinCoverage(firstError: error, scanFailed: true)
      if loggedScanProblem != error.description {
        logger.warning(
          "process scan failed; keeping the last Σ VmPin", metadata: ["error": "\(error)"])
        loggedScanProblem = error.description
      }
      return []
    }
    var known: [Int32: UInt64] = [:]
    known.reserveCapacity(scan.processes.count + scan.unreadable.count)
    var sum: UInt64 = 0
    for process in scan.processes {
      sum = sum +| process.pinnedBytes
      known[process.pid] = process.pinnedBytes
    }
    var kept = 0
    for failure in scan.unreadable {
      guard let pid = failure.pid, let last = lastKnownVmPin[pid] else { continue }
      sum = sum +| last
      known[pid] = last
      kept += 1
    }
    lastKnownVmPin = known
    vmPinSum = sum
    lastFollOutstanding = outstanding
    vmPinCoverage = VmPinCoverage(
      unreadableProcesses: scan.unreadable.count, lastKnownProcesses: kept,
      firstError: scan.unreadable.first?.error)
    let problem = scan.unreadable.first?.error.description
    if problem != loggedScanProblem {
      if let problem {
        logger.warning(
          "some processes' VmPin unreadable; Σ VmPin is partial",
          metadata: [
            "unreadable": "\(scan.unreadable.count)", "last_known": "\(kept)",
            "first": "\(problem)",
          ])
      }
      loggedScanProblem = problem
    }
    return scan.processes
  }
}
