/// The human `status` report: what balloon, how big, what is pinned, the limit.
public struct StatusText {
  public var snapshot: GuestSnapshot
  /// Show this many top processes by locked + pinned memory (nil: none).
  public var processes: Int?
  /// ANSI emphasis for "OVER LIMIT" (only on a terminal).
  public var color: Bool
  public var barWidth = 48

  public init(snapshot: GuestSnapshot, processes: Int? = nil, color: Bool = false) {
    self.snapshot = snapshot
    self.processes = processes
    self.color = color
  }

  public func render() -> String {
    var lines: [String] = []
    let limit = snapshot.limit
    if snapshot.balloons.isEmpty {
      lines.append("Balloon   none found (no virtio, VMware, Xen or Hyper-V balloon in this guest)")
    }
    for balloon in snapshot.balloons {
      lines += balloonLines(balloon)
    }
    lines.append("")
    lines += memoryLines()
    lines.append("")
    lines.append(
      "Limit     \(ByteFormat.human(limit.bytes))  \(limitSummary(limit))")
    lines.append("  VMware  sched.mem.maxmemctl = \"\(limit.maxmemctlMB)\"  (MB, in the VM's .vmx)")
    for note in snapshot.notes { lines.append("Note      \(note)") }
    if let count = processes {
      lines.append("")
      lines += processLines(count)
    }
    lines.append("")
    lines.append(verdict())
    return lines.joined(separator: "\n")
  }

  func balloonLines(_ balloon: BalloonReading) -> [String] {
    let device = balloon.device
    var identity = "\(device.kind.rawValue)"
    if let driver = device.driver {
      identity += ", driver \(driver) (bound)"
    } else {
      identity += ", no driver bound"
    }
    if let pci = device.pciAddress { identity += ", PCI \(pci)" }
    var lines = ["Balloon   \(device.name)  \(identity)"]
    if !balloon.features.isEmpty {
      lines.append("  features  \(balloon.features.joined(separator: " "))")
    }
    lines.append("  current   " + sourced(balloon.current))
    if let actual = balloon.deviceActualBytes, actual != balloon.current.bytes {
      lines.append("  actual    \(ByteFormat.human(actual))  (virtio config actual)")
    }
    lines.append("  target    " + sourced(balloon.target))
    lines += device.kind.driver.statusLines(balloon)
    if snapshot.isOverLimit(balloon) {
      lines.append("  " + emphasis("OVER LIMIT") + " by \(ByteFormat.human(overBy(balloon)))")
    }
    return lines
  }

  func sourced(_ value: Sourced) -> String {
    switch value {
    case .known(let bytes, let source):
      ByteFormat.padded(ByteFormat.human(bytes), 11) + "(\(source))"
    case .unknown(let reason): ByteFormat.padded("unknown", 11) + "(\(reason))"
    }
  }

  func memoryLines() -> [String] {
    let guest = snapshot.guestBytes
    let pinned = snapshot.pinned
    let ballooned = snapshot.balloons.reduce(UInt64(0)) { $0 +| ($1.effectiveCurrentBytes ?? 0) }
    let swap =
      snapshot.meminfo.swapTotal == 0
      ? "swap none" : "swap \(ByteFormat.human(snapshot.meminfo.swapTotal))"
    var guestNote = "MemTotal"
    if guest != snapshot.meminfo.memTotal { guestNote = "MemTotal + ballooned pages" }
    let rest = guest > pinned.totalBytes +| ballooned ? guest - (pinned.totalBytes +| ballooned) : 0
    return [
      "Memory    guest \(ByteFormat.human(guest)) (\(guestNote)), \(swap)",
      "  " + bar(pinned: pinned.totalBytes, balloon: ballooned, whole: guest),
      "  █ pinned \(ByteFormat.human(pinned.totalBytes)) \(ByteFormat.percent(pinned.totalBytes, of: guest))"
        + "  ▒ balloon \(ByteFormat.human(ballooned)) \(ByteFormat.percent(ballooned, of: guest))"
        + "  ░ rest \(ByteFormat.human(rest)) \(ByteFormat.percent(rest, of: guest))",
      "  pinned  = hugetlb \(ByteFormat.human(pinned.hugetlbBytes))"
        + " + locked \(ByteFormat.human(pinned.lockedBytes))"
        + " + dma \(ByteFormat.human(pinned.dmaPinnedBytes))"
        + " + kernel \(ByteFormat.human(pinned.kernelBytes))"
        + " + unswappable \(ByteFormat.human(pinned.unswappableBytes))",
    ]
  }

