import SystemPackage
import Testing

@testable import BalloonKit

/// Captured from real PV domUs (memory=512, maxmem=1024) under Xen 4.17 in
/// the e2e xen tier, after each `xl mem-set` of 512 (boot) → 768 → 384 →
/// 1024 → 512 MiB: the balloon's sysfs attributes and /proc/meminfo as the
/// domU read them, and dom0's view (`Tests/Fixtures/xen-domu/README.md`).
@Suite("Xen: the same VM reads the same on 6.1 and 7.3")
struct XenDomUTests {
  static let base = Fixtures.roots.removingLastComponent().appending("xen-domu")
  static let kernels = ["6.1", "7.3"]
  static let steps = ["0-512", "1-768", "2-384", "3-1024", "4-512"]
  static let device = BalloonDevice(
    kind: .xen, name: "xen_memory0", sysPath: "/sys/devices/system/xen_memory/xen_memory0",
    driver: "xen-balloon")

  /// dom0's view: `memory/target` and `memory/static-max` from xenstore (KiB)
  /// and the `xl list` Mem column (MiB), one `key value` per line.
  struct Dom0View {
    var targetKiB: UInt64
    var staticMaxKiB: UInt64
    var xlListMiB: UInt64

    init(_ dir: FilePath) throws {
      let text = String(decoding: try SystemFile.readRequired(dir.appending("dom0")), as: UTF8.self)
      var values: [String: UInt64] = [:]
      for line in text.split(separator: "\n") {
        let parts = line.split(separator: " ")
        try #require(parts.count == 2, "\(line)")
        guard let value = UInt64(String(parts[1])) else {
          Issue.record("\(dir): not a number: \(line)")
          continue
        }
        values[String(parts[0])] = value
      }
      #expect(values.count == 3)
      targetKiB = try #require(values["memory/target"])
      staticMaxKiB = try #require(values["memory/static-max"])
      xlListMiB = try #require(values["xl-list-mib"])
    }
  }

  struct Step {
    var stats: XenBalloonStats
    var memTotal: UInt64
    var dom0: Dom0View
  }

  /// The steps of one kernel, in order, each read with the grant the
  /// previous ones left (as the daemon does from tick to tick).
  static func sequence(_ kernel: String) throws -> [Step] {
    var remembered: UInt64? = nil
    return try steps.map { step in
      let dir = base.appending(kernel).appending(step)
      let root = Root.snapshot(dir)
      let stats = try XenBalloonReader.read(
        device: device, root: root, rememberedGrantBytes: remembered)
      remembered = stats.grantedBytes
      return Step(
        stats: stats, memTotal: try MeminfoReader.read(from: root).memTotal,
        dom0: try Dom0View(dir))
    }
  }

  @Test("sysfs agrees with dom0: target_kb is xenstore's memory/target, current_kb is xl list")
  func dom0Agrees() throws {
    for kernel in Self.kernels {
      for (name, step) in zip(Self.steps, try Self.sequence(kernel)) {
        #expect(
          step.stats.reservationTargetBytes == step.dom0.targetKiB * 1024, "\(kernel) \(name)")
        #expect(step.dom0.staticMaxKiB == 1_048_576)
        // xl list rounds the domain's pages to MiB; the kernel may lack a
        // hotplug block (7.3 stops 4 MiB short of 1024).
        let xl = step.dom0.xlListMiB << 20
        let current = step.stats.currentReservationBytes
        #expect(max(xl, current) - min(xl, current) <= 4 << 20, "\(kernel) \(name)")
      }
    }
  }

  @Test("the kernels disagree about what is ballooned at boot")
  func kernelsDisagree() throws {
    let old = try Self.sequence("6.1")[0].stats
    let new = try Self.sequence("7.3")[0].stats
    #expect(old.balloonBytes == 512 << 20)  // the never-populated half
    #expect(new.balloonBytes == 0)
    #expect(old.currentReservationBytes == new.currentReservationBytes)
  }

  @Test("the grant, the balloon and its target are the same on both kernels, step by step")
  func sameOnBoth() throws {
    let old = try Self.sequence("6.1")
    let new = try Self.sequence("7.3")
    for (i, name) in Self.steps.enumerated() {
      let a = old[i].stats
      let b = new[i].stats
      #expect(a.grantedBytes == b.grantedBytes, "\(name)")
      #expect(a.grantedBalloonTargetBytes == b.grantedBalloonTargetBytes, "\(name)")
      // Within the hotplug block 7.3 may still lack.
      let diff =
        max(a.grantedBalloonBytes, b.grantedBalloonBytes)
        - min(a.grantedBalloonBytes, b.grantedBalloonBytes)
      #expect(diff <= 4 << 20, "\(name)")
      // The guest (MemTotal + balloon) differs by what each kernel reserves
      // for itself, not by the 512 MiB the kernel view puts between them.
      let guestA = a.grantedBalloonBytes + old[i].memTotal
      let guestB = b.grantedBalloonBytes + new[i].memTotal
      #expect(max(guestA, guestB) - min(guestA, guestB) < 32 << 20, "\(name)")
    }
  }

  @Test("the grant is the largest target the toolstack set, and the balloon what it took back")
  func grantFollowsTheToolstack() throws {
    for kernel in Self.kernels {
      let seq = try Self.sequence(kernel)
      let mib: [UInt64] = [512, 768, 768, 1024, 1024]
      let taken: [UInt64] = [0, 0, 384, 0, 512]
      for i in seq.indices {
        #expect(seq[i].stats.grantedBytes == mib[i] << 20, "\(kernel) \(Self.steps[i])")
        #expect(
          seq[i].stats.grantedBalloonTargetBytes == taken[i] << 20, "\(kernel) \(Self.steps[i])")
      }
      // Booted at memory=512: nothing taken, the guest is MemTotal alone.
      #expect(seq[0].stats.grantedBalloonBytes == 0)
    }
  }

  @Test("a held target_kb is never above the grant, and the host's target is restored exactly")
  func leverStaysWithinTheGrant() throws {
    for kernel in Self.kernels {
      for step in try Self.sequence(kernel) {
        let granted = step.stats.grantedBytes
        for limit: UInt64 in [0, 100 << 20, step.stats.grantedBalloonTargetBytes, 2 << 30] {
          let balloon = min(limit, step.stats.grantedBalloonTargetBytes)
          let kib = XenDriver.targetKiB(reservation: granted, balloon: balloon)
          #expect(kib * 1024 <= granted)
          #expect(granted - min(granted, kib * 1024) <= balloon)
        }
        #expect(
          XenDriver.targetKiB(
            reservation: granted, balloon: step.stats.grantedBalloonTargetBytes)
            == step.stats.reservationTargetBytes / 1024)
      }
    }
  }

  @Test("the daemon's memory of the grant: a later process starting low never claims more")
  func rememberedGrant() throws {
    let dir = Self.base.appending("6.1").appending("2-384")
    let fresh = try XenBalloonReader.read(device: Self.device, root: .snapshot(dir))
    #expect(fresh.grantedBytes == 384 << 20)
    #expect(fresh.grantedBalloonBytes == 0)
    let remembered = try XenBalloonReader.read(
      device: Self.device, root: .snapshot(dir), rememberedGrantBytes: 768 << 20)
    #expect(remembered.grantedBalloonBytes == 384 << 20)
  }
}
