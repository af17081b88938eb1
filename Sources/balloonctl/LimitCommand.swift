import ArgumentParser
import BalloonKit

/// `balloonctl limit`: the limit, the formula with this guest's numbers, and
/// the host-side settings that enforce it.
struct LimitCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "limit",
    abstract: "Show the pinned-aware balloon limit and the host settings that enforce it.",
    discussion: """
      The guest cannot cap the balloon on VMware or KVM: the host must. This prints the \
      value to give it: VMware's sched.mem.maxmemctl (KB 340369, computed live instead of by \
      hand) and, for KVM, the lowest RAM target (virsh setmem, QMP balloon) that keeps the \
      balloon under the limit. It also checks guest swap against the limit.

      Examples:
        balloonctl limit
        balloonctl limit --explain      every term and its source
        balloonctl limit --fraction 0.5
        balloonctl limit --json

      Exit status: 0 the state was read; 1 a kernel file could not be read or is malformed; \
      64 invalid command line.
      """)

  @OptionGroup var global: GlobalOptions
  @OptionGroup(title: "Reading") var reading: SnapshotArguments

  @Flag(help: "Show every term of the formula and where its number came from.")
  var explain = false

  @Flag(help: "Print JSON instead of text.")
  var json = false

  func run() throws {
    _ = LogSetup.logger(level: global.level)
    let root = global.fileSystemRoot
    let snapshot = try reading.snapshot(root: root)
    let ram = try FirmwareMemmapReader.systemRAMBytes(root: root)
    let host = HostSettings.compute(
      limit: snapshot.limit,
      configuredRAM: ram.map { ($0, "firmware memory map, System RAM") })
    let report = LimitText(snapshot: snapshot, host: host)
    if json {
      print(report.json().rendered())
    } else {
      print(report.render(explain: explain))
    }
  }
}
