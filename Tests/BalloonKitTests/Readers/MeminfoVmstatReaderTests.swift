import BalloonKit
import Testing

private let kib: UInt64 = 1024
private let page: UInt64 = 4096

/// What each tree's /proc/meminfo says (README.md of each tree).
struct MeminfoCase: Sendable, CustomTestStringConvertible {
  var tree: String
  var memTotalKiB: UInt64
  var swapTotalKiB: UInt64
  var mlockedKiB: UInt64
  var unevictableKiB: UInt64
  var balloonKiB: UInt64?
  var hugetlbKiB: UInt64?
  var hugePagesTotal: UInt64
  var percpuKiB: UInt64?
  var secPageTablesKiB: UInt64?
  var testDescription: String { tree }
}

/// What each tree's /proc/vmstat says, in pages / counts.
struct VmstatCase: Sendable, CustomTestStringConvertible {
  var tree: String
  var nrBalloonPages: UInt64?
  var inflate: UInt64?
  var deflate: UInt64?
  var pinAcquired: UInt64?
  var pinReleased: UInt64?
  var testDescription: String { tree }
}

@Suite("MeminfoReader and VmstatReader on the fixture trees")
struct MeminfoVmstatReaderTests {
  static let meminfoCases: [MeminfoCase] = [
    .init(
      tree: "virtio-6.18", memTotalKiB: 8_139_468, swapTotalKiB: 0, mlockedKiB: 526_336,
      unevictableKiB: 534_528, balloonKiB: 1_048_576, hugetlbKiB: 0, hugePagesTotal: 0,
      percpuKiB: 2712, secPageTablesKiB: 0),
    .init(
      tree: "virtio-6.1", memTotalKiB: 3_491_248, swapTotalKiB: 998_396, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: nil, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: 0),
    .init(
      tree: "virtio-unbound", memTotalKiB: 8_139_468, swapTotalKiB: 0, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: 0, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: 0),
    .init(
      tree: "none", memTotalKiB: 8_139_468, swapTotalKiB: 0, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: 0, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: 0),
    .init(
      tree: "hugetlb-multi", memTotalKiB: 16_370_236, swapTotalKiB: 4_194_300, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: nil, hugetlbKiB: 3_145_728, hugePagesTotal: 512,
      percpuKiB: 2712, secPageTablesKiB: 0),
    .init(
      tree: "pre-4.16", memTotalKiB: 3_753_548, swapTotalKiB: 2_097_148, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: nil, hugetlbKiB: nil, hugePagesTotal: 256,
      percpuKiB: nil, secPageTablesKiB: nil),
    .init(
      tree: "vmw-4.19", memTotalKiB: 8_167_892, swapTotalKiB: 2_097_148, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: nil, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: nil),
    .init(
      tree: "vmw-6.x", memTotalKiB: 8_129_876, swapTotalKiB: 2_097_148, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: 1024, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: 0),
    .init(
      tree: "vmw-no-debugfs", memTotalKiB: 8_129_876, swapTotalKiB: 2_097_148, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: 524_288, hugetlbKiB: 0, hugePagesTotal: 0,
      percpuKiB: 2712, secPageTablesKiB: 0),
    .init(
      tree: "kb-example", memTotalKiB: 4_194_304, swapTotalKiB: 4_194_304, mlockedKiB: 2_097_152,
      unevictableKiB: 2_097_152, balloonKiB: 1_048_576, hugetlbKiB: 0, hugePagesTotal: 0,
      percpuKiB: 0, secPageTablesKiB: 0),
    .init(
      tree: "xen", memTotalKiB: 3_036_104, swapTotalKiB: 998_396, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: nil, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: 0),
    .init(
      tree: "hyperv", memTotalKiB: 3_145_728, swapTotalKiB: 2_097_148, mlockedKiB: 12_792,
      unevictableKiB: 14_424, balloonKiB: nil, hugetlbKiB: 0, hugePagesTotal: 0, percpuKiB: 2712,
      secPageTablesKiB: 0),
    .init(
      tree: "hyperv-committed", memTotalKiB: 6_291_456, swapTotalKiB: 2_097_148,
      mlockedKiB: 12_792, unevictableKiB: 14_424, balloonKiB: 1_048_576, hugetlbKiB: 0,
      hugePagesTotal: 0, percpuKiB: 2712, secPageTablesKiB: 0),
  ]

  @Test("every tree has a meminfo case") func coversEveryTree() {
    #expect(Set(Self.meminfoCases.map(\.tree)) == Set(Fixtures.allTrees))
    #expect(Set(Self.vmstatCases.map(\.tree)) == Set(Fixtures.allTrees))
  }

