import ArgumentParser

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
        balloonctl status               the balloon, its sizes, pinned memory, the limit
        balloonctl status --json        the same, for scripts
        balloonctl limit --explain      the formula with this guest's numbers
        balloonctl run --mode report    the daemon, acting on nothing
        balloonctl status --root /snap  a captured /proc + /sys tree

      Exit status:
        0   the state was read (whether or not the balloon is over the limit)
        1   a kernel file, the config or the state could not be read (the
            one-line error names it), or another `run` holds the lock
        64  invalid command line or settings
      """,
    version: BalloonctlVersion.string,
    subcommands: [StatusCommand.self, LimitCommand.self, RunCommand.self, ReadmitCommand.self],
    defaultSubcommand: StatusCommand.self)
}

enum BalloonctlVersion {
  static let string = "0.1.0"
}
