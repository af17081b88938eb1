import BalloonKit
import SystemPackage
import Testing

struct DiscoveryCase: Sendable, CustomTestStringConvertible {
  var tree: String
  var devices: [BalloonDevice]
  var testDescription: String { tree }
}

private func virtio(_ bdf: String, bits: [Int], driver: String? = "virtio_balloon") -> BalloonDevice
{
  BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: "/sys/devices/pci0000:00/\(bdf)/virtio0",
    driver: driver, featureBits: bits, pciAddress: bdf)
}

private let vmw = BalloonDevice(
  kind: .vmware, name: "vmw_balloon", sysPath: "/sys/module/vmw_balloon", driver: "vmw_balloon")
private let xen = BalloonDevice(
  kind: .xen, name: "xen_memory0", sysPath: "/sys/devices/system/xen_memory/xen_memory0",
  driver: "xen-balloon")
private let hyperVGUID = "1eccfd72-4b41-45ef-b73a-4a6e44c12924"
private let hyperV = BalloonDevice(
  kind: .hyperv, name: hyperVGUID,
  sysPath: "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/\(hyperVGUID)",
  driver: "hv_balloon")

@Suite("SysfsDiscovery on the fixture trees")
struct SysfsDiscoveryTests {
  static let cases: [DiscoveryCase] = [
    .init(tree: "virtio-6.18", devices: [virtio("0000:00:01.0", bits: [1, 2, 5, 7, 32])]),
    .init(tree: "virtio-6.1", devices: [virtio("0000:00:04.0", bits: [1, 29, 32, 40])]),
    .init(tree: "virtio-unbound", devices: [virtio("0000:00:01.0", bits: [], driver: nil)]),
    .init(tree: "hugetlb-multi", devices: [virtio("0000:00:04.0", bits: [1, 2, 29, 32, 40])]),
    .init(tree: "pre-4.16", devices: [virtio("0000:00:06.0", bits: [1, 29, 32])]),
    .init(tree: "none", devices: []),
    .init(tree: "vmw-4.19", devices: [vmw]),
    .init(tree: "vmw-6.x", devices: [vmw]),
    .init(tree: "vmw-no-debugfs", devices: [vmw]),
    .init(tree: "kb-example", devices: [vmw]),
    .init(tree: "xen", devices: [xen]),
    .init(tree: "hyperv", devices: [hyperV]),
    .init(tree: "hyperv-committed", devices: [hyperV]),
  ]

  @Test("every tree has a case") func coverage() {
    #expect(Set(Self.cases.map(\.tree)) == Set(Fixtures.allTrees))
  }

  @Test("kinds, names, paths, drivers, features, PCI address", arguments: cases)
  func discover(_ c: DiscoveryCase) throws {
    #expect(try SysfsDiscovery(root: Fixtures.root(c.tree)).discover() == c.devices)
  }

