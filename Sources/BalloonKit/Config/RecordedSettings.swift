/// The settings a daemon runs with, as state.json records them (`settings`)
/// and `status --json` shows them (`daemon.settings`): what `status` needs
/// to show the daemon's own limit and re-admit threshold, and what an
/// administrator needs to know which settings are in force. Member names are
/// the declarations' (RunSetting.swift).
public struct RecordedSettings: Sendable, Equatable {
  public var mode: ControlMode
  public var intervalSeconds: Double
  public var fraction: Double
  public var margin: Double
  public var probeTarget: Bool
  public var levers: Set<BalloonKind>
  public var onExit: ExitPolicy

  public init(
    mode: ControlMode, intervalSeconds: Double, fraction: Double, margin: Double,
    probeTarget: Bool, levers: Set<BalloonKind>, onExit: ExitPolicy
  ) {
    self.mode = mode
    self.intervalSeconds = intervalSeconds
    self.fraction = fraction
    self.margin = margin
    self.probeTarget = probeTarget
    self.levers = levers
    self.onExit = onExit
  }

  public func json() -> JSONValue {
    .object([
      (RunSetting.mode.name, .string(mode.rawValue)),
      (RunSetting.interval.name, .number(intervalSeconds)),
      (RunSetting.fraction.name, .number(fraction)),
      (RunSetting.margin.name, .number(margin)),
      (RunSetting.probeTarget.name, .bool(probeTarget)),
      (
        RunSetting.levers.name,
        .array(BalloonKind.allCases.filter(levers.contains).map { .string($0.rawValue) })
      ),
      (RunSetting.onExit.name, .string(onExit.rawValue)),
    ])
  }

  /// One line for `status`: the settings the daemon line does not already show.
  public var summary: String {
    "fraction \(RunSetting.text(fraction)), margin \(RunSetting.text(margin)), probe target \(probeTarget ? "on" : "off"), levers \(RunSetting.text(levers)), on exit \(onExit.rawValue)"
  }

  /// Read back from state.json, each value checked as its flag would be: the
  /// file is untrusted input, and `status` computes thresholds from it.
  static func parse(_ fields: StateFields) throws(SourceError) -> RecordedSettings {
    RecordedSettings(
      mode: try fields.setting(RunSetting.mode, ControlMode.allCases.map(\.rawValue)),
      intervalSeconds: try fields.decimal(RunSetting.interval),
      fraction: try fields.decimal(RunSetting.fraction),
      margin: try fields.decimal(RunSetting.margin),
      probeTarget: try fields.bool(RunSetting.probeTarget.name),
      levers: try fields.levers(RunSetting.levers.name),
      onExit: try fields.setting(RunSetting.onExit, ExitPolicy.allCases.map(\.rawValue)))
  }
}

extension StateFields {
  /// A word a setting accepts (`enforce`, `hold`).
  fileprivate func setting<V, R>(_ setting: Setting<V, R>, _ words: [String]) throws(SourceError)
    -> V
  {
    let word = try word(setting.name, words)
    guard let value = setting.parse(word) else {
      throw fail(setting.name, "is \"\(word)\"; expected \(setting.expected)")
    }
    return value
  }

  /// A number the setting accepts (as a flag would be checked).
  fileprivate func decimal<R>(_ setting: Setting<Double, R>) throws(SourceError) -> Double {
    let member = try required(setting.name)
    guard let number = member.double, number.isFinite, setting.isValid(number) else {
      throw fail(setting.name, "is \(shown(member)); expected \(setting.expected)")
    }
    return number
  }

  /// `["virtio", "xen"]`: each a kind with a lever, at most once.
  fileprivate func levers(_ field: String) throws(SourceError) -> Set<BalloonKind> {
    let items = try array(field)
    var levers = Set<BalloonKind>()
    for item in items {
      guard let name = item.string, let kind = BalloonKind(rawValue: name), kind.driver.hasLever,
        levers.insert(kind).inserted
      else {
        throw fail(
          field, "is \(shown(.array(items))); expected each of virtio, vmware, xen at most once")
      }
    }
    return levers
  }
}
