/// `balloonctl limit`: the formula with this guest's numbers and the host-side
/// settings that enforce the limit.
public struct LimitText {
  public var snapshot: GuestSnapshot
  public var host: HostSettings

  public init(snapshot: GuestSnapshot, host: HostSettings) {
    self.snapshot = snapshot
    self.host = host
  }

  /// Swap verdict against KB 340369 ("the maximum balloon size … must be less
  /// than or equal to the configured swap space in the guest").
  public enum SwapCheck: String, Sendable {
    /// SwapTotal ≥ limit.
    case sufficient
    /// 0 < SwapTotal < fraction × reclaimable: swap bounds the limit.
    case bounding
    /// No swap: anonymous memory is counted as pinned instead.
    case none
  }

  public var swapCheck: SwapCheck {
    let swap = snapshot.meminfo.swapTotal
    if swap == 0 { return .none }
    return snapshot.limit.boundedBy == .swap ? .bounding : .sufficient
  }

  public var vmxLine: String { "sched.mem.maxmemctl = \"\(host.vmwareMaxmemctlMB)\"" }

  public func render(explain: Bool) -> String {
    let limit = snapshot.limit
    let pinned = snapshot.pinned
    let h = ByteFormat.human
    var lines: [String] = []
    lines.append(
      "Limit  \(h(limit.bytes))  (\(limit.bytes) bytes, bounded by \(limit.boundedBy.rawValue))")
    lines.append("")
    let guestSource =
      limit.guestBytes == snapshot.meminfo.memTotal
      ? "MemTotal"
      : "MemTotal \(h(snapshot.meminfo.memTotal)) + pages the driver took out"
    lines.append(row("  ", "guest", h(limit.guestBytes), guestSource))
    lines.append(
      row("− ", "pinned", h(pinned.totalBytes), "hugetlb + locked + dma + kernel + unswappable"))
    if explain {
      lines += explainPinned()
    }
    lines.append(
      row("= ", "reclaimable", h(limit.reclaimableBytes), "what the balloon could take at all"))
    lines.append(
      row(
        "× ", "fraction", ByteFormat.fraction(limit.fraction),
        "VMware's default balloon cap (--fraction)"))
    lines.append(row("= ", "", h(limit.fractionBytes), "\(limit.fractionBytes) bytes"))
    switch swapCheck {
    case .sufficient:
      lines.append(
        "    swap \(h(snapshot.meminfo.swapTotal)) is at least that, so swap does not lower it")
    case .bounding:
      lines.append(
        "    swap \(h(snapshot.meminfo.swapTotal)) is less: the balloon must not exceed guest swap,"
          + " so the limit is \(h(limit.bytes))")
    case .none:
      lines.append("    no swap: all anonymous and shmem memory already counts as pinned above")
    }
    lines.append("")
    lines.append("Host side (the guest cannot cap the balloon itself on VMware or KVM)")
    lines.append("  VMware  \(vmxLine)")
    lines.append("          in the VM's .vmx (MB), then power-cycle the VM; KB 340369")
    if let floor = host.kvmMinimumTargetMiB, let ram = host.configuredRAMBytes {
      // Saturating: `<<` would silently drop the high bits of a hand-built
      // floor (compute() keeps it below 2^44 MiB, where the bytes fit).
      let floorBytes = floor *| BalloonLimit.mebibyte
      lines.append("  KVM     keep the guest's RAM target at or above \(floor) MiB:")
      lines.append("            virsh setmem <domain> \(floor)M --live")
      lines.append(
        "            QMP {\"execute\":\"balloon\",\"arguments\":{\"value\":\(floorBytes)}}")
      lines.append(
        "          (configured RAM ≈ \(h(ram)) from the firmware memory map − the limit)")
    } else {
      lines.append(
        "  KVM     RAM target floor unknown (no firmware memory map to learn the configured"
          + " RAM): keep the target ≥ configured RAM − \(limit.bytes >> 20) MiB")
    }
    lines.append("")
    switch swapCheck {
    case .sufficient:
      lines.append(
        "Swap    \(h(snapshot.meminfo.swapTotal)) ≥ limit \(h(limit.bytes)): enough for the balloon to push out"
      )
    case .bounding:
      lines.append(
        "Swap    \(h(snapshot.meminfo.swapTotal)) bounds the limit; more guest swap would allow up to "
          + "\(h(limit.fractionBytes))")
    case .none:
      lines.append(
        "Swap    none: KB 340369 asks for guest swap ≥ the balloon cap; without it the balloon"
          + " can take only page cache and free memory")
    }
    if explain { lines += explainSources() }
    // Rows wrap their note under the note's column; other long lines under
    // their text (TerminalText.fit).
    return TerminalText.fit(lines.joined(separator: "\n"))
  }

