import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The guard must outlive the pressure it guards against. Measured in the
/// QEMU suite: a balloon outrunning the interval drove a 1 GiB guest into OOM
/// within 0.7 s, and the OOM killer took the daemon right after the pinned
/// workload. So `run` does what earlyoom does, and a little more.
public enum SelfProtection {
  /// The OOM killer's adjustment `run` gives itself: low enough that the
  /// workload goes first, not -1000, so a runaway daemon can still be killed
  /// (the unit sets the same with OOMScoreAdjust=).
  public static let oomScoreAdjust = -900

  public struct Outcome: Sendable {
    /// Lowering needs CAP_SYS_RESOURCE; nil when it was applied.
    public var oomScoreProblem: String?
    /// mlockall needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK.
    public var lockProblem: String?
  }

  /// Sets our own `oom_score_adj`, and locks every page we touch
  /// (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`): only pages already
  /// faulted in, so the locked set is the daemon's working set (about what
  /// `make bench` reports as touched), not the whole binary. Under pressure
  /// a tick then never waits for its own code to be read back in. What it
  /// locks shows up in `Mlocked`, and so in the pinned memory, as it should.
  public static func apply() -> Outcome {
    var outcome = Outcome()
    do {
      let fd = try FileDescriptor.open(
        "/proc/self/oom_score_adj", .writeOnly, options: .closeOnExec, retryOnInterrupt: true)
      try fd.closeAfter { _ = try fd.writeAll("\(oomScoreAdjust)".utf8) }
    } catch {
      outcome.oomScoreProblem = "\(error)"
    }
    // MCL_ONFAULT (Linux ≥ 4.4) is 4; the constant does not import into Swift.
    let onFault: Int32 = 4
    if mlockall(Int32(MCL_CURRENT) | Int32(MCL_FUTURE) | onFault) != 0 {
      outcome.lockProblem = "\(Errno(rawValue: errno))"
    }
    return outcome
  }
}
