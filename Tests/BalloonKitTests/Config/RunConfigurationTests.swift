import BalloonKit
import Logging
import SystemPackage
import Testing

/// RunConfiguration: each setting from the command line, else the settings
/// file, else its declared default; and the declarations themselves against
/// what is documented (the shipped settings file, the README, `--help`).
@Suite("run configuration")
struct RunConfigurationTests {
  static let repository = FilePath(#filePath).removingLastComponent().removingLastComponent()
    .removingLastComponent().removingLastComponent()

  static func settings(_ fill: (inout RunSettings) -> Void) -> RunSettings {
    var settings = RunSettings()
    fill(&settings)
    return settings
  }

  @Test("nothing set: the documented defaults, report mode, no probe")
  func defaults() {
    let configuration = RunConfiguration(flags: RunSettings())
    #expect(configuration.mode == .report)
    #expect(configuration.intervalSeconds == 1)
    #expect(configuration.margin == 0.05)
    #expect(configuration.fraction == 0.65)
    #expect(configuration.probeTarget == false)
    #expect(configuration.vmwShrinker == false)
    #expect(configuration.levers == [.virtio, .vmware, .xen])
    #expect(configuration.logLevel == .notice)
    #expect(configuration.onExit == .hold)
    #expect(configuration.metricsFile == nil)
    #expect(configuration == .defaults)
    // The controller gets the same numbers, and the state file records them.
    #expect(configuration.controller.fraction == 0.65)
    #expect(configuration.controller.policy == PolicyConfig.default)
    #expect(configuration.controller.intervalSeconds == 1)
    #expect(configuration.controller.settings == configuration.recorded)
    // ControllerConfig's own defaults (tests, `readmit`) agree with the declarations.
    let plain = ControllerConfig(mode: .report)
    #expect(plain.fraction == configuration.fraction)
    #expect(plain.policy == configuration.policy)
    #expect(plain.intervalSeconds == configuration.intervalSeconds)
  }

  @Test("enforce mode turns the probe on by default; a flag or the file can turn it off")
  func probeFollowsMode() {
    let enforce = Self.settings { $0.mode = .enforce }
    #expect(RunConfiguration(flags: enforce).probeTarget == true)
    #expect(RunConfiguration(flags: RunSettings(), file: enforce).probeTarget == true)
    let off = Self.settings { $0.probeTarget = false }
    #expect(RunConfiguration(flags: off, file: enforce).probeTarget == false)
    #expect(RunConfiguration(flags: enforce, file: off).probeTarget == false)
  }

  @Test("every setting: a flag wins over the file, the file over the default")
  func precedence() {
    let file = Self.settings {
      $0.mode = .enforce
      $0.intervalSeconds = 5
      $0.margin = 0.1
      $0.fraction = 0.5
      $0.probeTarget = true
      $0.vmwShrinker = true
      $0.levers = [.xen]
      $0.logLevel = "debug"
      $0.onExit = .readmit
      $0.metricsFile = "/var/lib/file.prom"
    }
    let flags = Self.settings {
      $0.mode = .report
      $0.intervalSeconds = 0.5
      $0.margin = 0.2
      $0.fraction = 0.4
      $0.probeTarget = false
      $0.vmwShrinker = false
      $0.levers = []
      $0.logLevel = "error"
      $0.onExit = .hold
      $0.metricsFile = "/run/flag.prom"
    }
    let fromFile = RunConfiguration(flags: RunSettings(), file: file)
    #expect(fromFile.mode == .enforce)
    #expect(fromFile.intervalSeconds == 5)
    #expect(fromFile.margin == 0.1)
    #expect(fromFile.fraction == 0.5)
    #expect(fromFile.probeTarget == true)
    #expect(fromFile.vmwShrinker == true)
    #expect(fromFile.levers == [.xen])
    #expect(fromFile.logLevel == .debug)
    #expect(fromFile.onExit == .readmit)
    #expect(fromFile.metricsFile == "/var/lib/file.prom")

    let fromFlags = RunConfiguration(flags: flags, file: file)
    #expect(fromFlags.mode == .report)
    #expect(fromFlags.intervalSeconds == 0.5)
    #expect(fromFlags.margin == 0.2)
    #expect(fromFlags.fraction == 0.4)
    #expect(fromFlags.probeTarget == false)
    #expect(fromFlags.vmwShrinker == false)
    #expect(fromFlags.levers == [])
    #expect(fromFlags.logLevel == .error)
    #expect(fromFlags.onExit == .hold)
    #expect(fromFlags.metricsFile == "/run/flag.prom")

    let recorded = fromFlags.recorded
    #expect(
      recorded
        == RecordedSettings(
          mode: .report, intervalSeconds: 0.5, fraction: 0.4, margin: 0.2, probeTarget: false,
          levers: [], onExit: .hold))
    #expect(fromFlags.controller.policy.margin == 0.2)
    #expect(fromFlags.controller.fraction == 0.4)
  }

  struct BadFlag: Sendable, CustomTestStringConvertible {
    var settings: RunSettings
    var error: String
    var testDescription: String { error }
  }

