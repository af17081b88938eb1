import BalloonKit
import SystemPackage
import Testing

/// `status` and `run --once` read the same way: an unreadable balloon fails
/// both with the same one line; an unreadable process's status fails neither.
@Suite("balloonctl command line: fail safe")
struct FailSafeCommandTests {
  @Test(
    "run --once fails exactly like status on a balloon it cannot read",
    arguments: BrokenBalloon.all)
  func onceLikeStatus(_ broken: BrokenBalloon) throws {
    let guest = try SimulatedGuest(broken.fixture)
    try broken.breakIt(guest)
    let root = guest.tree.base.string
    let status = try Balloonctl.run(["status", "--root", root])
    let once = try Balloonctl.run(["run", "--once", "--mode", "report", "--root", root])
    let onceJSON = try Balloonctl.run([
      "run", "--once", "--mode", "report", "--root", root, "--json",
    ])
    for result in [status, once, onceJSON] {
      #expect(result.status == 1)
      #expect(result.stdout.isEmpty)
      #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
      #expect(result.stderr.contains(guest.root.path(broken.file).string), "\(result.stderr)")
    }
    #expect(once.stderr == status.stderr)
  }

  @Test("status --json with an unreadable process status: exit 0, marked partial")
  func statusPartial() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    try guest.tree.write("/proc/812/status", "Name:\trdma-server\nPid:\t812\nVmPin:\tlots\n")
    let result = try Balloonctl.run(["status", "--json", "--root", guest.tree.base.string])
    #expect(result.status == 0, "\(result.stderr)")
    let doc = try JSONParser.parse(result.stdout)
    #expect(doc["memory"]?["pinned"]?["vm_pin_complete"] == .bool(false))
    #expect(doc["memory"]?["pinned"]?["unreadable_processes"]?.uint64 == 1)
    let notes = doc["notes"]?.array?.compactMap(\.string) ?? []
    #expect(notes.contains { $0.contains(guest.root.path("/proc/812/status").string) })

    let text = try Balloonctl.run(["status", "--root", guest.tree.base.string])
    #expect(text.status == 0)
    #expect(text.stdout.contains("Σ VmPin is partial: 1 process's VmPin unknown"))
    let once = try Balloonctl.run([
      "run", "--once", "--mode", "report", "--json", "--root", guest.tree.base.string,
    ])
    #expect(once.status == 0, "\(once.stderr)")
    #expect(
      try JSONParser.parse(once.stdout)["memory"]?["pinned"]?["vm_pin_complete"] == .bool(false))
  }
}
