import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// libudev discovery and the uevent monitor against umockdev testbeds, in
/// this process. Needs the preload (`umockdev-wrapper swift test`); a testbed
/// is global to the process, so everything in here runs serially, one
/// testbed per test.
@Suite(
  .serialized,
  .enabled(if: Umockdev.preloaded, "needs umockdev-wrapper (LD_PRELOAD=libumockdev-preload)"))
struct UdevUmockdevTests {
  static let virtio0 = "/sys/devices/pci0000:00/0000:00:01.0/virtio0"
  static let virtio1 = "/sys/devices/pci0000:00/0000:00:02.0/virtio1"
  static let hyperVGUID = "1eccfd72-4b41-45ef-b73a-4a6e44c12924"
  static let hyperVPath =
    "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/1eccfd72-4b41-45ef-b73a-4a6e44c12924"

  static let boundBalloon = BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: virtio0, driver: "virtio_balloon",
    featureBits: [1, 2, 5, 7, 32], pciAddress: "0000:00:01.0")
  static let vmwBalloon = BalloonDevice(
    kind: .vmware, name: "vmw_balloon", sysPath: "/sys/module/vmw_balloon", driver: "vmw_balloon")
  static let xenBalloon = BalloonDevice(
    kind: .xen, name: "xen_memory0", sysPath: "/sys/devices/system/xen_memory/xen_memory0",
    driver: "xen-balloon")
  static let hyperVBalloon = BalloonDevice(
    kind: .hyperv, name: hyperVGUID, sysPath: hyperVPath, driver: "hv_balloon")

  // MARK: Discovery

  @Suite struct Discovery {
    @Test func virtioBalloonBound() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "virtio-balloon-bound.umockdev")
      let devices = try UdevDiscovery().discover()
      #expect(devices == [UdevUmockdevTests.boundBalloon])
      #expect(
        devices.first?.features == [
          "STATS_VQ", "DEFLATE_ON_OOM", "REPORTING", "bit7", "VERSION_1",
        ])
      #expect(devices.first?.deflateOnOOM == true)
    }

    @Test func virtioBalloonUnbound() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "virtio-balloon-unbound.umockdev")
      var expected = UdevUmockdevTests.boundBalloon
      expected.driver = nil
      let devices = try UdevDiscovery().discover()
      #expect(devices == [expected])
      #expect(devices.first?.bound == false)
    }

    @Test func virtioBlockDeviceIsNotABalloon() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "virtio-balloon-and-blk.umockdev")
      #expect(try UdevDiscovery().discover() == [UdevUmockdevTests.boundBalloon])
    }

    /// virtio over MMIO (Firecracker, QEMU microvm): no PCI function.
    @Test func virtioMMIOBalloon() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "virtio-mmio-balloon.umockdev")
      #expect(
        try UdevDiscovery().discover() == [
          BalloonDevice(
            kind: .virtio, name: "virtio0",
            sysPath: "/sys/devices/virtio-mmio-cmdline/virtio-mmio.0/virtio0",
            driver: "virtio_balloon", featureBits: [1, 2, 32], pciAddress: nil)
        ])
    }

    @Test func vmwBalloonModule() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "vmw-balloon-module.umockdev")
      #expect(try UdevDiscovery().discover() == [UdevUmockdevTests.vmwBalloon])
    }

    @Test func xenMemory() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "xen-memory.umockdev")
      #expect(try UdevDiscovery().discover() == [UdevUmockdevTests.xenBalloon])
    }

    @Test func hyperVDynamicMemory() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "hyperv-dynamic-memory.umockdev")
      #expect(try UdevDiscovery().discover() == [UdevUmockdevTests.hyperVBalloon])
    }

    @Test func noBalloon() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "none.umockdev")
      #expect(try UdevDiscovery().discover() == [])
    }

    @Test func emptySysfs() throws {
      let testbed = try Testbed()
      _ = testbed
      #expect(try UdevDiscovery().discover() == [])
    }

    @Test func everyKindSortedByKindThenName() throws {
      let testbed = try Testbed()
      // Added in reverse order of the expected result.
      for fixture in [
        "hyperv-dynamic-memory.umockdev", "xen-memory.umockdev", "vmw-balloon-module.umockdev",
        "virtio-balloon-and-blk.umockdev",
      ] {
        try testbed.add(fixture: fixture)
      }
      try testbed.add(
        """
        P: /devices/virtio-mmio-cmdline/virtio-mmio.0/virtio10
        E: MODALIAS=virtio:d00000005v554D4551
        E: SUBSYSTEM=virtio
        A: device=0x0005\\n
        A: features=0100000000000000000000000000000010000000000000000000000000000000\\n
        A: vendor=0x554d4551\\n
        """)
      let mmio = BalloonDevice(
        kind: .virtio, name: "virtio10",
        sysPath: "/sys/devices/virtio-mmio-cmdline/virtio-mmio.0/virtio10",
        driver: nil, featureBits: [1, 32], pciAddress: nil)
      #expect(
        try UdevDiscovery().discover() == [
          UdevUmockdevTests.boundBalloon, mmio, UdevUmockdevTests.vmwBalloon,
          UdevUmockdevTests.xenBalloon, UdevUmockdevTests.hyperVBalloon,
        ])
    }

    @Test func malformedFeaturesThrowNamingTheFile() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "virtio-balloon-bound.umockdev")
      testbed.setAttribute(UdevUmockdevTests.virtio0, "features", "01x0\n")
      #expect(
        throws: SourceError.malformed(
          UdevUmockdevTests.virtio0 + "/features", "\"01x0\" is not a string of 0 and 1")
      ) { try UdevDiscovery().discover() }
    }

    /// The wrappers themselves: lookups, properties, sysattrs, parents.
    @Test func udevWrappers() throws {
      let testbed = try Testbed()
      try testbed.add(fixture: "virtio-balloon-and-blk.umockdev")
      let udev = try Udev()
      let enumerator = try udev.enumerator()
      try enumerator.match(subsystem: "virtio")
      #expect(
        try enumerator.scan().sorted() == [UdevUmockdevTests.virtio0, UdevUmockdevTests.virtio1])

      let device = try #require(try udev.device(syspath: UdevUmockdevTests.virtio0))
      #expect(device.sysname == "virtio0")
      #expect(device.devpath == "/devices/pci0000:00/0000:00:01.0/virtio0")
      #expect(device.subsystem == "virtio")
      #expect(device.driver == "virtio_balloon")
      #expect(device.action == nil)
      #expect(device.property("MODALIAS") == "virtio:d00000005v00001AF4")
      #expect(device.sysattr("device") == "0x0005")
      #expect(device.sysattr("no_such_attribute") == nil)
      let parent = try #require(device.parent)
      #expect(parent.subsystem == "pci")
      #expect(parent.sysname == "0000:00:01.0")
      #expect(parent.driver == "virtio-pci")

      #expect(try udev.device(syspath: "/sys/devices/pci0000:00/0000:00:09.0/virtio9") == nil)
      #expect(try udev.device(subsystem: "virtio", sysname: "virtio1")?.driver == "virtio_blk")
      #expect(try udev.device(subsystem: "module", sysname: "vmw_balloon") == nil)
      #expect(try udev.device(subsystem: "xen_memory", sysname: "xen_memory0") == nil)
    }
  }

  // MARK: Monitor

  @Suite struct Monitor {
    @Test func sourceFollowsUdevd() throws {
      let testbed = try Testbed()
      _ = testbed
      let udevd = SystemFile.exists(FilePath("/run/udev/control"))
      #expect(try BalloonEventMonitor().source == (udevd ? .udev : .kernel))
    }

    @Test(arguments: [UdevMonitor.Source.kernel, .udev])
    func virtioBalloonAddBindUnbindRemove(source: UdevMonitor.Source) throws {
      let testbed = try Testbed()
      let monitor = try BalloonEventMonitor(source: source)
      #expect(testbed.hasEventSocket)
      let path = UdevUmockdevTests.virtio0

      try testbed.add(fixture: "virtio-balloon-unbound.umockdev")
      #expect(
        monitor.collect(count: 1) == [event("add", "virtio", "virtio0", nil)])

      try testbed.bindDriver(path, to: "../../../../bus/virtio/drivers/virtio_balloon")
      testbed.uevent(path, "bind")
      #expect(monitor.collect(count: 1) == [event("bind", "virtio", "virtio0", "virtio_balloon")])

      try testbed.unbindDriver(path)
      testbed.uevent(path, "unbind")
      #expect(monitor.collect(count: 1) == [event("unbind", "virtio", "virtio0", nil)])

      // Read after the device is gone: only the event's MODALIAS identifies it.
      testbed.uevent(path, "remove")
      testbed.removeDevice(path)
      #expect(monitor.collect(count: 1) == [event("remove", "virtio", "virtio0", nil)])
      #expect(monitor.collect(count: 1, milliseconds: 100) == [])
    }

    @Test func changeEvent() throws {
      let testbed = try Testbed()
      let monitor = try BalloonEventMonitor()
      try testbed.add(fixture: "virtio-balloon-bound.umockdev")
      #expect(
        monitor.collect(count: 1) == [event("add", "virtio", "virtio0", "virtio_balloon")])
      testbed.setAttribute(UdevUmockdevTests.virtio0, "status", "0x0000004f\n")
      testbed.uevent(UdevUmockdevTests.virtio0, "change")
      #expect(
        monitor.collect(count: 1) == [event("change", "virtio", "virtio0", "virtio_balloon")])
      #expect(try UdevDiscovery().discover() == [UdevUmockdevTests.boundBalloon])
    }

    @Test func unrelatedDevicesAreFilteredOut() throws {
      let testbed = try Testbed()
      let monitor = try BalloonEventMonitor()
      // virtio_blk, virtio_net and their PCI functions: nothing.
      try testbed.add(fixture: "none.umockdev")
      testbed.uevent(UdevUmockdevTests.virtio1, "change")
      #expect(monitor.collect(count: 1, milliseconds: 200) == [])
      // The balloon's add gets through; its PCI parent's does not.
      try testbed.add(fixture: "virtio-balloon-bound.umockdev")
      #expect(
        monitor.collect(count: 2, milliseconds: 300) == [
          event("add", "virtio", "virtio0", "virtio_balloon")
        ])
      // An action balloonctl does not care about.
      testbed.uevent(UdevUmockdevTests.virtio0, "offline")
      #expect(monitor.collect(count: 1, milliseconds: 200) == [])
    }

    @Test func vmwBalloonModuleLoadAndUnload() throws {
      let testbed = try Testbed()
      let monitor = try BalloonEventMonitor()
      try testbed.add(fixture: "vmw-balloon-module.umockdev")
      try testbed.add("P: /module/fuse\nA: parameters/max_user_bgreq=1647\\n\n")
      testbed.uevent("/sys/module/fuse", "add")
      testbed.uevent("/sys/module/vmw_balloon", "add")
      #expect(
        monitor.collect(count: 2, milliseconds: 300) == [
          event("add", "module", "vmw_balloon", nil)
        ])
      testbed.uevent("/sys/module/vmw_balloon", "remove")
      #expect(monitor.collect(count: 1) == [event("remove", "module", "vmw_balloon", nil)])
    }

    @Test func xenAndHyperV() throws {
      let testbed = try Testbed()
      let monitor = try BalloonEventMonitor()
      try testbed.add(fixture: "xen-memory.umockdev")
      #expect(monitor.collect(count: 1) == [event("add", "xen_memory", "xen_memory0", nil)])
      // The Dynamic Memory device, not the network device or the ACPI parent.
      try testbed.add(fixture: "hyperv-dynamic-memory.umockdev")
      #expect(
        monitor.collect(count: 3, milliseconds: 300) == [
          event("add", "vmbus", UdevUmockdevTests.hyperVGUID, "hv_balloon")
        ])
      // The kernel unbinds before it removes; the remove event is read after
      // the device is gone, so only the event's MODALIAS identifies it.
      let path = UdevUmockdevTests.hyperVPath
      try testbed.unbindDriver(path)
      testbed.uevent(path, "unbind")
      testbed.uevent(path, "remove")
      testbed.removeDevice(path)
      #expect(
        monitor.collect(count: 2) == [
          event("unbind", "vmbus", UdevUmockdevTests.hyperVGUID, nil),
          event("remove", "vmbus", UdevUmockdevTests.hyperVGUID, nil),
        ])
    }

    func event(_ action: String, _ subsystem: String, _ name: String, _ driver: String?)
      -> BalloonEvent
    {
      BalloonEvent(action: action, subsystem: subsystem, name: name, driver: driver)
    }
  }
}

extension BalloonEventMonitor {
  /// Polls (at most `milliseconds`) until `count` balloon events arrived, and
  /// returns what did.
  func collect(count: Int, milliseconds: Int = 500) -> [BalloonEvent] {
    var events: [BalloonEvent] = []
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: .milliseconds(milliseconds))
    while events.count < count {
      let left = clock.now.duration(to: deadline)
      guard left > .zero else { break }
      let (seconds, attoseconds) = left.components
      let timeout = Int32(seconds * 1000 + attoseconds / 1_000_000_000_000_000) + 1
      var descriptor = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
      if poll(&descriptor, 1, timeout) > 0 { events += drain() }
    }
    return events
  }
}
