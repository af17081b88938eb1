import ArgumentParser
import BalloonKit
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The command tree. Each subcommand lives in its own file.
@main
struct Balloonctl: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "balloonctl",
    abstract: "Keep the hypervisor's memory balloon from taking memory the guest cannot give.",
    discussion: """
      A balloon driver (virtio_balloon, vmw_balloon, Xen, Hyper-V) hands guest pages to the \
      host when the host asks. It does not know that some memory can never leave RAM: mlocked \
      pages, hugetlb pages, DMA pins, the kernel's own memory and, without swap, all anonymous \
      memory. balloonctl measures that pinned memory, computes the limit the balloon must stay \
      under (VMware KB 340369's formula, live) and shows the host-side setting that enforces it.

      Examples:
        balloonctl status               balloon, sizes, pinned memory, limit
        balloonctl status --json        the same, for scripts
        balloonctl status --watch       a live view, redrawn every 2 s
        balloonctl status --check       one line and exit 0-3 for monitoring
        balloonctl limit --explain      the formula with this guest's numbers
        balloonctl advise               the host-side setting, per hypervisor
        balloonctl run --mode report    the daemon, acting on nothing
        balloonctl status --root /snap  a captured /proc + /sys tree

      Exit status:
        0   the state was read (whether or not the balloon is over the limit)
        1   a kernel file, the config or the state could not be read (the
            one-line error names it), or another `run` holds the lock
        64  invalid command line or settings
        `status --check` exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN instead.
      """,
    version: BalloonctlVersion.string,
    subcommands: [
      StatusCommand.self, LimitCommand.self, AdviseCommand.self, RunCommand.self,
      ReadmitCommand.self,
    ],
    defaultSubcommand: StatusCommand.self)

  /// ArgumentParser's main, except that a `OneLineError` prints as one line
  /// and exits with its own status: ArgumentParser would print a usage text
  /// under it (as a ValidationError) or exit 1 (as any other error).
  static func main() {
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch let error as OneLineError {
      _ = try? FileDescriptor.standardError.writeAll(Array("balloonctl: \(error.message)\n".utf8))
      Glibc.exit(error.status)
    } catch {
      exit(withError: error)
    }
  }
}

/// An error that is not about the command line's syntax, so no usage text:
/// printed as `balloonctl: <message>` with exit status 64 (invalid settings or
/// a combination that is refused) or 1 (a file could not be read).
struct OneLineError: Error, CustomStringConvertible {
  var message: String
  var status: Int32

  static let invalidStatus: Int32 = 64
  static let unreadableStatus: Int32 = 1

  /// A refused combination of settings: exit 64.
  static func invalid(_ message: String) -> OneLineError {
    OneLineError(message: message, status: invalidStatus)
  }

  /// The settings file: its content is invalid, too large included (64), or
  /// it could not be read at all: absent, unreadable, not a regular file (1).
  init(settings error: SourceError) {
    message = "\(error)"
    switch error.problem {
    case .malformed, .missingField, .tooLarge: status = Self.invalidStatus
    case .unreadable, .unwritable, .wrongType: status = Self.unreadableStatus
    }
  }

  init(message: String, status: Int32) {
    self.message = message
    self.status = status
  }

  var description: String { message }
}

enum BalloonctlVersion {
  static let string = "0.1.0"
}
