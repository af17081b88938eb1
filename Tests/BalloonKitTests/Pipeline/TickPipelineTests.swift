import BalloonKit
import Testing

private func heldRecord(_ kind: BalloonKind, _ name: String) -> BalloonRecord {
  var hold = HoldState(backoffSeconds: 30)
  hold.held = true
  hold.since = 0
  hold.releases = 2
  return BalloonRecord(kind: kind, name: name, sysPath: "", hold: hold)
}

/// The pipeline's stages on fixture trees: the reader sees every balloon
/// (listed or only held), the tick policy is pure, and status reads through
/// the same reader as the daemon.
@Suite("Tick pipeline")
struct TickPipelineTests {
  @Test("the reader sees listed balloons in discovery order, then held ones it does not list")
  func sights() throws {
    let reader = TickReader(root: Fixtures.root("virtio-6.18"), options: .init())
    let holds = [heldRecord(.vmware, "vmw_balloon"), heldRecord(.virtio, "virtio7")]
    let reading = try reader.read(now: 0, strict: false, held: holds)
    #expect(reading.sights.map(\.device.name) == ["virtio0", "vmw_balloon", "virtio7"])
    #expect(reading.sights.map(\.listed) == [true, false, false])
    // The vmw module is the fixed one (its lever is a modprobe by name); an
    // unlisted virtio record has no path and no lever.
    #expect(reading.sights[1].device == VMwareDriver.module)
    #expect(reading.sights[2].device.sysPath == "")
    #expect(!reading.sights[2].observation.leverAvailable)
  }

  @Test("the tick policy is pure: the same input gives the same plans, and touches nothing")
  func pure() throws {
    let reader = TickReader(root: Fixtures.root("virtio-6.18"), options: .init())
    let holds = [heldRecord(.virtio, "virtio7")]
    let reading = try reader.read(now: 0, strict: false, held: holds)
    let policy = TickPolicy(mode: .enforce, config: .default)
    let first = policy.plan(reading, holds: holds, unverified: [], now: 100)
    let second = policy.plan(reading, holds: holds, unverified: [], now: 100)
    #expect(first.map(\.decision) == second.map(\.decision))
    #expect(first.map(\.next) == second.map(\.next))
    // A held record naming no listed device: gone, hold dropped, nothing acted on.
    let gone = try #require(first.first { $0.record.name == "virtio7" })
    #expect(gone.decision.why == .deviceGone)
    #expect(!gone.next.held)
    #expect(gone.next.releases == 2)
    #expect(!gone.mayAct)
  }

  @Test("exiting plans only the held balloons")
  func exitingPlansHolds() throws {
    let reader = TickReader(root: Fixtures.root("virtio-6.18"), options: .init())
    let holds = [heldRecord(.virtio, "virtio7")]
    let reading = try reader.read(now: 0, strict: false, held: holds)
    let plans = TickPolicy(mode: .enforce, config: .default).plan(
      reading, holds: holds, unverified: [], now: 1, exiting: true)
    #expect(plans.map(\.record.name) == ["virtio7"])
    #expect(plans.first?.decision.action == .readmit)
    #expect(plans.first?.mayAct == false)  // the executor refuses: not listed
  }

  @Test("status and the daemon's reader give the same snapshot", arguments: Fixtures.allTrees)
  func sameSnapshot(_ tree: String) throws {
    let status = try GuestSnapshotReader.read(root: Fixtures.root(tree), options: .init())
    let daemon = try TickReader(root: Fixtures.root(tree), options: .init()).read(
      now: 0, strict: false)
    #expect(status.balloons == daemon.snapshot.balloons)
    #expect(status.pinned == daemon.snapshot.pinned)
    #expect(status.limit == daemon.snapshot.limit)
    #expect(daemon.unreadable.isEmpty)
  }
}
