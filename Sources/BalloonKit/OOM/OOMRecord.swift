/// Whether the balloon caused an OOM kill. The rules (README, "OOM post-mortem"):
///
///     balloon_caused    a balloon was over the limit, or all balloons together
///                       held more than guest − pinned (memory the guest could give)
///     balloon_involved  a balloon held memory (or its size is unknown), under both
///     not_involved      every balloon was 0, or there is none
public enum OOMVerdict: String, Sendable, CaseIterable {
  case balloonCaused = "balloon_caused"
  case balloonInvolved = "balloon_involved"
  case notInvolved = "not_involved"
}

/// One balloon at the moment of an OOM kill.
public struct OOMBalloon: Sendable, Equatable {
  public var kind: BalloonKind
  public var name: String
  public var currentBytes: UInt64?
  public var targetBytes: UInt64?

  public init(kind: BalloonKind, name: String, currentBytes: UInt64?, targetBytes: UInt64?) {
    self.kind = kind
    self.name = name
    self.currentBytes = currentBytes
    self.targetBytes = targetBytes
  }
}

/// The judgement of one OOM kill: the verdict and the largest balloon size
/// that would have avoided it (nil when no cap on the balloon would have).
public struct OOMJudgement: Sendable, Equatable {
  public var verdict: OOMVerdict
  public var capBytes: UInt64?

  public init(verdict: OOMVerdict, capBytes: UInt64?) {
    self.verdict = verdict
    self.capBytes = capBytes
  }

  /// Pure. `reclaimableBytes` is guest − pinned.
  ///
  /// The cap: for balloon_caused, the limit (a balloon never above it leaves
  /// the guest its pinned memory and the fraction's headroom); for
  /// balloon_involved, the balloon less the victim's anon-rss (had the balloon
  /// held that much less, the victim's memory would have fit), at most the
  /// limit; for not_involved, none.
  public static func judge(
    balloons: [OOMBalloon], limitBytes: UInt64, reclaimableBytes: UInt64, victimAnonBytes: UInt64?
  ) -> OOMJudgement {
    let sizes = balloons.map(\.currentBytes)
    let known = sizes.compactMap { $0 }
    let total = known.reduce(0, +|)
    let unknown = known.count < sizes.count
    if known.contains(where: { $0 > limitBytes }) || total > reclaimableBytes {
      return OOMJudgement(verdict: .balloonCaused, capBytes: limitBytes)
    }
    if total > 0 || unknown {
      var cap: UInt64?
      if let anon = victimAnonBytes, total > 0 {
        cap = min(limitBytes, total > anon ? total - anon : 0)
      }
      return OOMJudgement(verdict: .balloonInvolved, capBytes: cap)
    }
    return OOMJudgement(verdict: .notInvolved, capBytes: nil)
  }
}

/// One OOM kill as balloonctl recorded it (state.json `oom_kills`, `status`).
public struct OOMRecord: Sendable, Equatable {
  /// Wall clock (epoch seconds) when balloonctl saw it.
  public var at: Int64
  /// CLOCK_BOOTTIME seconds when the balloons were read for this record.
  public var readBoottime: Double = 0
  /// The kernel's timestamp of the kill line (CLOCK_MONOTONIC µs); nil
  /// when only the counter told of the kill.
  public var kernelMicroseconds: UInt64?
  /// Where it came from: the kernel log (`kmsg`), or only the `oom_kill`
  /// counter of /proc/vmstat (`vmstat`: the victim is unknown).
  public var source: String
  public var victimPid: Int32?
  public var victimComm: String?
  public var victimAnonRSSBytes: UInt64?
  public var constraint: String?
  public var balloons: [OOMBalloon]
  public var limitBytes: UInt64
  public var guestBytes: UInt64
  public var pinned: OOMPinned
  public var verdict: OOMVerdict
  public var capBytes: UInt64?
  /// The victim's anon-rss was added back to `pinned.unswappable` (and the
  /// limit computed with it): see `make`.
  public var victimCountedBack = false

  public static let sources = ["kmsg", "vmstat"]

