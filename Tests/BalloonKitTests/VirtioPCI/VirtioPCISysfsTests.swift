import SystemPackage
import Testing

@testable import BalloonKit

#if canImport(Glibc)
  import Glibc
#endif

private let configPath = "/sys/bus/pci/devices/0000:00:01.0/config"

/// 256 bytes, each its own offset: any misplaced read or write shows.
private let pattern = (0..<256).map { UInt8($0) }

private func reason(_ body: () throws(ProbeError) -> Void) -> String? {
  do {
    try body()
    return nil
  } catch {
    return error.reason
  }
}

@Suite("VirtioPCI sysfs access (temporary files only)")
struct VirtioPCISysfsTests {
  @Test(
    "valid PCI addresses, in the kernel's spelling",
    arguments: [
      ("0000:00:01.0", "0000:00:01.0"),
      ("0000:00:1f.7", "0000:00:1f.7"),
      ("0000:00:0A.0", "0000:00:0a.0"),
      ("ABCD:EF:1F.3", "abcd:ef:1f.3"),
      ("10000:e1:00.3", "10000:e1:00.3"),  // VMD domains are 5 digits
      ("ffffffff:ff:1f.7", "ffffffff:ff:1f.7"),
    ])
  func validAddresses(text: String, normalized: String) {
    #expect(SysfsPCIConfigSpace.normalizedAddress(text) == normalized)
  }

  @Test(
    "invalid PCI addresses",
    arguments: [
      "", "0000:00:01", "0000:00:01.", "000:00:01.0", "0000:0:001.0", "0000:00:20.0",
      "0000:00:01.8", "0000:00:01.a", "0000:00:01:0", "0000.00:01.0", "g000:00:01.0",
      "123456789:00:01.0", "0000:00:01.0 ", " 0000:00:01.0", "0000:00:01.0\n", "0000:00:01.0\0",
      "../../../etc/passwd", "0000:00:01.0/../../x", "0000:00:01.0/config", "..:..:...0",
      "0000:00:/1.0", "0000:00:01.0/", "+000:00:01.0", "0000:00:-1.0", "０000:00:01.0",
    ])
  func invalidAddresses(text: String) throws {
    #expect(SysfsPCIConfigSpace.normalizedAddress(text) == nil)
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    let failure = reason { () throws(ProbeError) in
      _ = try SysfsPCIConfigSpace(root: tree.root, pciAddress: text)
    }
    #expect(failure?.hasPrefix("invalid PCI address \"") == true)
    #expect(failure?.hasSuffix("\" (expected dddd:bb:dd.f)") == true)
    #expect(failure?.contains("\n") == false)
  }

