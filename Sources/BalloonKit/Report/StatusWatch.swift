/// The last readings of each balloon's size, for the watch view's sparkline.
public struct SizeHistory: Sendable, Equatable {
  public let capacity: Int
  /// Per `BalloonRecord.key`, oldest first; nil where the size was unknown.
  public private(set) var readings: [String: [UInt64?]] = [:]

  public init(capacity: Int = 40) { self.capacity = max(1, capacity) }

  public mutating func record(_ snapshot: GuestSnapshot) {
    for balloon in snapshot.balloons {
      let key = BalloonRecord.key(kind: balloon.device.kind, name: balloon.device.name)
      var values = readings[key] ?? []
      values.append(balloon.effectiveCurrentBytes)
      if values.count > capacity { values.removeFirst(values.count - capacity) }
      readings[key] = values
    }
  }
}

/// Sizes as one character each, 8 levels from 0 to `scale`.
public enum Sparkline {
  static let blocks: [Character] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"]
  /// For a character set that is not UTF-8: rising ink.
  static let ascii: [Character] = ["_", ".", ",", "-", "=", "+", "*", "#"]

  /// `?` for an unknown size; a size at or over `scale` is the top level, and
  /// any size above 0 at least the second, so a small balloon is not drawn
  /// as none.
  public static func render(_ values: [UInt64?], scale: UInt64, unicode: Bool) -> String {
    let levels = unicode ? blocks : ascii
    let top = levels.count - 1
    return String(
      values.map { value -> Character in
        guard let value else { return "?" }
        guard value > 0, scale > 0 else { return levels[0] }
        // Clamped in Double, so no conversion back to Int can overflow.
        let share = min(1, Double(value) / Double(scale))
        return levels[max(1, min(top, Int((share * Double(top)).rounded())))]
      })
  }
}

/// One frame of `status --watch`: per balloon its size, target, the limit,
/// the daemon's hold and the size's history; then the verdict. At most 80
/// columns, so a frame redrawn in place never wraps.
public struct StatusWatchFrame {
  public var snapshot: GuestSnapshot
  public var heldBalloons: Set<String>
  /// The daemon's word on each balloon (`BalloonRecord.key` → "held since
  /// 21:40:05: target over the limit"); empty without a state file.
  public var daemonLines: [String]
  public var history: SizeHistory
  public var intervalSeconds: Double
  /// When the reading was taken (seconds since the epoch), shown as local time.
  public var takenAt: Int64
  public var style: TerminalStyle

  public init(
    snapshot: GuestSnapshot, heldBalloons: Set<String>, daemonLines: [String],
    history: SizeHistory, intervalSeconds: Double, takenAt: Int64, style: TerminalStyle
  ) {
    self.snapshot = snapshot
    self.heldBalloons = heldBalloons
    self.daemonLines = daemonLines
    self.history = history
    self.intervalSeconds = intervalSeconds
    self.takenAt = takenAt
    self.style = style
  }

  public func render() -> String {
    let h = ByteFormat.human
    let text = StatusText(snapshot: snapshot, style: style, heldBalloons: heldBalloons)
    let assessment = text.assessment
    var lines = [
      Self.title(intervalSeconds: intervalSeconds, takenAt: takenAt),
      "",
      "Limit     \(h(snapshot.limit.bytes))  " + text.limitSummary(snapshot.limit),
    ]
    if snapshot.balloons.isEmpty {
      lines.append("Balloon   none found")
    }
    for balloon in assessment.balloons {
      let reading = balloon.reading
      let key = BalloonRecord.key(kind: reading.device.kind, name: reading.device.name)
      lines.append("")
      lines.append("Balloon   \(reading.device.name)  \(reading.device.kind.rawValue)")
      lines.append("  current   \(ByteFormat.human(reading.effectiveCurrentBytes))")
      lines.append("  target    \(ByteFormat.human(reading.target.bytes))")
      switch balloon.condition {
      case .within: lines.append("  hold      none")
      case .over(let by):
        lines.append("  hold      none; " + style.alarm("OVER LIMIT") + " by \(h(by))")
      case .held(let over):
        lines.append(
          "  hold      " + style.notice("held") + ", "
            + StatusAssessment.heldPhrase(reading, targetOverBy: over))
      case .heldStillOver(let by):
        lines.append(
          "  hold      held, but " + style.alarm("OVER LIMIT") + " by \(h(by)) still")
      }
      let values = history.readings[key] ?? []
      let largest = values.compactMap { $0 }.max() ?? 0
      let scale = max(largest, snapshot.limit.bytes)
      lines.append(
        "  history   " + Sparkline.render(values, scale: scale, unicode: style.unicode)
          + "  (last \(values.count), 0 to \(h(scale)))")
    }
    if !daemonLines.isEmpty {
      lines.append("")
      lines += daemonLines
    }
    lines.append("")
    lines.append(text.verdict(assessment))
    return TerminalText.fit(lines.joined(separator: "\n"))
  }

  public static func title(intervalSeconds: Double, takenAt: Int64) -> String {
    "balloonctl status --watch: every \(RunSetting.text(intervalSeconds)) s, "
      + "\(DaemonReport.clock(takenAt))  (Ctrl-C quits)"
  }
}

/// The escape sequences of a view redrawn in place, as watch(1) does.
public enum TerminalScreen {
  /// The alternate screen (the shell's screen comes back on leaving) and no
  /// cursor.
  public static let enter = "\u{1B}[?1049h\u{1B}[?25l"
  /// The cursor back, then the shell's screen.
  public static let leave = "\u{1B}[?25h\u{1B}[?1049l"

  /// `frame` drawn from the top-left corner: each line clears what is left
  /// of the previous frame's line, and the rest of the screen is cleared.
  /// At most `rows` lines (the terminal's height, when known): one more
  /// would scroll the screen, and the next frame would not overwrite this one.
  public static func redraw(_ frame: String, rows: Int? = nil) -> String {
    var lines = frame.split(separator: "\n", omittingEmptySubsequences: false)
    if let rows, rows > 0, lines.count > rows { lines = Array(lines.prefix(rows)) }
    return "\u{1B}[H" + lines.map { $0 + "\u{1B}[K" }.joined(separator: "\n") + "\u{1B}[J"
  }
}