  @Test("decoded features and DEFLATE_ON_OOM") func features() throws {
    let found = try SysfsDiscovery(root: Fixtures.root("virtio-6.18")).discover()
    let device = try #require(found.first)
    #expect(device.features == ["STATS_VQ", "DEFLATE_ON_OOM", "REPORTING", "bit7", "VERSION_1"])
    #expect(device.deflateOnOOM)
    #expect(!device.removesFromMemTotal)
    #expect(device.bound)

    let old = try #require(try SysfsDiscovery(root: Fixtures.root("virtio-6.1")).discover().first)
    #expect(old.features == ["STATS_VQ", "RING_EVENT_IDX", "VERSION_1", "RING_RESET"])
    #expect(old.removesFromMemTotal)

    let unbound = try #require(
      try SysfsDiscovery(root: Fixtures.root("virtio-unbound")).discover().first)
    #expect(!unbound.bound)
    #expect(unbound.features.isEmpty)
  }

  @Test("sysPath is a kernel path, never below the root", arguments: Fixtures.allTrees)
  func kernelPaths(tree: String) throws {
    let root = Fixtures.root(tree)
    for device in try SysfsDiscovery(root: root).discover() {
      #expect(device.sysPath.hasPrefix("/sys/"))
      #expect(!device.sysPath.contains(".."))
      #expect(!device.sysPath.contains(root.base.string))
      #expect(SystemFile.exists(root.path(device.sysPath)))
    }
  }

  // MARK: Hand-built trees

  /// A virtio device at `/sys/devices/<parent>/<name>` with its bus link.
  func addVirtio(
    _ tree: TemporaryTree, name: String, parent: String, device: String = "0x0005",
    features: String? = "0110010100000000000000000000000010000000000000000000000000000000",
    driver: String? = "virtio_balloon"
  ) throws {
    let dir = "/sys/devices/\(parent)/\(name)"
    let up = String(repeating: "../", count: dir.split(separator: "/").count - 1)
    try tree.write(dir + "/device", device + "\n")
    if let features { try tree.write(dir + "/features", features + "\n") }
    if let driver { try tree.symlink(dir + "/driver", to: up + "bus/virtio/drivers/\(driver)") }
    try tree.symlink(dir + "/subsystem", to: up + "bus/virtio")
    try tree.symlink(
      "/sys/bus/virtio/devices/\(name)", to: "../../.." + dir.dropFirst("/sys".count))
  }

  @Test("virtio-mmio: no PCI address") func mmio() throws {
    let tree = try TemporaryTree()
    try tree.write("/sys/devices/platform/virtio-mmio.0/driver_override", "(null)\n")
    try tree.symlink("/sys/devices/platform/virtio-mmio.0/subsystem", to: "../../../bus/platform")
    try addVirtio(tree, name: "virtio0", parent: "platform/virtio-mmio.0")
    let found = try SysfsDiscovery(root: tree.root).discover()
    #expect(
      found == [
        BalloonDevice(
          kind: .virtio, name: "virtio0", sysPath: "/sys/devices/platform/virtio-mmio.0/virtio0",
          driver: "virtio_balloon", featureBits: [1, 2, 5, 7, 32], pciAddress: nil)
      ])
  }

  @Test("a PCI parent needs its subsystem link to end in /bus/pci") func parentWithoutSubsystem()
    throws
  {
    let tree = try TemporaryTree()
    try tree.write("/sys/devices/pci0000:00/0000:00:07.0/vendor", "0x1af4\n")
    try addVirtio(tree, name: "virtio3", parent: "pci0000:00/0000:00:07.0")
    #expect(try SysfsDiscovery(root: tree.root).discover().first?.pciAddress == nil)
    try tree.symlink("/sys/devices/pci0000:00/0000:00:07.0/subsystem", to: "../../../bus/pci")
    #expect(try SysfsDiscovery(root: tree.root).discover().first?.pciAddress == "0000:00:07.0")
  }

  @Test("every kind at once: sorted by kind, then name (plain string order)") func order() throws {
    let tree = try TemporaryTree()
    try addVirtio(tree, name: "virtio2", parent: "pci0000:00/0000:00:02.0")
    try addVirtio(tree, name: "virtio10", parent: "pci0000:00/0000:00:0a.0")
    try addVirtio(tree, name: "virtio1", parent: "pci0000:00/0000:00:01.0", device: "0x0002")
    try tree.write("/sys/module/vmw_balloon/initstate", "live\n")
    try tree.write("/sys/devices/system/xen_memory/xen_memory0/target_kb", "0\n")
    for (guid, classID) in [
      ("b0000000-0000-0000-0000-000000000002", "{525074dc-8985-46e2-8057-a307dc18a502}"),
      ("a0000000-0000-0000-0000-000000000001", "{525074dc-8985-46e2-8057-a307dc18a502}"),
      ("c0000000-0000-0000-0000-000000000003", "{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}"),
    ] {
      let dir = "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/" + guid
      try tree.write(dir + "/class_id", classID + "\n")
      try tree.symlink(
        "/sys/bus/vmbus/devices/" + guid, to: "../../.." + dir.dropFirst("/sys".count))
    }
    let found = try SysfsDiscovery(root: tree.root).discover()
    #expect(found.map(\.kind) == [.virtio, .virtio, .vmware, .xen, .hyperv, .hyperv])
    #expect(
      found.map(\.name) == [
        "virtio10", "virtio2", "vmw_balloon", "xen_memory0",
        "a0000000-0000-0000-0000-000000000001", "b0000000-0000-0000-0000-000000000002",
      ])
    #expect(found.last?.driver == nil)  // no driver link: unbound
  }

  @Test(
    "a malformed attribute is an error naming the file",
    arguments: [
      ("device", "0x00zz", "is not a 0x hex number"), ("device", "5", "is not a 0x hex number"),
      ("features", "01102", "is not a string of 0 and 1"),
      ("device", "0x0005\u{0}", "NUL byte"),
    ])
  func malformed(attribute: String, value: String, says: String) throws {
    let tree = try TemporaryTree()
    try addVirtio(tree, name: "virtio0", parent: "pci0000:00/0000:00:01.0")
    let path = "/sys/devices/pci0000:00/0000:00:01.0/virtio0/" + attribute
    try tree.write(path, value + "\n")
    let error = try #require(
      sourceError { () throws(SourceError) in _ = try SysfsDiscovery(root: tree.root).discover() })
    #expect(error.path == tree.path(path))
    #expect(error.description.contains(says), "\(error)")
  }

  @Test("no features file: no bits") func noFeatures() throws {
    let tree = try TemporaryTree()
    try addVirtio(tree, name: "virtio0", parent: "pci0000:00/0000:00:01.0", features: nil)
    #expect(try SysfsDiscovery(root: tree.root).discover().first?.featureBits == [])
  }

  @Test("an empty tree has no balloon") func empty() throws {
    let tree = try TemporaryTree()
    #expect(try SysfsDiscovery(root: tree.root).discover() == [])
  }
}
