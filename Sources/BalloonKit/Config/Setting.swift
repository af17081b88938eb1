/// One setting of `balloonctl run`, declared once (RunSetting.swift): its
/// name in state.json and `status --json`, its flag, its settings-file key,
/// its default, the values it accepts and its help. The command line, the
/// settings file parser, the resolution into a RunConfiguration, the help
/// text and the README's table all take it from the declaration.
///
/// `Value` is what the flag and the settings file give (RunSettings holds it,
/// nil when not given); `Resolved` is what the run uses: `Value` itself, or
/// `Value?` for a setting that has no default (the metrics file).
public struct Setting<Value: Sendable & Equatable, Resolved: Sendable & Equatable>: Sendable {
  /// The name in state.json and `status --json` (`interval_s`).
  public let name: String
  /// The long flag without its dashes (`interval`).
  public let flag: String
  /// The settings-file key (`BALLOONCTL_INTERVAL`).
  public let key: String
  /// The flag's value name in the usage (`seconds`); nil: the flag's own.
  public let valueName: String?
  /// One sentence for `--help`; the default is appended from `defaultValue`.
  public let help: String
  /// What a value must be: the settings file's error text ("expected …")
  /// and the README's table.
  public let expected: String
  /// What a flag's value must be, for its error (`--interval must be …`).
  public let rule: String

  /// Reads a settings-file value; nil when it is not a valid one.
  let parse: @Sendable (String) -> Value?
  let isValid: @Sendable (Value) -> Bool
  /// For a value refused for a reason of its own, what it must be instead
  /// of `expected` (the metrics file's `.prom`); nil: `expected` says it.
  var refusal: @Sendable (String) -> String? = { _ in nil }
  let field: any WritableKeyPath<RunSettings, Value?> & Sendable
  /// The default; the mode is passed because the probe's default depends on it.
  let defaultValue: @Sendable (ControlMode) -> Resolved
  let resolve: @Sendable (Value) -> Resolved
  /// A resolved value as it would be written in the settings file.
  let describe: @Sendable (Resolved) -> String

  /// The value from the command line, else the settings file, else the default.
  public func value(flags: RunSettings, file: RunSettings, mode: ControlMode) -> Resolved {
    if let value = flags[keyPath: field] ?? file[keyPath: field] { return resolve(value) }
    return defaultValue(mode)
  }

  /// The default as text: one value, or one per mode when they differ.
  public var defaultText: String {
    let enforce = describe(defaultValue(.enforce))
    let report = describe(defaultValue(.report))
    return enforce == report ? report : "\(enforce) in enforce, \(report) in report"
  }

  /// The error for a flag value this setting does not accept, or nil.
  public func problem(with value: Value) -> String? {
    guard !isValid(value) else { return nil }
    let shown = (value as? String).map { "\"\($0)\"" } ?? "\(value)"
    let why = (value as? String).flatMap(refusal).map { "must be \($0)" } ?? rule
    return "--\(flag) \(why), got \(shown)"
  }

  /// A flag given as text (a list, a path), read as the settings file reads it.
  public func flagValue(_ text: String) throws(SettingError) -> Value {
    guard let value = parse(text) else {
      let why = refusal(text).map { "must be \($0)" } ?? rule
      throw SettingError(message: "--\(flag) \(why), got \"\(text)\"")
    }
    return value
  }
}

extension Setting where Resolved == Value {
  init(
    name: String, flag: String, key: String, valueName: String? = nil, help: String,
    expected: String, rule: String? = nil, default defaultValue: Value,
    enforceDefault: Value? = nil, field: any WritableKeyPath<RunSettings, Value?> & Sendable,
    parse: @escaping @Sendable (String) -> Value?,
    isValid: @escaping @Sendable (Value) -> Bool = { _ in true },
    describe: @escaping @Sendable (Value) -> String
  ) {
    self.init(
      name: name, flag: flag, key: key, valueName: valueName, help: help, expected: expected,
      rule: rule ?? "must be \(expected)",
      parse: { text in parse(text).flatMap { isValid($0) ? $0 : nil } }, isValid: isValid,
      field: field,
      defaultValue: { mode in mode == .enforce ? enforceDefault ?? defaultValue : defaultValue },
      resolve: { $0 }, describe: describe)
  }
}

extension Setting where Resolved == Value? {
  /// A setting that is off unless given.
  init(
    name: String, flag: String, key: String, valueName: String? = nil, help: String,
    expected: String, field: any WritableKeyPath<RunSettings, Value?> & Sendable,
    parse: @escaping @Sendable (String) -> Value?, isValid: @escaping @Sendable (Value) -> Bool,
    refusal: @escaping @Sendable (String) -> String? = { _ in nil },
    describe: @escaping @Sendable (Value) -> String
  ) {
    self.init(
      name: name, flag: flag, key: key, valueName: valueName, help: help, expected: expected,
      rule: "must be \(expected)",
      parse: { text in parse(text).flatMap { isValid($0) ? $0 : nil } }, isValid: isValid,
      refusal: refusal, field: field, defaultValue: { _ in nil }, resolve: { $0 },
      describe: { $0.map(describe) ?? "none" })
  }
}

/// A flag value a setting does not accept (a command-line error).
public struct SettingError: Error, Sendable, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}

/// A setting whatever its types: what the settings file parser, the
/// command line's checks and the README's table need.
public protocol AnySetting: Sendable {
  var name: String { get }
  var flag: String { get }
  var key: String { get }
  var help: String { get }
  var expected: String { get }
  /// What a settings-file value that was refused must be (`expected`, or
  /// the value's own reason).
  func expectation(for text: String) -> String
  var defaultText: String { get }
  /// Reads a settings-file value into `settings`; false when it is not valid.
  func apply(_ text: String, to settings: inout RunSettings) -> Bool
  /// The error for the value the command line gave, or nil.
  func problem(in flags: RunSettings) -> String?
}

extension Setting: AnySetting {
  public func apply(_ text: String, to settings: inout RunSettings) -> Bool {
    guard let value = parse(text) else { return false }
    settings[keyPath: field] = value
    return true
  }

  public func problem(in flags: RunSettings) -> String? {
    flags[keyPath: field].flatMap(problem(with:))
  }

  public func expectation(for text: String) -> String { refusal(text) ?? expected }
}
