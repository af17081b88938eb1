public import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A lever could not be pulled. One line, naming what was written or run.
public struct ActuatorError: Error, Sendable, Equatable, CustomStringConvertible {
  public var description: String
  /// The errno of a failed write, when that is what failed.
  public var errno: Errno?
  public init(_ description: String, errno: Errno? = nil) {
    self.description = description
    self.errno = errno
  }

  /// The lever's file is read-only in this mount namespace: under the
  /// hardened unit, a path that did not exist when the service started (a
  /// driver loaded later) is not among its writable holes. Only a restart
  /// (which rebuilds the namespace) fixes that, so the daemon exits on it.
  public var needsRestart: Bool { errno == .readOnlyFileSystem }
}

/// Runs a program and returns its exit status (the vmw_balloon lever is
/// modprobe; tests substitute a recorder).
public protocol CommandRunner: Sendable {
  func run(_ arguments: [String]) throws(ActuatorError) -> Int32
}

/// posix_spawn + waitpid; the child inherits stderr (the journal).
public struct SpawnRunner: CommandRunner {
  public init() {}

  public func run(_ arguments: [String]) throws(ActuatorError) -> Int32 {
    guard let program = arguments.first else { throw ActuatorError("no command to run") }
    let pid: pid_t
    switch ChildProcess.spawn(arguments) {
    case .success(let child): pid = child
    case .failure(let error): throw ActuatorError("\(program): cannot run: \(error)")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
      guard errno == EINTR else {
        throw ActuatorError("\(program): waitpid: \(Errno(rawValue: errno))")
      }
    }
    // WIFEXITED / WEXITSTATUS by hand: the macros do not import into Swift.
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
  }
}

/// The only code in balloonctl that changes the system: the levers each
/// kind's driver pulls (Drivers/) go through its two primitives, one write
/// of a kernel attribute or one modprobe, below `root`: tests point it at a
/// copy of a fixture tree, so no test can reach a real device. The daemon
/// builds one with the live root only in enforce mode.
///
/// | kind    | release                          | readmit                        |
/// |---------|----------------------------------|--------------------------------|
/// | virtio  | write name to …/virtio_balloon/unbind (full deflate, host told) | write name to …/bind (re-inflates to target) |
/// | vmware  | modprobe -r vmw_balloon (all pages freed at once) | modprobe vmw_balloon [vmwballoon_shrinker_enable=1] |
/// | xen     | write target_kb (a partial hold at the limit)    | write the host's target_kb back |
/// | hyperv  | none: unbinding loses the pages until reboot     |                                |
public struct Actuators: Sendable {
  public var root: Root
  public var modprobe: String
  /// Reload vmw_balloon with its shrinker (deflates under memory pressure).
  public var vmwShrinker: Bool
  /// The kinds whose lever may be pulled (configuration can disable some).
  public var enabledLevers: Set<BalloonKind>
  public var runner: any CommandRunner

  public static let virtioDriverDirectory = VirtioDriver.driverDirectory

  public init(
    root: Root, modprobe: String = "/sbin/modprobe", vmwShrinker: Bool = false,
    enabledLevers: Set<BalloonKind> = [.virtio, .vmware, .xen],
    runner: any CommandRunner = SpawnRunner()
  ) {
    self.root = root
    self.modprobe = modprobe
    self.vmwShrinker = vmwShrinker
    self.enabledLevers = enabledLevers
    self.runner = runner
  }

  /// Whether `device`'s lever exists here and is enabled. Used for the
  /// policy's "alert instead" when it is not.
  public func leverAvailable(for device: BalloonDevice, held: Bool) -> Bool {
    guard enabledLevers.contains(device.kind) else { return false }
    return device.kind.driver.leverAvailable(device, held: held, actuators: self)
  }

  /// Pulls the lever for `decision` on `device` (its kind's driver knows how).
  public func act(_ decision: Decision, on device: BalloonDevice) throws(ActuatorError) {
    try device.kind.driver.act(decision, on: device, actuators: self)
  }

  public func release(_ device: BalloonDevice) throws(ActuatorError) {
    try act(Decision(.release, balloon: device.name, why: .text("release")), on: device)
  }

  public func readmit(_ device: BalloonDevice) throws(ActuatorError) {
    try act(Decision(.readmit, balloon: device.name, why: .text("readmit")), on: device)
  }

  public func modprobe(_ arguments: [String]) throws(ActuatorError) {
    let status = try runner.run([root.path(modprobe).string] + arguments)
    guard status == 0 else {
      throw ActuatorError("\(modprobe) \(arguments.joined(separator: " ")) exited with \(status)")
    }
  }

  /// One write of `text` to an existing kernel attribute. `alreadyDone` is the
  /// errno that means the goal already holds (unbind of an unbound device:
  /// ENODEV; bind of a bound one: EBUSY).
  public func write(_ text: String, to kernelPath: String, alreadyDone: Errno?)
    throws(ActuatorError)
  {
    let path = root.path(kernelPath)
    do {
      // As `echo value > attr` does: O_TRUNC (sysfs accepts it), and no
      // O_CREAT: a missing attribute means the lever does not exist here and
      // must never become a new file.
      let fd = try FileDescriptor.open(
        path, .writeOnly, options: [.truncate, .closeOnExec], retryOnInterrupt: true)
      try fd.closeAfter { _ = try fd.writeAll(text.utf8) }
    } catch let error as Errno {
      if let alreadyDone, error == alreadyDone { return }
      throw ActuatorError(
        "\(path.string): cannot write \"\(text)\": \(Actuators.explain(error))", errno: error)
    } catch {
      throw ActuatorError("\(path.string): cannot write \"\(text)\": \(error)")
    }
  }

  static func explain(_ error: Errno) -> String {
    switch error {
    case .permissionDenied, .notPermitted:
      "\(error) (not root, or a read-only /sys: check the unit's ReadWritePaths)"
    case .resourceBusy: "\(error) (the device is busy)"
    case .operationNotSupportedByDevice, .noSuchAddressOrDevice: "\(error) (the device went away)"
    case .noSuchFileOrDirectory: "\(error) (no such lever on this kernel)"
    case .readOnlyFileSystem:
      "\(error) (not writable in this service's namespace: the path appeared after start; restarting fixes it)"
    default: "\(error)"
    }
  }
}
