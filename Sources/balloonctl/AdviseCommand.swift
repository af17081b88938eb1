import ArgumentParser
import BalloonKit
import SystemPackage

/// What `--hypervisor` takes: one hypervisor, or `auto`.
enum HypervisorChoice: ExpressibleByArgument, Equatable {
  case auto
  case named(Hypervisor)

  init?(argument: String) {
    if argument == "auto" {
      self = .auto
    } else if let hypervisor = Hypervisor(rawValue: argument) {
      self = .named(hypervisor)
    } else {
      return nil
    }
  }

  static var allValueStrings: [String] { ["auto"] + Hypervisor.allCases.map(\.rawValue) }
}

/// `balloonctl advise`: the host-side setting that keeps the balloon within
/// the limit, so the guard never has to act.
struct AdviseCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "advise",
    abstract: "Print the host-side setting that keeps the balloon within the limit.",
    discussion: """
      The limit is the one `status` and `limit` show (same reading, same --fraction). \
      When the daemon's state records a higher pinned figure since boot than now, the \
      advice uses the limit at that peak, and says so. A maximum balloon size is rounded \
      down and a minimum guest memory rounded up, to whole MiB.

      --hypervisor auto looks at the DMI vendor strings (/sys/class/dmi/id), \
      /sys/hypervisor/type, the hypervisor flag in /proc/cpuinfo and the balloon found, \
      as systemd-detect-virt does, and prints what it found. Guests of QEMU, libvirt and \
      Proxmox look alike from inside, so all three are shown.

      Examples:
        balloonctl advise
        balloonctl advise --hypervisor vmware
        balloonctl advise --hypervisor qemu --json | jq '.advice[0].bytes'
        virsh qemu-agent-command <domain> \
      '{"execute":"guest-exec","arguments":{"path":"/usr/sbin/balloonctl",\
      "arg":["advise","--json"],"capture-output":true}}'

      Exit status: 0 advice printed; 1 no limit can be computed (a kernel file could \
      not be read), no asked-for setting can be (a floor needs the configured RAM, from \
      /sys/firmware/memmap) or auto found no hypervisor; 64 invalid command line.
      """)

  @OptionGroup var global: GlobalOptions
  @OptionGroup(title: "Reading") var reading: SnapshotArguments

  @Option(
    help: ArgumentHelp(
      "The host: auto, \(Hypervisor.allCases.map(\.rawValue).joined(separator: ", ")).",
      valueName: "name"))
  var hypervisor: HypervisorChoice = .auto

  @Flag(help: "Print JSON (one object per hypervisor, numbers in bytes) instead of text.")
  var json = false

  @Option(
    help: ArgumentHelp(
      "Where balloonctl run keeps its state, for pinned memory's peak (below --root when given).",
      valueName: "dir"))
  var stateDir: String = StateStore.defaultDirectory.string

  func run() throws {
    _ = LogSetup.logger(level: global.level)
    let root = global.fileSystemRoot
    let snapshot: GuestSnapshot
    do {
      snapshot = try reading.snapshot(root: root)
    } catch let error as SourceError {
      throw OneLineError(
        message: "no limit can be computed, so no advice: \(error)",
        status: OneLineError.unreadableStatus)
    }
    let ram = try FirmwareMemmapReader.systemRAMBytes(root: root)
    // The peak is advisory: an unusable state file is reported, not fatal.
    var peak: (UInt64, Int64)?
    do {
      if let state = try DaemonReport.load(root: root, directory: stateDir)?.state,
        let bytes = state.maxPinnedBytes, let at = state.maxPinnedAt
      {
        peak = (bytes, at)
      }
    } catch {
      _ = try? FileDescriptor.standardError.writeAll(
        Array("balloonctl: pinned peak not used: \(error)\n".utf8))
    }
    let inputs = AdviceInputs(
      limit: snapshot.limit, peakPinnedBytes: peak?.0, peakPinnedAt: peak?.1,
      configuredRAM: ram, configuredRAMSource: ram.map { _ in "firmware memory map" })
    var detection: HypervisorDetection?
    let hypervisors: [Hypervisor]
    switch hypervisor {
    case .named(let one):
      hypervisors = [one]
    case .auto:
      let found = HypervisorDetection.detect(
        root: root, balloonKinds: snapshot.balloons.map(\.device.kind))
      guard !found.candidates.isEmpty else {
        let facts = found.evidence.isEmpty ? "nothing" : found.evidence.joined(separator: "; ")
        throw OneLineError(
          message:
            "--hypervisor auto: no hypervisor with a balloon found (found: \(facts)); name one with --hypervisor",
          status: OneLineError.unreadableStatus)
      }
      detection = found
      hypervisors = found.candidates
    }
    let report = AdviceReport(inputs: inputs, detection: detection, hypervisors: hypervisors)
    print(json ? report.json().rendered() : report.render())
    // Refused when nothing could be advised (said above, per hypervisor).
    if report.advice.allSatisfy({ $0.unavailable != nil }) {
      throw OneLineError(
        message: "no host setting can be computed: "
          + (report.advice.first?.unavailable ?? "nothing asked"),
        status: OneLineError.unreadableStatus)
    }
  }
}
