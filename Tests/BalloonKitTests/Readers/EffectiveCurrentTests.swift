import BalloonKit
import SystemPackage
import Testing

private let MiB: UInt64 = 1 << 20

@Suite("The size the daemon decides on")
struct EffectiveCurrentTests {
  let device = BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: "/sys/devices/virtio0", driver: "virtio_balloon",
    pciAddress: "0000:00:01.0")

  func reading(gauge: UInt64?, inflated: UInt64?, deflated: UInt64?, actual: UInt64? = nil) throws
    -> BalloonReading
  {
    var meminfo = Meminfo(memTotal: 1024 * MiB, swapTotal: 0)
    meminfo.balloon = gauge
    var vmstat = Vmstat()
    vmstat.balloonBytes = gauge
    vmstat.balloonInflatedBytes = inflated
    vmstat.balloonDeflatedBytes = deflated
    var reading = try VirtioBalloonReader.read(
      device: device, root: .snapshot("/nonexistent"), meminfo: meminfo, vmstat: vmstat, probe: nil)
    reading.deviceActualBytes = actual
    return reading
  }

  @Test("an inflation is seen in the events before the batched gauge catches up")
  func inflatingFasterThanTheGauge() throws {
    // ≥ 6.15 mid-inflation: the gauge still says 20 MiB, the events 80 MiB.
    let r = try reading(gauge: 20 * MiB, inflated: 80 * MiB, deflated: 0)
    #expect(r.current == .known(bytes: 20 * MiB, source: "nr_balloon_pages"))  // documented source unchanged
    #expect(r.effectiveCurrentBytes == 80 * MiB)
  }

  @Test("a deflation is believed only when the gauge agrees (conservative)")
  func deflatingGaugeLags() throws {
    let r = try reading(gauge: 300 * MiB, inflated: 300 * MiB, deflated: 300 * MiB)
    #expect(r.effectiveCurrentBytes == 300 * MiB)
  }

  @Test("6.1: only the events exist")
  func eventsOnly() throws {
    let r = try reading(gauge: nil, inflated: 500 * MiB, deflated: 200 * MiB)
    #expect(r.current == .known(bytes: 300 * MiB, source: "balloon_inflate - balloon_deflate"))
    #expect(r.effectiveCurrentBytes == 300 * MiB)
  }

  @Test("the device's own actual wins when probed")
  func deviceActualWins() throws {
    let r = try reading(gauge: 20 * MiB, inflated: 80 * MiB, deflated: 0, actual: 90 * MiB)
    #expect(r.effectiveCurrentBytes == 90 * MiB)
  }
}
