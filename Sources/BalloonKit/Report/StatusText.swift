/// The human `status` report: what balloon, how big, what is pinned, the limit.
/// Built as blocks separated by blank lines (`blocks()`), each fitted to 80
/// columns, so a new block is one more entry in the list.
public struct StatusText {
  public var snapshot: GuestSnapshot
  /// Show this many top processes by locked + pinned memory (nil: none).
  public var processes: Int?
  /// Colour (only on a terminal) and block characters or ASCII.
  public var style: TerminalStyle
  /// The balloons the daemon holds (`BalloonRecord.key`), from its state file.
  public var heldBalloons: Set<String>
  public var barWidth = 48

  /// ANSI emphasis for "OVER LIMIT" (only on a terminal).
  public var color: Bool {
    get { style.color }
    set { style.color = newValue }
  }

  public init(
    snapshot: GuestSnapshot, processes: Int? = nil, color: Bool = false,
    heldBalloons: Set<String> = []
  ) {
    self.init(
      snapshot: snapshot, processes: processes,
      style: TerminalStyle(color: color, unicode: true), heldBalloons: heldBalloons)
  }

  public init(
    snapshot: GuestSnapshot, processes: Int? = nil, style: TerminalStyle,
    heldBalloons: Set<String> = []
  ) {
    self.snapshot = snapshot
    self.processes = processes
    self.style = style
    self.heldBalloons = heldBalloons
  }

  public var assessment: StatusAssessment {
    StatusAssessment(snapshot: snapshot, heldBalloons: heldBalloons)
  }

  public func render() -> String {
    TerminalText.fit(blocks().map { $0.joined(separator: "\n") }.joined(separator: "\n\n"))
  }

  /// The report's blocks, in order; blank lines go between them.
  public func blocks() -> [[String]] {
    let assessment = assessment
    var blocks: [[String]] = []
    if snapshot.balloons.isEmpty {
      blocks.append([
        "Balloon   none found (no virtio, VMware, Xen or Hyper-V balloon in this guest)"
      ])
    } else {
      blocks.append(assessment.balloons.flatMap(balloonLines))
    }
    blocks.append(memoryLines())
    blocks.append(limitLines())
    if let count = processes { blocks.append(processLines(count)) }
    blocks.append([verdict(assessment)])
    return blocks
  }

  func limitLines() -> [String] {
    let limit = snapshot.limit
    var lines = ["Limit     \(ByteFormat.human(limit.bytes))  " + limitSummary(limit)]
    if limit.boundedBy == .swap {
      lines.append(
        "          (\(ByteFormat.fraction(limit.fraction)) × (guest − pinned) would be "
          + "\(ByteFormat.human(limit.fractionBytes)))")
    }
    lines.append("  VMware  sched.mem.maxmemctl = \"\(limit.maxmemctlMB)\"  (MB, in the VM's .vmx)")
    for note in snapshot.notes { lines.append("Note      \(note)") }
    return lines
  }

  func balloonLines(_ assessed: StatusAssessment.Balloon) -> [String] {
    let balloon = assessed.reading
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
    // A long source or reason continues under its parenthesis.
    lines += TerminalText.wrap("  current   " + sourced(balloon.current), indent: 23)
    if let actual = balloon.deviceActualBytes, actual != balloon.current.bytes {
      lines.append("  actual    \(ByteFormat.human(actual))  (virtio config actual)")
    }
    lines += TerminalText.wrap("  target    " + sourced(balloon.target), indent: 23)
    lines += device.kind.driver.statusLines(balloon)
    switch assessed.condition {
    case .within: break
    case .over(let by):
      lines.append("  " + style.alarm("OVER LIMIT") + " by \(ByteFormat.human(by))")
    case .held(let targetOverBy):
      lines.append(
        "  " + style.notice("held") + "      "
          + StatusAssessment.heldPhrase(balloon, targetOverBy: targetOverBy))
    case .heldStillOver(let by):
      lines.append(
        "  " + style.alarm("OVER LIMIT") + " by \(ByteFormat.human(by)) although held:"
          + " the balloon has not come back under the limit")
    }
    return lines
  }

