public import ArgumentParser
public import BalloonKit
public import Logging
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "Read every kernel file below <dir> instead of / (a captured snapshot or a test tree).",
      discussion: """
        <dir>/proc, <dir>/sys and <dir>/sys/kernel/debug stand in for the live ones, and \
        balloons are found by walking <dir>/sys instead of asking libudev. Nothing is ever \
        written below <dir>.
        """,
      valueName: "dir"),
    completion: .directory)
  var root: String = "/"

  @Option(name: .customLong(RunSetting.logLevel.flag), help: RunSetting.logLevel.argumentHelp)
  var logLevel: Logger.Level?

  /// The level to log at: --log-level, else the declared default.
  var level: Logger.Level { logLevel ?? RunConfiguration.defaults.logLevel }

  func validate() throws {
    guard root.hasPrefix("/") || !root.isEmpty else {
      throw ValidationError("--root needs a directory")
    }
    if root != "/" && !SystemFile.exists(FilePath(root)) {
      throw ValidationError("--root \(root): no such directory")
    }
  }

  /// The file system to read, built once.
  var fileSystemRoot: Root {
    var path = FilePath(root)
    if path.isRelative, let cwd = currentDirectory() { path = cwd.pushing(path) }
    return Root.snapshot(path)
  }
}

extension Setting {
  /// The declaration's help, with its default, for ArgumentParser.
  var argumentHelp: ArgumentHelp {
    ArgumentHelp("\(help) (default: \(defaultText))", valueName: valueName)
  }
}

extension RunSetting {
  /// The settings as a table for `run --help`: flag, settings-file key, default.
  static var table: String {
    let flags = all.map { "--\($0.flag)" }
    let flagWidth = flags.map(\.count).max() ?? 0
    let keyWidth = all.map(\.key.count).max() ?? 0
    func padded(_ text: String, _ width: Int) -> String {
      text + String(repeating: " ", count: max(0, width - text.count))
    }
    return zip(flags, all).map { flag, setting in
      "  " + padded(flag, flagWidth + 2) + padded(setting.key, keyWidth + 2) + setting.defaultText
    }.joined(separator: "\n")
  }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension ControlMode: ExpressibleByArgument {}
extension ExitPolicy: ExpressibleByArgument {}

func currentDirectory() -> FilePath? {
  guard let pointer = getcwd(nil, 0) else { return nil }
  defer { free(pointer) }
  return FilePath(platformString: pointer)
}

/// Bootstraps swift-log once per process, to stderr: with sd-daemon priority
/// prefixes when stderr is the journal (under systemd), else swift-log's
/// timestamped lines.
enum LogSetup {
  static func logger(level: Logger.Level) -> Logger {
    let journal = JournalLogHandler.stderrIsJournal()
    LoggingSystem.bootstrap { label in
      if journal { return JournalLogHandler(label: label, level: level) }
      var handler = StreamLogHandler.standardError(label: label)
      handler.logLevel = level
      return handler
    }
    var logger = Logger(label: "balloonctl")
    logger.logLevel = level
    return logger
  }
}
