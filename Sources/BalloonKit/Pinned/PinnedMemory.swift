/// Guest memory the balloon can never take, split by why. Bytes.
///
/// The contract (every tool and test agrees on exactly this; it deliberately
/// counts less than the sketch in docs/kernel-interfaces.md §5.5, e.g. no VmallocUsed):
///
///     locked      = max(Mlocked, Unevictable)
///     hugetlb     = Hugetlb  (all sizes; HugePages_Total × Hugepagesize before 4.16)
///     dma_pinned  = max(Σ VmPin, (nr_foll_pin_acquired − nr_foll_pin_released) × 4096)
///     kernel      = SUnreclaim + KernelStack + PageTables + SecPageTables + Percpu
///     unswappable = SwapTotal == 0 ? max(0, AnonPages + Shmem − locked − dma_pinned) : 0
///     pinned      = hugetlb + locked + dma_pinned + kernel + unswappable
///
/// Each page counts once. DMA pins, like mlock, are taken on anonymous
/// buffers (io_uring fixed buffers, RDMA memory regions, VFIO DMA maps), so
/// without swap those pages are in AnonPages as well as in dma_pinned; they
/// leave `unswappable` as locked pages do.
public struct PinnedMemory: Sendable, Equatable {
  public var hugetlbBytes: UInt64
  public var lockedBytes: UInt64
  public var dmaPinnedBytes: UInt64
  public var kernelBytes: UInt64
  public var unswappableBytes: UInt64

  /// Where `hugetlbBytes` came from: `Hugetlb`, or the pre-4.16 product.
  public var hugetlbSource: String
  /// The two candidates for `dmaPinnedBytes`, for `limit --explain`.
  public var vmPinSumBytes: UInt64?
  public var follPinOutstandingBytes: UInt64?

  public init(
    hugetlbBytes: UInt64, lockedBytes: UInt64, dmaPinnedBytes: UInt64, kernelBytes: UInt64,
    unswappableBytes: UInt64, hugetlbSource: String = "Hugetlb", vmPinSumBytes: UInt64? = nil,
    follPinOutstandingBytes: UInt64? = nil
  ) {
    self.hugetlbBytes = hugetlbBytes
    self.lockedBytes = lockedBytes
    self.dmaPinnedBytes = dmaPinnedBytes
    self.kernelBytes = kernelBytes
    self.unswappableBytes = unswappableBytes
    self.hugetlbSource = hugetlbSource
    self.vmPinSumBytes = vmPinSumBytes
    self.follPinOutstandingBytes = follPinOutstandingBytes
  }

  public var totalBytes: UInt64 {
    [hugetlbBytes, lockedBytes, dmaPinnedBytes, kernelBytes, unswappableBytes].reduce(0, +|)
  }
}

public enum PinnedAccounting {
  /// The unit of `nr_foll_pin_*` in the contract: one reference = one 4 KiB page.
  public static let follPinUnit: UInt64 = 4096

  /// Applies the contract to one reading. `vmPinSumBytes` is Σ VmPin over
  /// thread-group leaders, or nil when processes were not scanned.
  public static func account(meminfo: Meminfo, vmstat: Vmstat, vmPinSumBytes: UInt64?)
    -> PinnedMemory
  {
    let locked = max(meminfo.mlocked ?? 0, meminfo.unevictable ?? 0)

    let hugetlb: UInt64
    let hugetlbSource: String
    if let all = meminfo.hugetlb {
      hugetlb = all
      hugetlbSource = "Hugetlb"
    } else {
      hugetlb = (meminfo.hugePagesTotal ?? 0) *| (meminfo.hugepagesize ?? 0)
      hugetlbSource = "HugePages_Total × Hugepagesize"
    }

    var follBytes: UInt64?
    if let acquired = vmstat.follPinAcquired, let released = vmstat.follPinReleased {
      // The two counters are summed separately over CPUs; a transiently
      // inverted pair means nothing is pinned, not a huge number.
      follBytes = (acquired > released ? acquired - released : 0) *| follPinUnit
    }
    let dma = max(vmPinSumBytes ?? 0, follBytes ?? 0)

    let kernel = [
      meminfo.sUnreclaim, meminfo.kernelStack, meminfo.pageTables, meminfo.secPageTables,
      meminfo.percpu,
    ].reduce(0) { $0 +| ($1 ?? 0) }

    var unswappable: UInt64 = 0
    if meminfo.swapTotal == 0 {
      // Locked and DMA-pinned pages are anonymous too; they are counted above.
      let anonymous = (meminfo.anonPages ?? 0) +| (meminfo.shmem ?? 0)
      let counted = locked +| dma
      unswappable = anonymous > counted ? anonymous - counted : 0
    }

    return PinnedMemory(
      hugetlbBytes: hugetlb, lockedBytes: locked, dmaPinnedBytes: dma, kernelBytes: kernel,
      unswappableBytes: unswappable, hugetlbSource: hugetlbSource, vmPinSumBytes: vmPinSumBytes,
      follPinOutstandingBytes: follBytes)
  }
}

infix operator +| : AdditionPrecedence
infix operator *| : MultiplicationPrecedence

extension UInt64 {
  /// Saturating addition: a snapshot with absurd values gives an absurd but
  /// finite answer, never a trap.
  @inlinable
  public static func +| (lhs: UInt64, rhs: UInt64) -> UInt64 {
    let (sum, overflow) = lhs.addingReportingOverflow(rhs)
    return overflow ? .max : sum
  }

  /// Saturating multiplication.
  @inlinable
  public static func *| (lhs: UInt64, rhs: UInt64) -> UInt64 {
    let (product, overflow) = lhs.multipliedReportingOverflow(by: rhs)
    return overflow ? .max : product
  }
}
