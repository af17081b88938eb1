/// The host-side setting that keeps a balloon within the limit, per
/// hypervisor, so the guard never has to act. Two families:
///
///   - a maximum balloon size (VMware, Firecracker, cloud-hypervisor):
///     floor(limit / 1 MiB) MiB, rounded down;
///   - a minimum guest memory, the host's RAM target (Proxmox, libvirt, QEMU
///     QMP, Xen, Hyper-V): configured RAM − limit, with the configured RAM
///     rounded up and the limit rounded down to whole MiB (Hyper-V: up to a
///     2 MiB step), so the floor is never below the true one.
///
/// Rounding always errs on the safe side: a smaller balloon, a higher floor.
public struct HostAdvice: Sendable, Equatable {
  public enum Setting: String, Sendable {
    case maximumBalloon = "maximum_balloon"
    case minimumMemory = "minimum_memory"
  }

  public var hypervisor: Hypervisor
  public var setting: Setting
  /// The value in bytes (a whole number of the hypervisor's unit); nil when
  /// it cannot be computed (`unavailable` says why).
  public var bytes: UInt64?
  /// The value in the unit the command takes.
  public var value: UInt64?
  public var unit: String
  /// What the value is, in the hypervisor's words.
  public var title: String
  /// The exact lines to type or paste.
  public var commands: [String]
  public var notes: [String]
  public var unavailable: String?
}

/// The inputs of the advice, all read by the caller.
public struct AdviceInputs: Sendable, Equatable {
  /// The limit now: the same number `status` and `limit` show.
  public var limit: BalloonLimit
  /// The highest pinned figure the daemon recorded since boot, and when
  /// (epoch seconds); nil when no daemon state records one.
  public var peakPinnedBytes: UInt64?
  public var peakPinnedAt: Int64?
  /// The VM's configured RAM as the host counts it, and where it came from;
  /// nil when unknown (no firmware memory map).
  public var configuredRAM: UInt64?
  public var configuredRAMSource: String?

  public init(
    limit: BalloonLimit, peakPinnedBytes: UInt64? = nil, peakPinnedAt: Int64? = nil,
    configuredRAM: UInt64? = nil, configuredRAMSource: String? = nil
  ) {
    self.limit = limit
    self.peakPinnedBytes = peakPinnedBytes
    self.peakPinnedAt = peakPinnedAt
    self.configuredRAM = configuredRAM
    self.configuredRAMSource = configuredRAMSource
  }

  /// The daemon records the peak only when it rises by a MiB or more, so the
  /// true peak can be up to this much above the recorded one.
  public static let peakStep = BalloonLimit.mebibyte

  /// The pinned figure the margin assumes: the recorded peak + its step.
  public var peakPinnedUpperBytes: UInt64? { peakPinnedBytes.map { $0 +| Self.peakStep } }

  /// The limit as if pinned memory were at its peak since boot; nil when no
  /// peak is recorded or it is not above the pinned memory now.
  public var peakLimit: BalloonLimit? {
    guard let peak = peakPinnedUpperBytes, peak > limit.pinnedBytes else { return nil }
    return BalloonLimit.compute(
      guestBytes: limit.guestBytes, pinnedBytes: peak, swapTotalBytes: limit.swapTotalBytes,
      fraction: limit.fraction)
  }

  /// The limit the advice uses: the lower of now and at the pinned peak.
  public var advisedLimitBytes: UInt64 { min(limit.bytes, peakLimit?.bytes ?? limit.bytes) }

  /// Configured RAM in whole MiB, rounded up.
  public var configuredRAMMiB: UInt64? {
    configuredRAM.map { ($0 +| (BalloonLimit.mebibyte - 1)) / BalloonLimit.mebibyte }
  }
}

extension HostAdvice {
  static let mebibyte = BalloonLimit.mebibyte

