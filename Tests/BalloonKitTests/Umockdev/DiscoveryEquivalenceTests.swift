import BalloonKit
import SystemPackage
import Testing

extension UdevUmockdevTests {
  /// libudev and the plain sysfs walk must agree on every fixture: the live
  /// system uses the first, `--root` snapshots the second.
  @Suite struct Equivalence {
    @Test(arguments: Umockdev.allFixtures)
    func udevMatchesSysfs(fixture: String) throws {
      let testbed = try Testbed()
      try testbed.add(fixture: fixture)
      let viaUdev = try UdevDiscovery().discover()
      let viaSysfs = try SysfsDiscovery(root: .snapshot(FilePath(testbed.rootDir))).discover()
      #expect(viaUdev == viaSysfs)
      if fixture != "none.umockdev" { #expect(!viaUdev.isEmpty) }
    }

    @Test func udevMatchesSysfsWithEveryKind() throws {
      let testbed = try Testbed()
      for fixture in [
        "virtio-balloon-and-blk.umockdev", "vmw-balloon-module.umockdev", "xen-memory.umockdev",
        "hyperv-dynamic-memory.umockdev",
      ] {
        try testbed.add(fixture: fixture)
      }
      let viaUdev = try UdevDiscovery().discover()
      #expect(viaUdev.map(\.kind) == [.virtio, .vmware, .xen, .hyperv])
      #expect(
        viaUdev == (try SysfsDiscovery(root: .snapshot(FilePath(testbed.rootDir))).discover()))
    }
  }
}
