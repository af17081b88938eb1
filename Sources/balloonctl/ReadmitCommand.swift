import ArgumentParser
import BalloonKit
import Logging
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// `balloonctl readmit`: gives back the balloons a stopped daemon still holds.
/// The package's prerm runs it on removal (debian/balloonctl.prerm), so no
/// balloon stays released by a guard that is gone.
struct ReadmitCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "readmit",
    abstract: "Give back every balloon a stopped daemon still holds.",
    discussion: """
      A daemon that stops with BALLOONCTL_ON_EXIT=hold (the default) leaves a released \
      balloon released, and the next run resumes the hold from <state-dir>/state.json. \
      readmit ends such a hold without starting the daemon: it binds virtio_balloon again, \
      reloads vmw_balloon with its default parameters, or restores Xen's target, and \
      records each balloon as admitted. Removing the package runs it after the service \
      has stopped.

      It refuses while a daemon runs (the lock in --state-dir): stop the service first \
      (systemctl stop balloonctl), or let the daemon give the balloon back itself with \
      BALLOONCTL_ON_EXIT=readmit.

      Exit status: 0 nothing was held, or every held balloon was re-admitted; 1 the state \
      could not be read, a daemon runs, or a lever failed (the error names it).
      """)

  @Option(
    help: ArgumentHelp("Where the daemon's lock and state.json live.", valueName: "dir"),
    completion: .directory)
  var stateDir: String = StateStore.defaultDirectory.string

  @Option(name: .customLong(RunSetting.logLevel.flag), help: RunSetting.logLevel.argumentHelp)
  var logLevel: Logger.Level?

  struct Failed: Error, CustomStringConvertible {
    var balloons: [String]
    var description: String {
      "could not re-admit \(balloons.joined(separator: ", ")); the hold stays in the state file"
    }
  }

  func run() throws {
    let logger = LogSetup.logger(level: logLevel ?? RunConfiguration.defaults.logLevel)
    let store = StateStore(directory: FilePath(stateDir))
    // No state file: no daemon ever held anything here. Create nothing.
    guard SystemFile.exists(store.file) else {
      print("nothing held (no \(store.file))")
      return
    }
    let lock = try InstanceLock(directory: store.directory)
    guard try lock.acquire() else { throw InstanceLock.Held(path: lock.path.string) }
    let previous = try store.load()
    let root = Root.live
    // Every lever: the settings may have changed since the hold began, and
    // only a lever that was pulled has a hold to end.
    let controller = Controller(
      root: root, config: ControllerConfig(mode: .enforce),
      actuators: Actuators(root: root), probe: nil, store: store, previous: previous,
      pid: getpid(), logger: logger)
    guard !controller.heldBalloons.isEmpty else {
      print("nothing held")
      return
    }
    var failed: [String] = []
    for (decision, error) in controller.readmitAll() {
      if let error {
        logger.error(
          "re-admit failed", metadata: ["balloon": "\(decision.balloon)", "error": "\(error)"])
        failed.append(decision.balloon)
      } else {
        print("re-admitted \(decision.balloon)")
      }
    }
    _ = lock
    if !failed.isEmpty { throw Failed(balloons: failed) }
  }
}