  /// The advice for one hypervisor. Pure.
  public static func compute(_ hypervisor: Hypervisor, _ inputs: AdviceInputs) -> HostAdvice {
    let limitMiB = inputs.advisedLimitBytes / mebibyte
    switch hypervisor {
    case .vmware:
      return HostAdvice(
        hypervisor: .vmware, setting: .maximumBalloon, bytes: limitMiB * mebibyte,
        value: limitMiB, unit: "MB", title: "largest balloon, sched.mem.maxmemctl",
        commands: [
          "sched.mem.maxmemctl = \"\(limitMiB)\"",
          "govc vm.change -vm <vm> -e sched.mem.maxmemctl=\(limitMiB)",
        ],
        notes: ["the .vmx line takes effect at the next power-on; KB 340369"])
    case .firecracker:
      return HostAdvice(
        hypervisor: .firecracker, setting: .maximumBalloon, bytes: limitMiB * mebibyte,
        value: limitMiB, unit: "MiB", title: "largest balloon, amount_mib",
        commands: [
          "curl --unix-socket <api.sock> -X PATCH http://localhost/balloon "
            + "-d '{\"amount_mib\": \(limitMiB)}'"
        ],
        notes: ["never PATCH /balloon an amount_mib above \(limitMiB)"])
    case .cloudHypervisor:
      let bytes = limitMiB * mebibyte
      return HostAdvice(
        hypervisor: .cloudHypervisor, setting: .maximumBalloon, bytes: bytes, value: bytes,
        unit: "bytes", title: "largest balloon size",
        commands: [
          "ch-remote --api-socket <api.sock> resize --balloon \(bytes)",
          "cloud-hypervisor ... --balloon size=\(limitMiB)M",
        ],
        notes: ["never resize the balloon above \(bytes) bytes"])
    case .proxmox, .libvirt, .qemu, .xen, .hyperv:
      return floorAdvice(hypervisor, inputs, limitMiB: limitMiB)
    }
  }

  static func floorAdvice(_ hypervisor: Hypervisor, _ inputs: AdviceInputs, limitMiB: UInt64)
    -> HostAdvice
  {
    var advice = HostAdvice(
      hypervisor: hypervisor, setting: .minimumMemory, bytes: nil, value: nil, unit: "MiB",
      title: "", commands: [], notes: [])
    switch hypervisor {
    case .proxmox: advice.title = "minimum memory, qm --balloon"
    case .libvirt: advice.title = "lowest virsh setmem --live"
    case .qemu: advice.title = "lowest QMP balloon value"
    case .xen: advice.title = "lowest xl mem-set"
    default: advice.title = "Set-VMMemory -MinimumBytes"
    }
    guard let ramMiB = inputs.configuredRAMMiB else {
      advice.unavailable = "no System RAM in /sys/firmware/memmap: configured RAM unknown"
      advice.notes = ["keep the guest's RAM at or above its configured RAM − \(limitMiB) MiB"]
      return advice
    }
    var floorMiB = ramMiB > limitMiB ? ramMiB - limitMiB : 0
    let ram = "\(ramMiB) MiB configured − \(limitMiB) MiB limit"
    switch hypervisor {
    case .proxmox:
      advice.commands = ["qm set <vmid> --balloon \(floorMiB)"]
      advice.notes = [
        "\(ram); memory= stays \(ramMiB)", "balloon= is the least RAM Proxmox leaves the guest",
      ]
    case .libvirt:
      advice.commands = ["virsh setmem <domain> \(floorMiB)M --live"]
      advice.notes = [
        ram,
        "<currentMemory> in the domain XML must stay at or above \(floorMiB) MiB too",
      ]
    case .qemu:
      let bytes = floorMiB * mebibyte
      advice.unit = "bytes"
      advice.value = bytes
      advice.commands = [
        "{\"execute\":\"balloon\",\"arguments\":{\"value\":\(bytes)}}",
        "(HMP: balloon \(floorMiB))",
      ]
      advice.notes = [
        ram,
        "the value is the guest's RAM target, not the balloon's size: send no less",
      ]
    case .xen:
      advice.commands = ["xl mem-set <domain> \(floorMiB)m"]
      advice.notes = [ram, "the domain's memory target must not go below this"]
    default:
      // Hyper-V takes memory in 2 MiB steps: round the floor up to one.
      floorMiB += floorMiB % 2
      let bytes = floorMiB * mebibyte
      advice.unit = "bytes"
      advice.value = bytes
      advice.commands = ["Set-VMMemory -VMName <vm> -MinimumBytes \(bytes)"]
      advice.notes = [ram + ", rounded up to Hyper-V's 2 MiB step"]
    }
    advice.bytes = floorMiB * mebibyte
    if advice.value == nil { advice.value = floorMiB }
    return advice
  }
}
