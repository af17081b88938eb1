import BalloonKit
import SystemPackage
import Testing

private let kib: UInt64 = 1024

@Suite("HypervBalloonReader: debugfs hv-balloon")
struct HypervBalloonReaderTests {
  @Test("the original spelling total_pages_commited") func misspelled() throws {
    let stats = try #require(try HypervBalloonReader.read(root: Fixtures.root("hyperv")))
    #expect(
      stats
        == HypervBalloonStats(
          pagesBallooned: 131_072, pageSize: 4096, totalPagesCommitted: 845_123,
          maxDynamicPageCount: 2_097_152))
    #expect(stats.balloonedBytes == 512 << 20)
  }

  @Test("the fixed spelling total_pages_committed") func fixed() throws {
    let stats = try #require(try HypervBalloonReader.read(root: Fixtures.root("hyperv-committed")))
    #expect(stats.pagesBallooned == 262_144)
    #expect(stats.totalPagesCommitted == 1_645_123)
    #expect(stats.balloonedBytes == 1 << 30)
  }

  @Test("page_size defaults to 4096 and scales pages_ballooned") func pageSize() throws {
    let without = try HypervBalloonReader.parse(
      Array("pages_ballooned       : 10\n".utf8), path: "hv-balloon")
    #expect(without.pageSize == 4096)
    #expect(without.balloonedBytes == 40960)
    #expect(without.totalPagesCommitted == nil)
    let larger = try HypervBalloonReader.parse(
      Array("page_size             : 65536\npages_ballooned       : 10\n".utf8), path: "hv-balloon")
    #expect(larger.balloonedBytes == 655_360)
  }

  @Test("absent file is nil", arguments: ["virtio-6.18", "xen", "vmw-6.x"])
  func absent(tree: String) throws {
    #expect(try HypervBalloonReader.read(root: Fixtures.root(tree)) == nil)
  }
}

@Suite("XenBalloonReader: xen_memory0 attributes")
struct XenBalloonReaderTests {
  static let device = BalloonDevice(
    kind: .xen, name: "xen_memory0", sysPath: "/sys/devices/system/xen_memory/xen_memory0",
    driver: "xen-balloon")

  @Test("reservation numbers and the derived balloon sizes") func fixture() throws {
    let stats = try XenBalloonReader.read(device: Self.device, root: Fixtures.root("xen"))
    #expect(
      stats
        == XenBalloonStats(
          reservationTargetBytes: 2_621_440 * kib, currentReservationBytes: 3_145_728 * kib,
          lowBytes: 1_048_576 * kib, highBytes: 0))
    #expect(stats.balloonBytes == 1 << 30)
    // 3 GiB reserved + 1 GiB ballooned − 2.5 GiB target = 1.5 GiB balloon target.
    #expect(stats.balloonTargetBytes == 1536 << 20)
  }

  @Test("a target above the whole domain clamps the balloon target at 0") func clamp() {
    let stats = XenBalloonStats(
      reservationTargetBytes: 8 << 30, currentReservationBytes: 3 << 30, lowBytes: 1 << 30,
      highBytes: 512 << 20)
    #expect(stats.balloonBytes == 1536 << 20)
    #expect(stats.balloonTargetBytes == 0)
  }

  static let files = ["target_kb", "info/current_kb", "info/low_kb", "info/high_kb"]

  @Test("a missing attribute is an error naming it", arguments: files)
  func missing(file: String) throws {
    let tree = try Fixtures.copy("xen")
    let path = Self.device.sysPath + "/" + file
    tree.remove(path)
    let error = try #require(
      sourceError { () throws(SourceError) in
        _ = try XenBalloonReader.read(device: Self.device, root: tree.root)
      })
    #expect(error.path == tree.path(path))
    #expect(error.problem == .unreadable(.noSuchFileOrDirectory))
  }

  @Test(
    "a malformed attribute is an error naming it",
    arguments: [
      ("info/low_kb", "", "empty"),
      ("info/low_kb", "\n", "empty"),
      ("info/high_kb", "12\u{0}\n", "NUL byte in text"),
      ("target_kb", "26214x\n", "is not a number"),
      ("info/current_kb", "99999999999999999999\n", "overflows 64 bits"),
      ("info/low_kb", "18446744073709551615\n", "overflows 64 bits"),
      ("info/high_kb", "-1\n", "is not a number"),
    ])
  func malformed(file: String, content: String, says: String) throws {
    let tree = try Fixtures.copy("xen")
    let path = Self.device.sysPath + "/" + file
    try tree.write(path, content)
    let error = try #require(
      sourceError { () throws(SourceError) in
        _ = try XenBalloonReader.read(device: Self.device, root: tree.root)
      })
    #expect(error.description.hasPrefix(tree.path(path) + ": "), "\(error)")
    #expect(error.description.contains(says), "\(error)")
  }
}
