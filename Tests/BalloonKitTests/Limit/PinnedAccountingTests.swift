import BalloonKit
import Testing

private let KiB: UInt64 = 1024
private let MiB: UInt64 = 1 << 20
private let GiB: UInt64 = 1 << 30

/// A meminfo with every pinned-relevant field explicitly 0 unless set.
private func meminfo(
  total: UInt64 = 4 * GiB, swap: UInt64 = 0, mlocked: UInt64 = 0, unevictable: UInt64 = 0,
  anon: UInt64 = 0, shmem: UInt64 = 0, hugetlb: UInt64? = 0, hugePages: UInt64? = 0,
  hugepagesize: UInt64? = 2 * MiB,
  kernel: (UInt64, UInt64, UInt64, UInt64?, UInt64?) = (0, 0, 0, 0, 0)
) -> Meminfo {
  var m = Meminfo(memTotal: total, swapTotal: swap)
  m.mlocked = mlocked
  m.unevictable = unevictable
  m.anonPages = anon
  m.shmem = shmem
  m.hugetlb = hugetlb
  m.hugePagesTotal = hugePages
  m.hugepagesize = hugepagesize
  m.sUnreclaim = kernel.0
  m.kernelStack = kernel.1
  m.pageTables = kernel.2
  m.secPageTables = kernel.3
  m.percpu = kernel.4
  return m
}

private func vmstat(acquired: UInt64? = nil, released: UInt64? = nil) -> Vmstat {
  var v = Vmstat()
  v.follPinAcquired = acquired
  v.follPinReleased = released
  return v
}

@Suite("Pinned accounting (the contract formula)")
struct PinnedAccountingTests {
  static let lockedCases: [(UInt64, UInt64, UInt64)] = [
    (100, 300, 300), (500, 300, 500), (0, 0, 0),
  ]

