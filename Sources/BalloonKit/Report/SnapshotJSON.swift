/// The documented `--json` shape of a snapshot (`status --json`, `limit --json`,
/// `run --once --json`). Sizes are integers in bytes; unknown is `null`.
///
///     {"balloons":[{"kind","name","driver","bound","current_bytes","target_bytes",
///       "current_source","target_source","features", …}],
///      "memory":{"total_bytes","guest_bytes","swap_total_bytes","pinned_bytes",
///        "pinned":{"hugetlb_bytes","locked_bytes","dma_pinned_bytes","kernel_bytes",
///                  "unswappable_bytes","vm_pin_complete","unreadable_processes"}},
///      "limit":{"bytes","fraction","bounded_by","maxmemctl_mb"},
///      "over_limit": …}
///
/// `vm_pin_complete` is false when some `/proc/<pid>/status` could not be
/// read (Σ VmPin, and so `dma_pinned_bytes`, is then a floor; `notes` names
/// the first file), null when processes were not scanned;
/// `unreadable_processes` counts those processes (0 when complete).
public enum SnapshotJSON {
  public static func members(_ snapshot: GuestSnapshot, processes: Int? = nil) -> [(
    String, JSONValue
  )] {
    var members: [(String, JSONValue)] = [
      ("balloons", .array(snapshot.balloons.map { balloon($0, in: snapshot) })),
      ("memory", memory(snapshot)),
      ("limit", limit(snapshot.limit)),
      ("over_limit", .bool(snapshot.overLimit)),
    ]
    if let processes {
      members.append(("processes", .array(snapshot.processes.prefix(processes).map(process))))
    }
    members.append(("notes", .array(snapshot.notes.map(JSONValue.string))))
    return members
  }

  public static func document(_ snapshot: GuestSnapshot, processes: Int? = nil) -> JSONValue {
    .object(members(snapshot, processes: processes))
  }

  public static func balloon(_ reading: BalloonReading, in snapshot: GuestSnapshot) -> JSONValue {
    let device = reading.device
    return .object([
      ("kind", .string(device.kind.rawValue)),
      ("name", .string(device.name)),
      ("driver", .optional(device.driver)),
      ("bound", .bool(device.bound)),
      ("current_bytes", .optional(reading.current.bytes)),
      ("target_bytes", .optional(reading.target.bytes)),
      ("current_source", .optional(reading.current.source)),
      ("target_source", .optional(reading.target.source)),
      ("features", .array(reading.features.map(JSONValue.string))),
      ("current_reason", .optional(reading.current.reason)),
      ("target_reason", .optional(reading.target.reason)),
      ("device_actual_bytes", .optional(reading.deviceActualBytes)),
      ("sys_path", .string(device.sysPath)),
      ("pci_address", .optional(device.pciAddress)),
      ("removes_from_memtotal", .bool(device.removesFromMemTotal)),
      ("over_limit", .bool(snapshot.isOverLimit(reading))),
    ])
  }

  public static func memory(_ snapshot: GuestSnapshot) -> JSONValue {
    let pinned = snapshot.pinned
    return .object([
      ("total_bytes", .integer(snapshot.meminfo.memTotal)),
      ("guest_bytes", .integer(snapshot.guestBytes)),
      ("swap_total_bytes", .integer(snapshot.meminfo.swapTotal)),
      ("pinned_bytes", .integer(pinned.totalBytes)),
      (
        "pinned",
        .object(
          pinnedParts(OOMPinned(pinned)) + [
            ("vm_pin_complete", snapshot.vmPinCoverage.map { .bool($0.complete) } ?? .null),
            (
              "unreadable_processes",
              .integer(UInt64(max(0, snapshot.vmPinCoverage?.unreadableProcesses ?? 0)))
            ),
          ])
      ),
      ("available_bytes", .optional(snapshot.meminfo.memAvailable)),
    ])
  }

  /// The pinned breakdown's parts, in one order for every JSON that shows it
  /// (`memory.pinned` here, each OOM record's `pinned` in OOMRecordJSON.swift).
  /// OOMPinned holds just these five, so it is the one argument type.
  static func pinnedParts(_ pinned: OOMPinned) -> [(String, JSONValue)] {
    [
      ("hugetlb_bytes", .integer(pinned.hugetlbBytes)),
      ("locked_bytes", .integer(pinned.lockedBytes)),
      ("dma_pinned_bytes", .integer(pinned.dmaPinnedBytes)),
      ("kernel_bytes", .integer(pinned.kernelBytes)),
      ("unswappable_bytes", .integer(pinned.unswappableBytes)),
    ]
  }

  public static func limit(_ limit: BalloonLimit) -> JSONValue {
    .object([
      ("bytes", .integer(limit.bytes)),
      ("fraction", .number(limit.fraction)),
      ("bounded_by", .string(limit.boundedBy.rawValue)),
      ("maxmemctl_mb", .integer(limit.maxmemctlMB)),
    ])
  }

  public static func process(_ process: ProcessPins) -> JSONValue {
    .object([
      ("pid", .signed(Int64(process.pid))),
      ("name", .string(process.name)),
      ("locked_bytes", .integer(process.lockedBytes)),
      ("pinned_bytes", .integer(process.pinnedBytes)),
    ])
  }
}