  /// One line of `barWidth` cells: pinned, then balloon, then the rest, and a
  /// `|` where the limit would end (measured from the balloon's start). Safe
  /// for any sizes: parts larger than `whole` fill the bar, never more.
  func bar(pinned: UInt64, balloon: UInt64, whole: UInt64) -> String {
    let width = max(0, barWidth)
    guard whole > 0 else { return "[" + String(repeating: "░", count: width) + "]" }
    // The share is clamped in Double before converting, so a part 2^64
    // times the whole cannot make an Int out of range.
    func cells(_ part: UInt64) -> Int {
      let share = min(1, Double(part) / Double(whole))
      return min(width, Int((share * Double(width)).rounded()))
    }
    let pinnedCells = min(width, max(pinned > 0 ? 1 : 0, cells(pinned)))
    let balloonCells = min(width - pinnedCells, max(balloon > 0 ? 1 : 0, cells(balloon)))
    var characters = Array(repeating: "░", count: width)
    for index in 0..<pinnedCells { characters[index] = "█" }
    for index in pinnedCells..<(pinnedCells + balloonCells) { characters[index] = "▒" }
    let limitCell = min(width, pinnedCells + cells(snapshot.limit.bytes))
    let body = characters.joined()
    guard limitCell < width else { return "[" + body + "]" }
    var marked = Array(body)
    marked.insert("|", at: limitCell)
    return "[" + String(marked) + "]  | = limit"
  }

  func limitSummary(_ limit: BalloonLimit) -> String {
    switch limit.boundedBy {
    case .fraction:
      "= \(ByteFormat.fraction(limit.fraction)) × (guest − pinned), bounded by the fraction"
    case .swap:
      "= guest swap, which is below \(ByteFormat.fraction(limit.fraction)) × (guest − pinned) = "
        + "\(ByteFormat.human(limit.fractionBytes)): the balloon must not exceed swap"
    }
  }

  func processLines(_ count: Int) -> [String] {
    let top = snapshot.processes.prefix(count)
    guard !top.isEmpty else { return ["Processes none hold locked or pinned memory"] }
    var lines = ["Processes by locked + pinned memory (VmLck, VmPin)"]
    lines.append(
      "  " + ByteFormat.leftPadded("PID", 8) + "  " + ByteFormat.padded("NAME", 16)
        + ByteFormat.leftPadded("LOCKED", 11) + ByteFormat.leftPadded("PINNED", 11))
    for process in top {
      lines.append(
        "  " + ByteFormat.leftPadded("\(process.pid)", 8) + "  "
          + ByteFormat.padded(process.name, 16)
          + ByteFormat.leftPadded(ByteFormat.human(process.lockedBytes), 11)
          + ByteFormat.leftPadded(ByteFormat.human(process.pinnedBytes), 11))
    }
    return lines
  }

  func overBy(_ balloon: BalloonReading) -> UInt64 {
    let largest = max(balloon.effectiveCurrentBytes ?? 0, balloon.target.bytes ?? 0)
    return largest > snapshot.limit.bytes ? largest - snapshot.limit.bytes : 0
  }

  func verdict() -> String {
    if snapshot.balloons.isEmpty {
      return "OK: no balloon; the limit above is what a balloon would be allowed."
    }
    let over = snapshot.balloons.filter(snapshot.isOverLimit)
    guard !over.isEmpty else {
      let unknownTarget = snapshot.balloons.contains { $0.target.bytes == nil }
      return unknownTarget
        ? "OK: every balloon is under the limit now (a target is unknown, so a coming inflation can't be seen)."
        : "OK: every balloon and its target are under the limit."
    }
    let names = over.map { $0.device.name }.joined(separator: ", ")
    return emphasis("OVER LIMIT")
      + ": \(names) may take memory the guest cannot give (limit \(ByteFormat.human(snapshot.limit.bytes)))."
  }

  func emphasis(_ text: String) -> String {
    color ? "\u{1B}[1;31m\(text)\u{1B}[0m" : text
  }
}