  @Test("locked is max(Mlocked, Unevictable)", arguments: lockedCases)
  func locked(mlocked: UInt64, unevictable: UInt64, expected: UInt64) {
    let p = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, mlocked: mlocked * KiB, unevictable: unevictable * KiB),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(p.lockedBytes == expected * KiB)
    #expect(p.totalBytes == expected * KiB)
  }

  @Test("hugetlb uses Hugetlb (all sizes), not HugePages_Total × Hugepagesize")
  func hugetlbAllSizes() {
    // 512 default 2 MiB pages + one 1 GiB page: Hugetlb = 2 GiB, the product only 1 GiB.
    let p = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, hugetlb: 2 * GiB, hugePages: 512), vmstat: vmstat(),
      vmPinSumBytes: nil)
    #expect(p.hugetlbBytes == 2 * GiB)
    #expect(p.hugetlbSource == "Hugetlb")
  }

  @Test("hugetlb falls back to HugePages_Total × Hugepagesize before 4.16")
  func hugetlbFallback() {
    let p = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, hugetlb: nil, hugePages: 300, hugepagesize: 2 * MiB),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(p.hugetlbBytes == 600 * MiB)
    #expect(p.hugetlbSource == "HugePages_Total × Hugepagesize")
  }

  // (Σ VmPin, nr_foll_pin_acquired, nr_foll_pin_released, expected)
  static let dmaCases: [(UInt64?, UInt64?, UInt64?, UInt64)] = [
    (8 * MiB, 1536, 1024, 8 * MiB),  // VmPin larger
    (1 * MiB, 1536, 1024, 2 * MiB),  // 512 refs × 4 KiB
    (nil, 1536, 1024, 2 * MiB),  // processes not scanned
    (3 * MiB, nil, nil, 3 * MiB),  // kernel < 5.7: no counters
    (0, 100, 174, 0),  // inverted pair reads as nothing pinned
  ]

  @Test("dma_pinned is max(Σ VmPin, outstanding FOLL_PIN × 4096)", arguments: dmaCases)
  func dmaPinned(vmPin: UInt64?, acquired: UInt64?, released: UInt64?, expected: UInt64) {
    let p = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB), vmstat: vmstat(acquired: acquired, released: released),
      vmPinSumBytes: vmPin)
    #expect(p.dmaPinnedBytes == expected)
  }

  @Test("kernel sums the fields that exist")
  func kernel() {
    let all = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, kernel: (61304 * KiB, 6432 * KiB, 18880 * KiB, 0, 4544 * KiB)),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(all.kernelBytes == (61304 + 6432 + 18880 + 4544) * KiB)
    let old = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, kernel: (100 * KiB, 10 * KiB, 20 * KiB, nil, nil)),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(old.kernelBytes == 130 * KiB)
  }

  @Test("without swap, anonymous and shmem memory is unswappable (minus what is locked)")
  func unswappable() {
    let noSwap = PinnedAccounting.account(
      meminfo: meminfo(swap: 0, mlocked: 100 * MiB, anon: 300 * MiB, shmem: 50 * MiB),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(noSwap.unswappableBytes == 250 * MiB)
    #expect(noSwap.totalBytes == 350 * MiB)
    let withSwap = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, mlocked: 100 * MiB, anon: 300 * MiB, shmem: 50 * MiB),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(withSwap.unswappableBytes == 0)
    let mostlyLocked = PinnedAccounting.account(
      meminfo: meminfo(swap: 0, mlocked: 500 * MiB, anon: 300 * MiB, shmem: 50 * MiB),
      vmstat: vmstat(), vmPinSumBytes: nil)
    #expect(mostlyLocked.unswappableBytes == 0)
  }

  @Test("without swap, DMA-pinned anonymous memory is counted once (in dma_pinned, not again)")
  func dmaPinnedCountedOnce() {
    // fio with 64 MiB of io_uring fixed buffers: the buffers are anonymous
    // memory (in AnonPages) and pinned (VmPin, FOLL_PIN).
    let before = PinnedAccounting.account(
      meminfo: meminfo(swap: 0, mlocked: 100 * MiB, anon: 300 * MiB, shmem: 50 * MiB),
      vmstat: vmstat(), vmPinSumBytes: 0)
    let pinned = PinnedAccounting.account(
      meminfo: meminfo(swap: 0, mlocked: 100 * MiB, anon: 364 * MiB, shmem: 50 * MiB),
      vmstat: vmstat(acquired: 16384, released: 0), vmPinSumBytes: 64 * MiB)
    #expect(pinned.dmaPinnedBytes == 64 * MiB)
    #expect(pinned.unswappableBytes == 250 * MiB, "364 + 50 − 100 locked − 64 pinned")
    // The buffers raise the total by their size, not twice their size.
    #expect(pinned.totalBytes - before.totalBytes == 64 * MiB)
    let fraction = BalloonLimit.defaultFraction
    let drop =
      BalloonLimit.compute(
        guestBytes: 4 * GiB, pinnedBytes: before.totalBytes, swapTotalBytes: 0,
        fraction: fraction
      ).bytes
      - BalloonLimit.compute(
        guestBytes: 4 * GiB, pinnedBytes: pinned.totalBytes, swapTotalBytes: 0,
        fraction: fraction
      ).bytes
    #expect(drop <= UInt64(fraction * Double(64 * MiB)) + 1, "0.65 × 64 MiB, not 2 × 0.65 × 64 MiB")
  }

  @Test("pins beyond the anonymous memory leave nothing unswappable, never a wrap")
  func dmaPinnedAboveAnonymous() {
    let p = PinnedAccounting.account(
      meminfo: meminfo(swap: 0, mlocked: 10 * MiB, anon: 40 * MiB, shmem: 0),
      vmstat: vmstat(), vmPinSumBytes: 64 * MiB)
    #expect(p.unswappableBytes == 0)
    #expect(p.totalBytes == 74 * MiB)
    // With swap, dma_pinned does not touch unswappable (which is 0 anyway).
    let swapped = PinnedAccounting.account(
      meminfo: meminfo(swap: GiB, anon: 400 * MiB), vmstat: vmstat(), vmPinSumBytes: 64 * MiB)
    #expect(swapped.unswappableBytes == 0 && swapped.dmaPinnedBytes == 64 * MiB)
  }

  @Test("absurd values saturate instead of trapping")
  func saturation() {
    let p = PinnedAccounting.account(
      meminfo: meminfo(swap: 0, mlocked: .max, hugetlb: .max),
      vmstat: vmstat(acquired: .max, released: 0),
      vmPinSumBytes: .max)
    #expect(p.totalBytes == .max)
  }
}