  /// `12.0 MiB   (source)`.
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
    let cell = glyphs
    return [
      "Memory    guest \(ByteFormat.human(guest)) (\(guestNote)), \(swap)",
      "  " + bar(pinned: pinned.totalBytes, balloon: ballooned, whole: guest),
      "  \(cell.pinned) pinned \(ByteFormat.human(pinned.totalBytes)) \(ByteFormat.percent(pinned.totalBytes, of: guest))"
        + "  \(cell.balloon) balloon \(ByteFormat.human(ballooned)) \(ByteFormat.percent(ballooned, of: guest))"
        + "  \(cell.rest) rest \(ByteFormat.human(rest)) \(ByteFormat.percent(rest, of: guest))",
      "  pinned  = hugetlb \(ByteFormat.human(pinned.hugetlbBytes))"
        + " + locked \(ByteFormat.human(pinned.lockedBytes))"
        + " + dma \(ByteFormat.human(pinned.dmaPinnedBytes))",
      "          + kernel \(ByteFormat.human(pinned.kernelBytes))"
        + " + unswappable \(ByteFormat.human(pinned.unswappableBytes))",
    ]
  }

  /// The bar's three cells: shaded blocks, or ASCII for a terminal whose
  /// character set is not UTF-8 (see `TerminalStyle.localeIsUTF8`).
  var glyphs: (pinned: Character, balloon: Character, rest: Character) {
    style.unicode ? ("█", "▒", "░") : ("#", "=", ".")
  }

  /// One line of `barWidth` cells: pinned, then balloon, then the rest, and a
  /// `|` where the limit would end (measured from the balloon's start). Safe
  /// for any sizes: parts larger than `whole` fill the bar, never more.
  func bar(pinned: UInt64, balloon: UInt64, whole: UInt64) -> String {
    let width = max(0, barWidth)
    let cell = glyphs
    guard whole > 0 else { return "[" + String(repeating: cell.rest, count: width) + "]" }
    // The share is clamped in Double before converting, so a part 2^64
    // times the whole cannot make an Int out of range.
    func cells(_ part: UInt64) -> Int {
      let share = min(1, Double(part) / Double(whole))
      return min(width, Int((share * Double(width)).rounded()))
    }
    let pinnedCells = min(width, max(pinned > 0 ? 1 : 0, cells(pinned)))
    let balloonCells = min(width - pinnedCells, max(balloon > 0 ? 1 : 0, cells(balloon)))
    var characters = Array(repeating: cell.rest, count: width)
    for index in 0..<pinnedCells { characters[index] = cell.pinned }
    for index in pinnedCells..<(pinnedCells + balloonCells) { characters[index] = cell.balloon }
    let limitCell = min(width, pinnedCells + cells(snapshot.limit.bytes))
    guard limitCell < width else { return "[" + String(characters) + "]" }
    characters.insert("|", at: limitCell)
    return "[" + String(characters) + "]  | = limit"
  }

  func limitSummary(_ limit: BalloonLimit) -> String {
    switch limit.boundedBy {
    case .fraction:
      "= \(ByteFormat.fraction(limit.fraction)) × (guest − pinned), bounded by the fraction"
    case .swap:
      "= guest swap: the balloon must not exceed swap"
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

  func verdict(_ assessment: StatusAssessment) -> String {
    if snapshot.balloons.isEmpty {
      return "OK: no balloon; the limit above is what a balloon would be allowed."
    }
    var over: [String] = []
    var held: [String] = []
    for balloon in assessment.balloons {
      switch balloon.condition {
      case .over, .heldStillOver: over.append(balloon.reading.device.name)
      case .held: held.append(balloon.reading.device.name)
      case .within: break
      }
    }
    if !over.isEmpty {
      return style.alarm("OVER LIMIT")
        + ": \(over.joined(separator: ", ")) may take memory the guest cannot give (limit \(ByteFormat.human(snapshot.limit.bytes)))."
    }
    if !held.isEmpty {
      let names = held.joined(separator: ", ")
      return style.notice("HELD")
        + ": \(names) \(held.count == 1 ? "is" : "are") released and held by the daemon;"
        + " nothing is over the limit."
    }
    let unknownTarget = snapshot.balloons.contains { $0.target.bytes == nil }
    return unknownTarget
      ? "OK: every balloon is under the limit now (a target is unknown, so a coming inflation can't be seen)."
      : "OK: every balloon and its target are under the limit."
  }

}
