import BalloonKit
import Testing

private let MiB: UInt64 = 1 << 20
private let GiB: UInt64 = 1 << 30

@Suite("Limit formula")
struct BalloonLimitTests {
  @Test("KB 340369's example: 4 GiB guest, 2 GiB pinned, 4 GiB swap → 1331 MB")
  func kbExample() {
    let limit = BalloonLimit.compute(
      guestBytes: 4 * GiB, pinnedBytes: 2 * GiB, swapTotalBytes: 4 * GiB)
    #expect(limit.maxmemctlMB == 1331)
    #expect(limit.bytes == 1_395_864_371)  // floor(0.65 × 2147483648)
    #expect(limit.boundedBy == .fraction)
    #expect(limit.fraction == 0.65)
  }

  // guest, pinned, swap, fraction, expected bytes, bound
  static let cases: [(UInt64, UInt64, UInt64, Double, UInt64, LimitBound)] = [
    (4 * GiB, 2 * GiB, UInt64(0), 0.65, UInt64(1_395_864_371), LimitBound.fraction),  // no swap: no swap bound
    (4 * GiB, 2 * GiB, 512 * MiB, 0.65, 512 * MiB, LimitBound.swap),  // 0 < swap < limit
    (4 * GiB, 2 * GiB, 1_395_864_371, 0.65, UInt64(1_395_864_371), LimitBound.fraction),  // swap == limit
    (4 * GiB, 5 * GiB, 4 * GiB, 0.65, UInt64(0), LimitBound.fraction),  // pinned > guest
    (4 * GiB, 0, 0, 1.0, 4 * GiB, LimitBound.fraction),
    (1000, 0, 0, 0.5, 500, LimitBound.fraction),
    (1001, 0, 0, 0.5, 500, LimitBound.fraction),  // floor
    (UInt64.max, 0, 0, 1.0, UInt64.max, LimitBound.fraction),  // no trap at the top
  ]

  @Test("limit table", arguments: cases)
  func table(
    guest: UInt64, pinned: UInt64, swap: UInt64, fraction: Double, expected: UInt64,
    bound: LimitBound
  ) {
    let limit = BalloonLimit.compute(
      guestBytes: guest, pinnedBytes: pinned, swapTotalBytes: swap, fraction: fraction)
    #expect(limit.bytes == expected)
    #expect(limit.boundedBy == bound)
    #expect(limit.maxmemctlMB == expected / MiB)
  }

  static let fractions: [(Double, Bool)] = [
    (0.65, true), (1.0, true), (0.0, false), (-0.1, false), (1.01, false), (.nan, false),
  ]

  @Test("fraction validity", arguments: fractions)
  func fractionValidity(fraction: Double, valid: Bool) {
    #expect(BalloonLimit.isValid(fraction: fraction) == valid)
  }

  @Test("KVM floor rounds so it never undercuts the true floor")
  func kvmFloor() throws {
    // QEMU -m 1024 shows ~1023.6 MiB of System RAM (a legacy hole below 1 MiB).
    let limit = BalloonLimit.compute(
      guestBytes: 989_344 * 1024, pinnedBytes: 512 * MiB, swapTotalBytes: 0)
    let host = HostSettings.compute(
      limit: limit, configuredRAM: (bytes: 0x9fc00 + (0x3ffe_0000 - 0x100000), source: "test"))
    #expect(host.vmwareMaxmemctlMB == limit.bytes / MiB)
    let floor = try #require(host.kvmMinimumTargetMiB)
    // Balloon at this RAM target = 1024 MiB − floor ≤ limit.
    #expect((1024 - floor) * MiB <= limit.bytes)
    #expect(floor == 1024 - limit.bytes / MiB)
    #expect(HostSettings.compute(limit: limit, configuredRAM: nil).kvmMinimumTargetMiB == nil)
  }
}