  @Test("the path is below the root")
  func path() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    let space = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    #expect(space.path == tree.base.appending("sys/bus/pci/devices/0000:00:01.0/config"))
    #expect(space.pciAddress == "0000:00:01.0")
  }

  @Test("reads: whole, slices, short at the end, nothing past it")
  func reads() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    try tree.write(configPath, pattern)
    let space = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    #expect(try space.read(offset: 0, count: 4096) == pattern)
    #expect(try space.read(offset: 0x84, count: 16) == Array(pattern[0x84..<0x94]))
    #expect(try space.read(offset: 0x94, count: 4) == [0x94, 0x95, 0x96, 0x97])
    #expect(try space.read(offset: 250, count: 16) == Array(pattern[250..<256]))
    #expect(try space.read(offset: 256, count: 4) == [])
    #expect(try space.read(offset: 0, count: 0) == [])
    #expect(
      reason { () throws(ProbeError) in _ = try space.read(offset: -1, count: 4) }?
        .hasSuffix("read of 4 bytes at -1 is outside config space") == true)
    #expect(
      reason { () throws(ProbeError) in _ = try space.read(offset: 0, count: 4097) }?
        .hasSuffix("read of 4097 bytes at 0 is outside config space") == true)
  }

  @Test("a 64-byte file (what a non-root reader gets) reads as 64 bytes")
  func nonRootSize() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    try tree.write(
      configPath, Array(VirtioPCILayout.qemu(numPages: 1, actual: 1).config.prefix(64)))
    let space = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    #expect(try space.read(offset: 0, count: 256).count == 64)
    #expect(try space.read(offset: 0x84, count: 16).isEmpty)
  }

  @Test("writes land at their offset in the temporary file, and nowhere else")
  func writes() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    try tree.write(configPath, pattern)
    let space = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    try space.write(offset: 0x88, bytes: [4])
    try space.write(offset: 0x8c, bytes: [0x04, 0x20, 0x00, 0x00])
    try space.write(offset: 0x90, bytes: [4, 0, 0, 0])
    var expected = pattern
    expected[0x88] = 4
    expected.replaceSubrange(0x8c..<0x94, with: [0x04, 0x20, 0x00, 0x00, 4, 0, 0, 0])
    #expect(try space.read(offset: 0, count: 256) == expected)
    space.close()
    #expect(try tree.contents(configPath) == expected)

    #expect(
      reason { () throws(ProbeError) in try space.write(offset: 0x88, bytes: []) }?
        .hasSuffix("write of 0 bytes at 136 is outside config space") == true)
    #expect(
      reason { () throws(ProbeError) in try space.write(offset: 4095, bytes: [1, 2]) }?
        .hasSuffix("write of 2 bytes at 4095 is outside config space") == true)
    #expect(try tree.contents(configPath) == expected)
  }

  @Test("nothing is opened for writing until the first write")
  func lazyWriteOpen() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    let path = try tree.write(configPath, pattern)
    // Read-only file: reads work; opening it read-write would fail for a
    // non-root user (root bypasses file modes, so only reads are checked here).
    #expect(chmod(path.string, 0o444) == 0)
    let space = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    #expect(try space.read(offset: 0, count: 4) == [0, 1, 2, 3])
    #expect(try tree.contents(configPath) == pattern)
  }

  @Test("a missing function: one line naming it")
  func missing() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    let space = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:02.0")
    let expected =
      "no PCI function 0000:00:02.0 (\(tree.base.string)/sys/bus/pci/devices/0000:00:02.0/config is missing)"
    #expect(
      reason { () throws(ProbeError) in _ = try space.read(offset: 0, count: 64) } == expected)
    #expect(
      reason { () throws(ProbeError) in try space.write(offset: 0x88, bytes: [4]) } == expected)
  }

  @Test("write refusals map to one-line reasons")
  func writeRefusals() {
    #expect(
      SysfsPCIConfigSpace.writeFailure(.notPermitted, path: "/c").reason
        == "PCI config space write refused (kernel lockdown?): Operation not permitted")
    #expect(
      SysfsPCIConfigSpace.writeFailure(.permissionDenied, path: "/c").reason
        == "PCI config space write refused (not root, or kernel lockdown?): Permission denied")
    #expect(
      SysfsPCIConfigSpace.writeFailure(.ioError, path: "/c").reason
        == "/c: cannot write: Input/output error")
  }

  @Test("a second writer waits for the window lock, then gives up with a reason")
  func windowLock() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    try tree.write(configPath, pattern)
    let first = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    let second = try SysfsPCIConfigSpace(root: tree.root, pciAddress: "0000:00:01.0")
    try first.write(offset: 0x88, bytes: [4])
    #expect(
      reason { () throws(ProbeError) in try second.write(offset: 0x88, bytes: [0]) }
        == "\(first.path): PCI_CFG window busy (locked by another balloonctl)")
    #expect(try tree.contents(configPath)[0x88] == 4)
    first.close()
    try second.write(offset: 0x88, bytes: [0])
    #expect(try tree.contents(configPath)[0x88] == 0)
  }

  @Test("the probe over a real file writes only the window registers")
  func probeOverFile() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    var original = VirtioPCILayout.qemu(numPages: 1, actual: 1).config
    // A plain file has no window behind it: pci_cfg_data reads what is there.
    VirtioPCILayout.put32(&original, 0x94, 0x0001_4400)
    try tree.write(configPath, original)
    let snapshot = tree.root
    // The snapshot root is refused by the probe itself; here only the config
    // space factory points into the temporary tree.
    let probe = VirtioPCIWindowProbe(
      root: .live,
      openConfigSpace: { (address: String) throws(ProbeError) -> any PCIConfigSpace in
        try SysfsPCIConfigSpace(root: snapshot, pciAddress: address)
      },
      openLegacyIOBar: { (_: String) throws(ProbeError) -> any PCIIOBarReader in
        throw ProbeError("no legacy access in this test")
      })
    let config = try probe.readBalloonConfig(pciAddress: "0000:00:01.0")
    #expect(config == VirtioBalloonConfig(numPages: 0x14400, actual: 0x14400))
    let after = try tree.contents(configPath)
    #expect(after.count == 256)
    let changed = (0..<256).filter { after[$0] != original[$0] }
    #expect(changed == [0x88, 0x8c, 0x8d, 0x90])
    #expect(after[0x88] == 4)
    #expect(Array(after[0x8c..<0x94]) == [0x04, 0x20, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00])
  }

  @Test("legacy I/O BAR reads: exactly 1, 2 or 4 bytes, one pread")
  func ioBar() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    var bytes = [UInt8](repeating: 0, count: 32)
    VirtioPCILayout.put32(&bytes, 20, 82944)
    VirtioPCILayout.put32(&bytes, 24, 82940)
    try tree.write("/sys/bus/pci/devices/0000:00:04.0/resource0", bytes)
    let bar = try SysfsPCIIOBar(root: tree.root, pciAddress: "0000:00:04.0", bar: 0)
    #expect(try bar.read(offset: 20, count: 4) == VirtioPCIBytes.bytes(le32: 82944))
    #expect(try bar.read(offset: 24, count: 4) == VirtioPCIBytes.bytes(le32: 82940))
    #expect(try bar.read(offset: 18, count: 1) == [0])
    #expect(
      reason { () throws(ProbeError) in _ = try bar.read(offset: 20, count: 3) }?
        .hasSuffix("an I/O BAR read must be 1, 2 or 4 bytes at a port offset") == true)
    #expect(
      reason { () throws(ProbeError) in _ = try bar.read(offset: 30, count: 4) }?
        .hasSuffix("read at 0x1e returned 2 of 4 bytes") == true)

    let missing = try SysfsPCIIOBar(root: tree.root, pciAddress: "0000:00:05.0", bar: 0)
    #expect(
      reason { () throws(ProbeError) in _ = try missing.read(offset: 20, count: 4) }
        == "\(tree.base.string)/sys/bus/pci/devices/0000:00:05.0/resource0 is missing "
        + "(no sysfs access to the I/O BAR)")
  }
}
