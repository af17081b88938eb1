import SystemPackage

/// How the daemon learns that the host asked for a new balloon size: from
/// the balloon driver's own events (a kprobe on the function the driver
/// runs for it, woken within milliseconds), or only at its ticks.
public struct Wakeups: Sendable, Equatable {
  public enum Mode: String, Sendable, CaseIterable {
    case events, tick
  }

  public var mode: Mode
  /// Why the daemon ticks only (mode `tick`), or nil.
  public var reason: String?
  /// The probed functions (mode `events`), as `name [module]`.
  public var symbols: [String]
  /// The tick while nothing is held (mode `events`): BALLOONCTL_EVENTS_INTERVAL.
  public var idleIntervalMilliseconds: UInt64?
  /// Why the host's target cannot be read (the PCI window's write refused
  /// under lockdown), or nil: with events, the release then follows the size.
  public var targetProblem: String?

  public init(
    mode: Mode, reason: String? = nil, symbols: [String] = [],
    idleIntervalMilliseconds: UInt64? = nil
  ) {
    self.mode = mode
    self.reason = reason
    self.symbols = symbols
    self.idleIntervalMilliseconds = idleIntervalMilliseconds
  }

  public func json() -> JSONValue {
    .object([
      ("mode", .string(mode.rawValue)),
      ("reason", reason.map(JSONValue.string) ?? .null),
      ("symbols", .array(symbols.map(JSONValue.string))),
      ("idle_interval_ms", .optional(idleIntervalMilliseconds)),
      ("target_problem", .optional(targetProblem)),
    ])
  }

  /// The most functions a daemon probes (one per balloon kind, and a few more).
  static let maxSymbols = 16

  /// Read back from state.json (untrusted): the mode a word, the texts
  /// checked as every state-file text is, a reason exactly in mode `tick`.
  static func parse(_ fields: StateFields) throws(SourceError) -> Wakeups {
    let mode = Mode(rawValue: try fields.word("mode", Mode.allCases.map(\.rawValue)))!
    let reason = try fields.optionalText("reason")
    guard (mode == .tick) == (reason != nil) else {
      throw fields.fail("reason", mode == .tick ? "is missing" : "is set with mode events")
    }
    let items = try fields.array("symbols")
    guard items.count <= maxSymbols else {
      throw fields.fail("symbols", "has \(items.count) entries; expected at most \(maxSymbols)")
    }
    var symbols: [String] = []
    for (index, item) in items.enumerated() {
      let field = "symbols[\(index)]"
      let member = try StateFields(
        .object([(field, item)]), path: fields.path, prefix: fields.prefix)
      symbols.append(try member.text(field))
    }
    let idle = try fields.optionalInteger("idle_interval_ms", StateRange.intervalMilliseconds)
    guard (mode == .events) == (idle != nil) else {
      throw fields.fail(
        "idle_interval_ms",
        mode == .events ? "is missing with mode events" : "is set with mode tick")
    }
    guard (mode == .events) == !symbols.isEmpty else {
      throw fields.fail(
        "symbols", mode == .events ? "is empty with mode events" : "is set with mode tick")
    }
    var wakeups = Wakeups(
      mode: mode, reason: reason, symbols: symbols, idleIntervalMilliseconds: idle)
    wakeups.targetProblem = try fields.optionalText("target_problem")
    return wakeups
  }
}

/// Kprobe perf events on the balloon drivers' event functions
/// (`BalloonDriver.eventSymbols`), one per online CPU each, whose fds sit in
/// the daemon's poll() (Waiter). Opened by `balloonctl run` on the live
/// system only: never by `status`, `limit` or `run --once`, and never in
/// tests (their parsers are tested on fixtures).
public final class BalloonEvents {
  public private(set) var events: [KprobeEvent]
  public let symbols: [KernelSymbol]
  let root: Root
  public var fileDescriptors: [Int32] { events.map(\.fileDescriptor) }

