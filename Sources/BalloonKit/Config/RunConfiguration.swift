public import Logging

/// The effective settings of one `balloonctl run`, built once: each setting
/// from the command line, else the settings file, else its declared default
/// (RunSetting.swift). The controller's configuration and what state.json
/// records are derived from it, so they cannot disagree.
public struct RunConfiguration: Sendable, Equatable {
  public var mode: ControlMode
  public var intervalSeconds: Double
  public var events: Bool
  public var eventsIntervalSeconds: Double
  public var margin: Double
  public var fraction: Double
  public var probeTarget: Bool
  public var vmwShrinker: Bool
  public var levers: Set<BalloonKind>
  public var logLevel: Logger.Level
  public var onExit: ExitPolicy
  public var metricsFile: String?

  /// - Parameters:
  ///   - flags: what the command line set (checked by `problem(in:)`).
  ///   - file: what the settings file set (checked by its parser).
  public init(flags: RunSettings, file: RunSettings = RunSettings()) {
    // The mode first: the probe's default depends on it.
    let mode = RunSetting.mode.value(flags: flags, file: file, mode: .report)
    self.mode = mode
    func value<V: Sendable & Equatable, R: Sendable & Equatable>(_ setting: Setting<V, R>) -> R {
      setting.value(flags: flags, file: file, mode: mode)
    }
    intervalSeconds = value(RunSetting.interval)
    events = value(RunSetting.events)
    eventsIntervalSeconds = value(RunSetting.eventsInterval)
    margin = value(RunSetting.margin)
    fraction = value(RunSetting.fraction)
    probeTarget = value(RunSetting.probeTarget)
    vmwShrinker = value(RunSetting.vmwShrinker)
    levers = value(RunSetting.levers)
    logLevel = value(RunSetting.logLevel)
    onExit = value(RunSetting.onExit)
    metricsFile = value(RunSetting.metricsFile)
  }

  /// Every setting at its default (report mode).
  public static let defaults = RunConfiguration(flags: RunSettings())

  /// The first flag value a setting does not accept, as the error to print.
  public static func problem(in flags: RunSettings) -> String? {
    RunSetting.all.lazy.compactMap { $0.problem(in: flags) }.first
  }

  public var policy: PolicyConfig { PolicyConfig(margin: margin) }

  /// What the controller takes.
  public var controller: ControllerConfig {
    ControllerConfig(
      mode: mode, fraction: fraction, policy: policy, intervalSeconds: intervalSeconds,
      settings: recorded)
  }

  /// What state.json records and `status` shows.
  public var recorded: RecordedSettings {
    RecordedSettings(
      mode: mode, intervalSeconds: intervalSeconds, fraction: fraction, margin: margin,
      probeTarget: probeTarget, levers: levers, onExit: onExit)
  }
}