  static let badFlags: [BadFlag] = [
    BadFlag(
      settings: settings { $0.intervalSeconds = 0.05 },
      error: "--interval must be 0.1 to 60 seconds, got 0.05"),
    BadFlag(
      settings: settings { $0.intervalSeconds = 61 },
      error: "--interval must be 0.1 to 60 seconds, got 61.0"),
    BadFlag(settings: settings { $0.margin = 0.9 }, error: "--margin must be 0 to 0.5, got 0.9"),
    BadFlag(
      settings: settings { $0.fraction = 0 },
      error: "--fraction must be above 0 and at most 1, got 0.0"),
    BadFlag(
      settings: settings { $0.fraction = .nan },
      error: "--fraction must be above 0 and at most 1, got nan"),
    BadFlag(
      settings: settings { $0.metricsFile = "metrics.prom" },
      error:
        "--metrics-file must be an absolute path for the Prometheus textfile, got \"metrics.prom\""
    ),
  ]

  @Test("a flag out of its declared range is one error naming the flag", arguments: badFlags)
  func badFlag(_ bad: BadFlag) {
    #expect(RunConfiguration.problem(in: bad.settings) == bad.error)
  }

  @Test("flags in range have no problem; text flags read as the settings file reads them")
  func goodFlags() throws {
    let edges = Self.settings {
      $0.intervalSeconds = 0.1
      $0.margin = 0.5
      $0.fraction = 1
      $0.metricsFile = "/run/balloonctl/x.prom"
    }
    #expect(RunConfiguration.problem(in: edges) == nil)
    #expect(try RunSetting.levers.flagValue("virtio, xen") == [.virtio, .xen])
    #expect(try RunSetting.levers.flagValue("none") == [])
    let error = #expect(throws: SettingError.self) { try RunSetting.levers.flagValue("hyperv") }
    #expect(
      error?.message
        == "--levers must be comma-separated virtio, vmware, xen (or none), got \"hyperv\"")
  }

  @Test("every setting has its own name, flag and key")
  func unique() {
    for values in [
      RunSetting.all.map(\.name), RunSetting.all.map(\.flag), RunSetting.all.map(\.key),
    ] {
      #expect(Set(values).count == values.count, "\(values)")
    }
    #expect(RunSetting.all.allSatisfy { $0.key.hasPrefix("BALLOONCTL_") })
    #expect(RunSettings.keys.map(\.0) == RunSetting.all.map(\.key))
  }

  // MARK: the declarations against the documentation

  /// `#KEY=value` lines of the shipped settings file.
  static func shippedLines() throws -> [String: String] {
    let bytes = try SystemFile.readRequired(repository.appending("udev/balloonctl.default"))
    var lines: [String: String] = [:]
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
      let text = line.hasPrefix("#") ? line.dropFirst() : line[...]
      guard text.hasPrefix("BALLOONCTL_"), let equals = text.firstIndex(of: "=") else { continue }
      lines[String(text[..<equals])] = String(text[text.index(after: equals)...])
    }
    return lines
  }

  @Test("the shipped settings file shows every key once, with its declared default")
  func shippedFileShowsDefaults() throws {
    let lines = try Self.shippedLines()
    #expect(Set(lines.keys) == Set(RunSetting.all.map(\.key)))
    // The file selects enforce; the probe's value shown is enforce's default.
    #expect(lines[RunSetting.mode.key] == "enforce")
    #expect(lines[RunSetting.probeTarget.key] == "yes")
    #expect(RunSetting.probeTarget.defaultText == "yes in enforce, no in report")
    for setting in RunSetting.all
    where ![RunSetting.mode.key, RunSetting.probeTarget.key, RunSetting.metricsFile.key]
      .contains(setting.key)
    {
      #expect(lines[setting.key] == setting.defaultText, "\(setting.key)")
    }
    #expect(RunSetting.metricsFile.defaultText == "none")
  }

  /// The README's settings table as the declarations write it.
  static func readmeTable() -> String {
    let rows = RunSetting.all.map { setting in
      "| `\(setting.key)` | `--\(setting.flag)` | \(setting.defaultText) | \(setting.expected) |"
    }
    return (["| key | flag | default | accepts |", "|---|---|---|---|"] + rows).joined(
      separator: "\n")
  }

  @Test("the README's settings table is the declarations'")
  func readmeTableMatches() throws {
    let readme = String(
      decoding: try SystemFile.readRequired(Self.repository.appending("README.md")),
      as: UTF8.self)
    let table = Self.readmeTable()
    #expect(readme.contains(table + "\n"), "README.md should contain:\n\(table)")
  }

  @Test("run --help shows each flag with its declared default")
  func helpShowsDefaults() throws {
    let result = try Balloonctl.run(["run", "--help"])
    #expect(result.status == 0)
    // The help wraps lines: compare with runs of blanks folded into one.
    let help = result.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(
      separator: " ")
    for setting in RunSetting.all {
      #expect(help.contains("--\(setting.flag)"), "\(setting.flag)")
      #expect(help.contains("(default: \(setting.defaultText))"), "\(setting.flag)")
      #expect(help.contains(setting.help), "\(setting.flag)")
    }
    #expect(
      help.contains(
        "--state-dir <dir> Where the lock and state.json live. (default: /run/balloonctl)"))
  }
}