  private init(events: [KprobeEvent], symbols: [KernelSymbol], root: Root) {
    self.events = events
    self.symbols = symbols
    self.root = root
  }

  /// Whether a probed function lives in a module: unloading it (VMware's
  /// lever) takes the probe with it, and a reload puts the function elsewhere.
  public var probesModules: Bool { symbols.contains { $0.module != nil } }

  /// Opens the same probes again (after a udev event: the module may have
  /// been reloaded) and closes the old ones; the reason when it cannot.
  public func reattach() -> Unavailable? {
    switch Self.open(root: root, symbols: symbols) {
    case .success(let fresh):
      events = fresh
      return nil
    case .failure(let unavailable):
      return unavailable
    }
  }

  /// The reason it cannot be used, one line for the log, `status` and state.json.
  public struct Unavailable: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
  }

  /// The event functions of `drivers` that `symbols` (from /proc/kallsyms)
  /// lists exactly once, in the driver's module or built in; or why none.
  public static func choose(
    _ found: [KernelSymbol], drivers: [any BalloonDriver]
  ) -> Result<[KernelSymbol], Unavailable> {
    var chosen: [KernelSymbol] = []
    var problems: [String] = []
    for driver in drivers {
      for wanted in driver.eventSymbols {
        let matches = found.filter {
          $0.name == wanted.name && ($0.module == nil || $0.module == wanted.module)
        }
        switch matches.count {
        case 0: continue
        case 1: chosen.append(matches[0])
        default:
          // A name the kernel lists twice cannot be probed by name.
          problems.append("\(wanted.name) is listed \(matches.count) times")
        }
      }
    }
    if !chosen.isEmpty { return .success(chosen) }
    let looked = drivers.flatMap(\.eventSymbols).map(\.description).joined(separator: ", ")
    let detail = problems.isEmpty ? "" : " (\(problems.joined(separator: "; ")))"
    return .failure(
      Unavailable(
        reason:
          "no balloon driver event function to probe in \(KallsymsScanner.path) (looked for \(looked))\(detail)"
      ))
  }

  /// Attaches the probes for the kinds of balloon discovery lists now, or
  /// says why not. Never on a snapshot (`--root`). Only those kinds: a
  /// Debian kernel has Xen's watch_target built in on every hypervisor.
  public static func open(root: Root) -> Result<BalloonEvents, Unavailable> {
    guard root.isLive else {
      return .failure(Unavailable(reason: "not the live system (--root \(root))"))
    }
    let kinds: Set<BalloonKind>
    do {
      kinds = Set(try Discovery.discover(root: root).map(\.kind))
    } catch {
      return .failure(Unavailable(reason: "\(error)"))
    }
    let drivers = BalloonDrivers.all.filter { kinds.contains($0.kind) }
    guard !drivers.isEmpty else {
      return .failure(Unavailable(reason: "no balloon device at start-up"))
    }
    return open(root: root, drivers: drivers)
  }

  static func open(root: Root, drivers: [any BalloonDriver]) -> Result<BalloonEvents, Unavailable> {
    precondition(root.isLive, "probes attach on the live system only")
    let symbols: [KernelSymbol]
    do {
      guard try KprobePMU.type(root: root) != nil else {
        return .failure(
          Unavailable(
            reason:
              "the kernel has no kprobe PMU (\(KprobePMU.typePath) is absent: built without KPROBE_EVENTS or PERF_EVENTS)"
          ))
      }
      let names = Set(drivers.flatMap(\.eventSymbols).map(\.name))
      switch choose(try KallsymsScanner.find(names, root: root), drivers: drivers) {
      case .success(let chosen): symbols = chosen
      case .failure(let reason): return .failure(reason)
      }
    } catch let error where error.isRefusal {
      // systemd's ProtectKernelTunables= makes /proc/kallsyms inaccessible
      // (the packaged unit): the kernel then checks the names itself, and
      // perf_event_open fails for one it does not have.
      let declared = drivers.flatMap(\.eventSymbols)
      switch open(root: root, symbols: declared) {
      case .success(let events):
        return .success(BalloonEvents(events: events, symbols: declared, root: root))
      case .failure(let unavailable):
        return .failure(Unavailable(reason: "\(error); then \(unavailable.reason)"))
      }
    } catch {
      return .failure(Unavailable(reason: "\(error)"))
    }
    return open(root: root, symbols: symbols).map {
      BalloonEvents(events: $0, symbols: symbols, root: root)
    }
  }

  /// A probe per symbol per online CPU.
  static func open(root: Root, symbols: [KernelSymbol]) -> Result<[KprobeEvent], Unavailable> {
    let pmuType: UInt32
    let cpus: [Int32]
    do {
      guard let type = try KprobePMU.type(root: root) else {
        return .failure(Unavailable(reason: "the kernel has no kprobe PMU any more"))
      }
      pmuType = type
      cpus = try OnlineCPUs.read(root: root)
    } catch {
      return .failure(Unavailable(reason: "\(error)"))
    }
    var events: [KprobeEvent] = []
    for symbol in symbols {
      for cpu in cpus {
        do {
          events.append(try KprobeEvent.open(symbol: symbol, pmuType: pmuType, cpu: cpu))
        } catch {
          return .failure(Unavailable(reason: refusal(symbol: symbol, error: error, root: root)))
        }
      }
    }
    return .success(events)
  }

  /// Why perf_event_open failed, with the likely cause of an EPERM.
  static func refusal(symbol: KernelSymbol, error: Errno, root: Root) -> String {
    // Worded apart from the PCI window probe's failures (status, the journal).
    var text = "perf_event_open for \(symbol) failed: \(error)"
    if error == .notPermitted || error == .permissionDenied {
      let lockdown = KernelLockdown.mode(root: root)
      if let lockdown, lockdown == "confidentiality" {
        text += " (kernel lockdown is \(lockdown), which allows no kernel instrumentation)"
      } else {
        text += " (needs CAP_PERFMON or CAP_SYS_ADMIN, and perf_event_open in the syscall filter)"
      }
    }
    return text
  }

  /// What the rings held since the last drain.
  public struct Drained: Sendable, Equatable {
    public var hits = 0
    public var lost: UInt64 = 0
    /// The latest hit's CLOCK_MONOTONIC time in nanoseconds.
    public var latestNanoseconds: UInt64?
    /// A ring that did not parse (the first one), or nil.
    public var problem: SourceError?
  }

  public func drain() -> Drained {
    var drained = Drained()
    for event in events {
      do {
        for record in try event.drain() {
          switch record {
          case .sample(let time, _):
            drained.hits += 1
            drained.latestNanoseconds = max(drained.latestNanoseconds ?? 0, time)
          case .lost(let count): drained.lost &+= count
          case .other: break
          }
        }
      } catch {
        if drained.problem == nil { drained.problem = error }
      }
    }
    return drained
  }
}

/// The kernel's lockdown mode from `/sys/kernel/security/lockdown`
/// (`none [integrity] confidentiality`): the bracketed word, or nil when
/// the file is absent or not in that format.
public enum KernelLockdown {
  public static let path = "/sys/kernel/security/lockdown"

  public static func mode(root: Root) -> String? {
    guard let bytes = try? SystemFile.read(root.path(path)) else { return nil }
    return parse(bytes)
  }

  static func parse(_ bytes: [UInt8]) -> String? {
    let text = String(decoding: bytes, as: UTF8.self)
    guard text.hasSuffix("\n") else { return nil }
    let selected = text.dropLast().split(separator: " ").filter {
      $0.hasPrefix("[") && $0.hasSuffix("]") && $0.count > 2
    }
    guard selected.count == 1 else { return nil }
    return String(selected[0].dropFirst().dropLast())
  }
}

extension SourceError {
  /// The file exists but may not be read here (EACCES, EPERM).
  var isRefusal: Bool {
    if case .unreadable(let errno) = problem {
      return errno == .permissionDenied || errno == .notPermitted
    }
    return false
  }
}
