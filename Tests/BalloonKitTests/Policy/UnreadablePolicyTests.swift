import BalloonKit
import Testing

private let MiB: UInt64 = 1 << 20
private let limit: UInt64 = 300 * MiB
private let readError = SourceError.malformed("/sys/kernel/debug/vmmemctl", line: 2, "garbage")

private func heldState(notBefore: Double? = nil) -> HoldState {
  var state = HoldState(backoffSeconds: 30)
  state.held = true
  state.since = 0
  state.reason = "test"
  state.readmitNotBefore = notBefore
  state.releases = 1
  return state
}

@Suite("Policy: a listed balloon that cannot be read, and holds that are not ours")
struct UnreadablePolicyTests {
  @Test(
    "unreadable: none, whatever the kind and the hold; the state is kept as it is",
    arguments: BalloonKind.allCases)
  func unreadable(kind: BalloonKind) {
    for state in [nil, heldState(), heldState(notBefore: 10)] {
      var observation = BalloonObservation(
        kind: kind, name: "b0", present: true, bound: kind != .virtio || state == nil,
        currentBytes: nil, targetBytes: nil)
      observation.unreadable = readError
      // Long past any back-off: a blind hold must still not re-admit.
      let (decision, next) = Policy.decide(
        observation, limitBytes: limit, state: state, now: 10_000)
      #expect(decision.action == .none)
      #expect(decision.why == .unreadable(readError, held: state?.held ?? false))
      #expect(decision.reason.contains("/sys/kernel/debug/vmmemctl"))
      #expect(next == state ?? PolicyConfig.default.freshState)
    }
  }

  @Test("Xen: a held state whose target_kb is not the one written is over; decided from scratch")
  func xenNotOurs() {
    var state = heldState()
    state.xenWrittenTargetKiB = 1_000_000
    state.xenHostBalloonTargetBytes = 900 * MiB
    let observation = BalloonObservation(
      kind: .xen, name: "xen_memory0", currentBytes: 100 * MiB, targetBytes: 100 * MiB,
      xenReservationBytes: 2048 * MiB, xenTargetKiB: 1_000_001)
    let (decision, next) = Policy.decide(observation, limitBytes: limit, state: state, now: 0)
    #expect(decision.action == .none)
    #expect(!next.held)
    #expect(next.xenWrittenTargetKiB == nil && next.xenHostBalloonTargetBytes == nil)
  }

  @Test("Xen: a held balloon discovery no longer lists: hold dropped")
  func xenGone() {
    var state = heldState()
    state.xenWrittenTargetKiB = 1_000_000
    let observation = BalloonObservation(
      kind: .xen, name: "xen_memory0", present: false, bound: false, currentBytes: nil,
      targetBytes: nil)
    let (decision, next) = Policy.decide(observation, limitBytes: limit, state: state, now: 0)
    #expect(decision.why == .deviceGone)
    #expect(!next.held && next.releases == 1)
  }

  @Test("Hyper-V is never held: a held state is ended")
  func hypervNeverHeld() {
    let observation = BalloonObservation(
      kind: .hyperv, name: "hv", currentBytes: 10 * MiB, targetBytes: nil)
    let (_, next) = Policy.decide(observation, limitBytes: limit, state: heldState(), now: 0)
    #expect(!next.held)
  }
}
