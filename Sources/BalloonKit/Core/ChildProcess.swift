import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The one call site of posix_spawn. The daemon blocks SIGTERM/SIGINT (it
/// reads them from a signalfd); a child must not inherit that mask, or it
/// could not be stopped, so both are unblocked and set to their defaults.
enum ChildProcess {
  static func spawn(
    _ arguments: [String], fileActions: UnsafePointer<posix_spawn_file_actions_t>? = nil
  ) -> Result<pid_t, Errno> {
    guard let program = arguments.first else { return .failure(.invalidArgument) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGTERM)
    sigaddset(&defaults, SIGINT)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, program, fileActions, &attributes, &argv, environ)
    return spawned == 0 ? .success(pid) : .failure(Errno(rawValue: spawned))
  }
}