  public init(
    at: Int64, source: String, victim: OOMVictim?, balloons: [OOMBalloon], limitBytes: UInt64,
    guestBytes: UInt64, pinned: OOMPinned, judgement: OOMJudgement
  ) {
    self.at = at
    self.source = source
    victimPid = victim?.pid
    victimComm = victim?.comm
    victimAnonRSSBytes = victim?.anonRSSBytes
    constraint = victim?.constraint
    self.balloons = balloons
    self.limitBytes = limitBytes
    self.guestBytes = guestBytes
    self.pinned = pinned
    verdict = judgement.verdict
    capBytes = judgement.capBytes
  }

  /// From a snapshot read right after the kill (at boot time `now`).
  ///
  /// The reading comes after the kill, so a victim that has exited no longer
  /// counts in it; at the kill its memory was in use. Without swap its
  /// anon-rss could not have been given to the balloon (it is unswappable,
  /// like every anonymous page then), so when `victimGone` it is counted back
  /// as unswappable and the limit is the one of that moment. With swap it is
  /// not counted back (the kill line does not say how much of it was locked).
  public static func make(
    victim: OOMVictim?, snapshot: GuestSnapshot, wall: Int64, now: Double, victimGone: Bool
  ) -> OOMRecord {
    let balloons = snapshot.balloons.map {
      OOMBalloon(
        kind: $0.device.kind, name: $0.device.name, currentBytes: $0.effectiveCurrentBytes,
        targetBytes: $0.target.bytes)
    }
    var limit = snapshot.limit
    var pinned = OOMPinned(snapshot.pinned)
    var countedBack = false
    if victimGone, let anon = victim?.anonRSSBytes, anon > 0, snapshot.meminfo.swapTotal == 0 {
      pinned.unswappableBytes = pinned.unswappableBytes +| anon
      limit = BalloonLimit.compute(
        guestBytes: limit.guestBytes, pinnedBytes: pinned.totalBytes,
        swapTotalBytes: limit.swapTotalBytes, fraction: limit.fraction)
      countedBack = true
    }
    let judgement = OOMJudgement.judge(
      balloons: balloons, limitBytes: limit.bytes, reclaimableBytes: limit.reclaimableBytes,
      victimAnonBytes: victim?.anonRSSBytes)
    var record = OOMRecord(
      at: wall, source: victim == nil ? "vmstat" : "kmsg", victim: victim, balloons: balloons,
      limitBytes: limit.bytes, guestBytes: limit.guestBytes, pinned: pinned,
      judgement: judgement)
    record.victimCountedBack = countedBack
    record.readBoottime = now
    record.kernelMicroseconds = victim?.kernelMicroseconds
    return record
  }
}

/// The pinned breakdown kept with a record (PinnedMemory's five parts).
public struct OOMPinned: Sendable, Equatable {
  public var hugetlbBytes: UInt64
  public var lockedBytes: UInt64
  public var dmaPinnedBytes: UInt64
  public var kernelBytes: UInt64
  public var unswappableBytes: UInt64

  public init(
    hugetlbBytes: UInt64, lockedBytes: UInt64, dmaPinnedBytes: UInt64, kernelBytes: UInt64,
    unswappableBytes: UInt64
  ) {
    self.hugetlbBytes = hugetlbBytes
    self.lockedBytes = lockedBytes
    self.dmaPinnedBytes = dmaPinnedBytes
    self.kernelBytes = kernelBytes
    self.unswappableBytes = unswappableBytes
  }

  public init(_ pinned: PinnedMemory) {
    self.init(
      hugetlbBytes: pinned.hugetlbBytes, lockedBytes: pinned.lockedBytes,
      dmaPinnedBytes: pinned.dmaPinnedBytes, kernelBytes: pinned.kernelBytes,
      unswappableBytes: pinned.unswappableBytes)
  }

  public var totalBytes: UInt64 {
    [hugetlbBytes, lockedBytes, dmaPinnedBytes, kernelBytes, unswappableBytes].reduce(0, +|)
  }
}
