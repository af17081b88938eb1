/// `balloonctl advise`: what was detected, the limit (with the pinned-growth
/// margin), and per hypervisor the exact host-side setting.
public struct AdviceReport: Sendable {
  public var inputs: AdviceInputs
  /// nil when the hypervisor was named with --hypervisor.
  public var detection: HypervisorDetection?
  public var advice: [HostAdvice]

  public init(inputs: AdviceInputs, detection: HypervisorDetection?, hypervisors: [Hypervisor]) {
    self.inputs = inputs
    self.detection = detection
    self.advice = hypervisors.map { HostAdvice.compute($0, inputs) }
  }

  public func render() -> String {
    let h = ByteFormat.human
    var lines: [String] = []
    if let detection {
      lines.append("Detected  \(detection.found ?? "no hypervisor")")
      for fact in detection.evidence { lines.append("          - \(fact)") }
      if detection.candidates.count > 1 {
        lines.append("          (their guests look alike from inside: each one is shown)")
      }
    }
    let limit = inputs.limit
    lines.append(
      "Limit     \(h(limit.bytes)) (\(limit.bytes) bytes): the most the balloon may hold")
    let formula =
      "\(ByteFormat.fraction(limit.fraction)) × (guest \(h(limit.guestBytes))"
      + " − pinned \(h(limit.pinnedBytes)))"
    if limit.boundedBy == .swap {
      lines.append("          guest swap, below \(formula)")
    } else {
      lines.append("          \(formula)")
    }
    if let peak = inputs.peakLimit, let peakPinned = inputs.peakPinnedBytes {
      lines.append(
        "Margin    pinned peaked at \(h(peakPinned)) since boot (now \(h(limit.pinnedBytes)));")
      lines.append("          with the 1 MiB the daemon records it to, the limit at that peak")
      lines.append("          is \(h(peak.bytes)) (\(peak.bytes) bytes): the advice below uses it")
    } else if inputs.peakPinnedBytes != nil {
      lines.append("Margin    none needed: pinned is above its recorded peak since boot")
    } else {
      lines.append("Margin    none: no daemon state records pinned memory's peak since boot")
    }
    if let ram = inputs.configuredRAM, let mib = inputs.configuredRAMMiB {
      lines.append(
        "RAM       \(h(ram)) configured (\(inputs.configuredRAMSource ?? "?")), \(mib) MiB rounded up"
      )
    }
    for item in advice {
      lines.append("")
      lines.append("\(Self.name(item.hypervisor))  \(item.title)")
      if let problem = item.unavailable { lines.append("  unknown: \(problem)") }
      for command in item.commands { lines.append("  \(command)") }
      for note in item.notes { lines.append("    \(note)") }
    }
    return lines.joined(separator: "\n")
  }

  public static func name(_ hypervisor: Hypervisor) -> String {
    switch hypervisor {
    case .vmware: "VMware"
    case .proxmox: "Proxmox"
    case .libvirt: "libvirt"
    case .qemu: "QEMU (QMP)"
    case .firecracker: "Firecracker"
    case .cloudHypervisor: "cloud-hypervisor"
    case .xen: "Xen"
    case .hyperv: "Hyper-V"
    }
  }

  public func json() -> JSONValue {
    let limit = inputs.limit
    var detected: JSONValue = .null
    if let detection {
      detected = .object([
        ("found", .optional(detection.found)),
        ("evidence", .array(detection.evidence.map(JSONValue.string))),
        ("hypervisors", .array(detection.candidates.map { .string($0.rawValue) })),
      ])
    }
    return .object([
      ("detected", detected),
      (
        "limit",
        .object([
          ("bytes", .integer(limit.bytes)),
          ("fraction", .number(limit.fraction)),
          ("bounded_by", .string(limit.boundedBy.rawValue)),
          ("guest_bytes", .integer(limit.guestBytes)),
          ("pinned_bytes", .integer(limit.pinnedBytes)),
          ("swap_total_bytes", .integer(limit.swapTotalBytes)),
        ])
      ),
      ("peak_pinned_bytes", .optional(inputs.peakPinnedBytes)),
      ("peak_pinned_at", inputs.peakPinnedAt.map(JSONValue.signed) ?? .null),
      ("peak_pinned_upper_bytes", .optional(inputs.peakPinnedUpperBytes)),
      ("peak_limit_bytes", .optional(inputs.peakLimit?.bytes)),
      ("advised_limit_bytes", .integer(inputs.advisedLimitBytes)),
      ("configured_ram_bytes", .optional(inputs.configuredRAM)),
      ("configured_ram_source", .optional(inputs.configuredRAMSource)),
      ("advice", .array(advice.map(Self.json))),
    ])
  }

  static func json(_ item: HostAdvice) -> JSONValue {
    .object([
      ("hypervisor", .string(item.hypervisor.rawValue)),
      ("setting", .string(item.setting.rawValue)),
      ("title", .string(item.title)),
      ("bytes", .optional(item.bytes)),
      ("value", .optional(item.value)),
      ("unit", .string(item.unit)),
      ("commands", .array(item.commands.map(JSONValue.string))),
      ("notes", .array(item.notes.map(JSONValue.string))),
      ("unavailable", .optional(item.unavailable)),
    ])
  }
}