  /// `  − pinned       2.0 GiB     why`: sign, label, value, note in fixed
  /// columns; a note too long for 80 columns continues under itself.
  func row(_ sign: String, _ label: String, _ value: String, _ note: String, nested: Bool = false)
    -> String
  {
    let head = "  " + sign + (nested ? "  " : "") + label
    let line = ByteFormat.padded(head, 19) + ByteFormat.padded(value, 12) + note
    return TerminalText.wrap(line, indent: 31).joined(separator: "\n")
  }

  func opt(_ bytes: UInt64?) -> String { ByteFormat.human(bytes, unknown: "absent") }

  func explainPinned() -> [String] {
    let p = snapshot.pinned
    let m = snapshot.meminfo
    let h = ByteFormat.human
    var lines: [String] = []
    lines.append(
      row(
        "  ", "hugetlb", h(p.hugetlbBytes),
        "\(p.hugetlbSource): never swapped or ballooned", nested: true))
    lines.append(
      row(
        "  ", "locked", h(p.lockedBytes),
        "max(Mlocked \(opt(m.mlocked)), Unevictable \(opt(m.unevictable)))", nested: true))
    let pins =
      "Σ VmPin \(p.vmPinSumBytes.map(h) ?? "not scanned"), FOLL_PIN refs × 4 KiB \(p.follPinOutstandingBytes.map(h) ?? "n/a")"
    lines.append(row("  ", "dma", h(p.dmaPinnedBytes), "max(\(pins))", nested: true))
    lines.append(
      row(
        "  ", "kernel", h(p.kernelBytes),
        "SUnreclaim + KernelStack + PageTables + SecPageTables + Percpu", nested: true))
    if m.swapTotal == 0 {
      lines.append(
        row(
          "  ", "unswappable", h(p.unswappableBytes),
          "no swap: AnonPages \(opt(m.anonPages)) + Shmem \(opt(m.shmem)) − locked", nested: true))
    } else {
      lines.append(
        row(
          "  ", "unswappable", h(p.unswappableBytes),
          "swap exists, so anonymous memory can leave RAM", nested: true))
    }
    return lines
  }

  func explainSources() -> [String] {
    var lines = ["", "Sources"]
    lines.append("  /proc/meminfo   MemTotal, Mlocked, Unevictable, Hugetlb, SUnreclaim,")
    lines.append("                  KernelStack, PageTables, SecPageTables, Percpu, AnonPages,")
    lines.append("                  Shmem, SwapTotal")
    lines.append("  /proc/vmstat    nr_foll_pin_acquired − nr_foll_pin_released")
    lines.append("                  (outstanding DMA pins)")
    lines.append("  /proc/*/status  VmPin (pinned_vm: RDMA, io_uring, iommufd), summed over")
    lines.append("                  processes")
    for balloon in snapshot.balloons where balloon.device.removesFromMemTotal {
      lines.append(
        "  \(balloon.device.name)  its driver takes ballooned pages out of MemTotal, so guest"
          + " adds them back")
    }
    return lines
  }

  public func json() -> JSONValue {
    var hostMembers: [(String, JSONValue)] = [
      ("vmware_maxmemctl_mb", .integer(host.vmwareMaxmemctlMB)),
      ("vmx_line", .string(vmxLine)),
      ("kvm_min_target_mib", .optional(host.kvmMinimumTargetMiB)),
      ("configured_ram_bytes", .optional(host.configuredRAMBytes)),
      ("configured_ram_source", .optional(host.configuredRAMSource)),
    ]
    hostMembers.append(("swap_check", .string(swapCheck.rawValue)))
    var limit = SnapshotJSON.limit(snapshot.limit)
    if case .object(var members) = limit {
      members.append(("guest_bytes", .integer(snapshot.limit.guestBytes)))
      members.append(("pinned_bytes", .integer(snapshot.limit.pinnedBytes)))
      members.append(("reclaimable_bytes", .integer(snapshot.limit.reclaimableBytes)))
      members.append(("fraction_bytes", .integer(snapshot.limit.fractionBytes)))
      members.append(("swap_total_bytes", .integer(snapshot.limit.swapTotalBytes)))
      limit = .object(members)
    }
    return .object([
      ("limit", limit),
      ("memory", SnapshotJSON.memory(snapshot)),
      ("host", .object(hostMembers)),
    ])
  }
}