  @Test("meminfo fields in bytes", arguments: meminfoCases)
  func meminfo(_ c: MeminfoCase) throws {
    let info = try MeminfoReader.read(from: Fixtures.root(c.tree))
    #expect(info.memTotal == c.memTotalKiB * kib)
    #expect(info.swapTotal == c.swapTotalKiB * kib)
    #expect(info.mlocked == c.mlockedKiB * kib)
    #expect(info.unevictable == c.unevictableKiB * kib)
    #expect(info.balloon == c.balloonKiB.map { $0 * kib })
    #expect(info.hugetlb == c.hugetlbKiB.map { $0 * kib })
    #expect(info.hugePagesTotal == c.hugePagesTotal)
    #expect(info.hugepagesize == 2048 * kib)
    #expect(info.percpu == c.percpuKiB.map { $0 * kib })
    #expect(info.secPageTables == c.secPageTablesKiB.map { $0 * kib })
    #expect(info.memAvailable != nil)
  }

  @Test("kb-example: every kernel field is 0") func kbExampleKernelFields() throws {
    let info = try MeminfoReader.read(from: Fixtures.root("kb-example"))
    #expect(info.sUnreclaim == 0)
    #expect(info.kernelStack == 0)
    #expect(info.pageTables == 0)
    #expect(info.secPageTables == 0)
    #expect(info.percpu == 0)
    #expect(info.hugetlb == 0)
    #expect(info.memTotal == 4 << 30)
  }

  @Test("hugetlb-multi: Hugetlb is not HugePages_Total × Hugepagesize")
  func hugetlbMulti() throws {
    let info = try MeminfoReader.read(from: Fixtures.root("hugetlb-multi"))
    let total = try #require(info.hugePagesTotal)
    let size = try #require(info.hugepagesize)
    #expect(total * size == 1 << 30)
    #expect(info.hugetlb == 3 << 30)
  }

  static let vmstatCases: [VmstatCase] = [
    .init(
      tree: "virtio-6.18", nrBalloonPages: 262_144, inflate: 1_310_720, deflate: 1_048_576,
      pinAcquired: 1536, pinReleased: 1024),
    .init(
      tree: "virtio-6.1", nrBalloonPages: nil, inflate: 393_216, deflate: 262_144,
      pinAcquired: 96, pinReleased: 96),
    .init(
      tree: "virtio-unbound", nrBalloonPages: 0, inflate: 0, deflate: 0, pinAcquired: 174,
      pinReleased: 174),
    .init(
      tree: "none", nrBalloonPages: 0, inflate: 0, deflate: 0, pinAcquired: 174, pinReleased: 174),
    .init(
      tree: "hugetlb-multi", nrBalloonPages: nil, inflate: 65_536, deflate: 0, pinAcquired: 2048,
      pinReleased: 2048),
    .init(
      tree: "pre-4.16", nrBalloonPages: nil, inflate: 131_072, deflate: 65_536, pinAcquired: nil,
      pinReleased: nil),
    .init(
      tree: "vmw-4.19", nrBalloonPages: nil, inflate: 261_632, deflate: 0, pinAcquired: nil,
      pinReleased: nil),
    .init(
      tree: "vmw-6.x", nrBalloonPages: 256, inflate: 261_888, deflate: 0, pinAcquired: 210,
      pinReleased: 210),
    .init(
      tree: "vmw-no-debugfs", nrBalloonPages: 131_072, inflate: 131_072, deflate: 0,
      pinAcquired: 210, pinReleased: 210),
    .init(
      tree: "kb-example", nrBalloonPages: 262_144, inflate: 262_144, deflate: 0, pinAcquired: 200,
      pinReleased: 200),
    .init(
      tree: "xen", nrBalloonPages: nil, inflate: 0, deflate: 0, pinAcquired: 12, pinReleased: 12),
    .init(
      tree: "hyperv", nrBalloonPages: nil, inflate: 0, deflate: 0, pinAcquired: 40, pinReleased: 40),
    .init(
      tree: "hyperv-committed", nrBalloonPages: 262_144, inflate: 0, deflate: 0, pinAcquired: 40,
      pinReleased: 40),
  ]

  @Test("vmstat counters (pages → bytes, pins stay counts)", arguments: vmstatCases)
  func vmstat(_ c: VmstatCase) throws {
    let stat = try VmstatReader.read(from: Fixtures.root(c.tree))
    #expect(stat.balloonBytes == c.nrBalloonPages.map { $0 * page })
    #expect(stat.balloonInflatedBytes == c.inflate.map { $0 * page })
    #expect(stat.balloonDeflatedBytes == c.deflate.map { $0 * page })
    #expect(stat.follPinAcquired == c.pinAcquired)
    #expect(stat.follPinReleased == c.pinReleased)
    #expect(stat.oomKill == 0)
  }

  @Test("vmstat page counters use the root's page size") func pageSize() throws {
    let bytes = try Fixtures.bytes("virtio-6.18", "/proc/vmstat")
    let stat = try VmstatReader.parse(bytes, path: "/proc/vmstat", pageSize: 65536)
    #expect(stat.balloonBytes == UInt64(262_144) * 65536)
    #expect(stat.follPinAcquired == 1536)
  }
}
