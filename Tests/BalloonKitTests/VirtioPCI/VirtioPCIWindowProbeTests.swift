import SystemPackage
import Testing

@testable import BalloonKit

private typealias Device = SimulatedVirtioPCIDevice
private typealias Layout = VirtioPCILayout

/// A probe whose every access goes to `device` (and `legacy`): nothing here
/// opens a file. `Root.live` only satisfies the live-root check.
private func probe(
  _ device: Device, legacy: SimulatedLegacyIOBar? = nil,
  configCalls: VirtioPCICallCounter = VirtioPCICallCounter(),
  legacyCalls: VirtioPCICallCounter = VirtioPCICallCounter()
) -> VirtioPCIWindowProbe {
  VirtioPCIWindowProbe(
    root: .live,
    openConfigSpace: { (address: String) throws(ProbeError) -> any PCIConfigSpace in
      configCalls.record(address)
      return device
    },
    openLegacyIOBar: { (address: String) throws(ProbeError) -> any PCIIOBarReader in
      legacyCalls.record(address)
      guard let legacy else {
        throw ProbeError("/sys/bus/pci/devices/\(address)/resource0 is missing")
      }
      return legacy
    })
}

private func probeError(_ probe: VirtioPCIWindowProbe, _ address: String = "0000:00:03.0")
  -> String?
{
  do {
    _ = try probe.readBalloonConfig(pciAddress: address)
    return nil
  } catch {
    return error.reason
  }
}

/// The exact writes of one window read: bar (u8 at cap+4), offset (le32 at
/// cap+8), length 4 (le32 at cap+12).
private func windowWrites(cap: Int, bar: UInt8, offset: UInt32) -> [Device.Write] {
  [
    .init(offset: cap + 4, bytes: [bar]),
    .init(offset: cap + 8, bytes: VirtioPCIBytes.bytes(le32: offset)),
    .init(offset: cap + 12, bytes: [4, 0, 0, 0]),
  ]
}

/// Reads that touch `pci_cfg_data` (cap+16..+19), i.e. make the device read a BAR.
private func dataReads(_ device: Device, cap: Int) -> [Device.Access] {
  device.reads.filter { $0.offset < cap + 20 && $0.offset + $0.count > cap + 16 }
}

@Suite("VirtioPCI window probe")
struct VirtioPCIWindowProbeTests {
  @Test(
    "QEMU's layout: num_pages and actual through the PCI_CFG window",
    arguments: [false, true])
  func qemu(transitional: Bool) throws {
    let device = Device(Layout.qemu(numPages: 82944, actual: 20480, transitional: transitional))
    let legacyCalls = VirtioPCICallCounter()
    let config = try probe(device, legacyCalls: legacyCalls).readBalloonConfig(
      pciAddress: "0000:00:03.0")
    #expect(config == VirtioBalloonConfig(numPages: 82944, actual: 20480))
    #expect(config.targetBytes == 82944 * 4096)
    #expect(
      device.writes
        == windowWrites(cap: 0x84, bar: 4, offset: 0x2000)
        + windowWrites(cap: 0x84, bar: 4, offset: 0x2004))
    #expect(
      device.barReads == [
        .init(bar: 4, offset: 0x2000, count: 4), .init(bar: 4, offset: 0x2004, count: 4),
      ])
    #expect(device.barWrites.isEmpty)
    #expect(legacyCalls.calls == 0)
  }

  @Test("the dev machine's layout: DEVICE at BAR0+0x4000, PCI_CFG at 0x84, MSI-X at 0x98")
  func devMachine() throws {
    let device = Device(Layout.devMachine(numPages: 786432, actual: 786000))
    let config = try probe(device).readBalloonConfig(pciAddress: "0000:00:01.0")
    #expect(config == VirtioBalloonConfig(numPages: 786432, actual: 786000))
    #expect(
      device.writes
        == windowWrites(cap: 0x84, bar: 0, offset: 0x4000)
        + windowWrites(cap: 0x84, bar: 0, offset: 0x4004))
    #expect(
      device.barReads == [
        .init(bar: 0, offset: 0x4000, count: 4), .init(bar: 0, offset: 0x4004, count: 4),
      ])
  }

  @Test("only the window registers cap+4 and cap+8..15 change; nothing else is written")
  func onlyWindowRegistersWritten() throws {
    let cases: [(Layout, bar: UInt8, actualOffset: UInt32)] = [
      (Layout.qemu(numPages: 7, actual: 6), 4, 0x2004),
      (Layout.devMachine(numPages: 7, actual: 6), 0, 0x4004),
    ]
    for (layout, bar, actualOffset) in cases {
      let device = Device(layout)
      _ = try probe(device).readBalloonConfig(pciAddress: "0000:00:01.0")
      for write in device.writes {
        let range = write.offset..<(write.offset + write.bytes.count)
        #expect(range.lowerBound >= 0x84 + 4 && range.upperBound <= 0x84 + 16, "\(write)")
        #expect(!range.overlaps(0x89..<0x8c), "id or padding written: \(write)")
      }
      // Byte for byte, the config differs from the original only in the
      // window registers (pci_cfg_data aside: reads refill it), which are left
      // pointing at `actual`.
      let after = device.config
      let changed = (0..<256).filter {
        after[$0] != layout.config[$0] && !(0x94..<0x98).contains($0)
      }
      #expect(changed.allSatisfy { $0 == 0x88 || (0x8c..<0x94).contains($0) }, "\(changed)")
      #expect(after[0x88] == bar)
      #expect(VirtioPCIBytes.le32(after, at: 0x8c) == actualOffset)
      #expect(VirtioPCIBytes.le32(after, at: 0x90) == 4)
    }
  }

  @Test("the walk never reads pci_cfg_data; each data read follows its window writes")
  func readPattern() throws {
    let device = Device(Layout.qemu(numPages: 1, actual: 2))
    _ = try probe(device).readBalloonConfig(pciAddress: "0000:00:03.0")
    #expect(
      dataReads(device, cap: 0x84) == [
        .init(offset: 0x94, count: 4), .init(offset: 0x94, count: 4),
      ])
    #expect(
      device.reads
        == [
          .init(offset: 0x00, count: 64),
          .init(offset: 0x84, count: 16), .init(offset: 0x70, count: 16),
          .init(offset: 0x60, count: 16), .init(offset: 0x50, count: 16),
          .init(offset: 0x40, count: 16),
          .init(offset: 0x88, count: 12), .init(offset: 0x94, count: 4),
          .init(offset: 0x88, count: 12), .init(offset: 0x94, count: 4),
        ])
  }

  @Test("a later read of the same function checks it in 4 reads and skips the header and the walk")
  func layoutKept() throws {
    let device = Device(Layout.qemu(numPages: 1, actual: 2))
    let probe = probe(device)
    _ = try probe.readBalloonConfig(pciAddress: "0000:00:03.0")
    device.update { state in
      state.reads = []
      state.attemptedWrites = []
      // The host asks for more: the next read must see it.
      Layout.put32(&state.bars[4]!, 0x2000, 300)
      Layout.put32(&state.bars[4]!, 0x2004, 200)
    }
    let config = try probe.readBalloonConfig(pciAddress: "0000:00:03.0")
    #expect(config == VirtioBalloonConfig(numPages: 300, actual: 200))
    #expect(
      device.reads
        == [
          .init(offset: 0x00, count: 4), .init(offset: 0x2c, count: 4),
          .init(offset: 0x60, count: 16), .init(offset: 0x84, count: 4),
          .init(offset: 0x88, count: 12), .init(offset: 0x94, count: 4),
          .init(offset: 0x88, count: 12), .init(offset: 0x94, count: 4),
        ])
    #expect(
      device.writes
        == windowWrites(cap: 0x84, bar: 4, offset: 0x2000)
        + windowWrites(cap: 0x84, bar: 4, offset: 0x2004))
  }

  /// The first read learns QEMU's layout; then the function at the address
  /// changes, and the second read must walk again and read the new one.
  @Test(
    "another function at the same address is walked again",
    arguments: ["device ID", "device config moved", "capabilities moved", "window shorter"])
  func layoutChanged(_ change: String) throws {
    let device = Device(Layout.qemu(numPages: 1, actual: 2))
    let probe = probe(device)
    _ = try probe.readBalloonConfig(pciAddress: "0000:00:03.0")
    var next = Layout.devMachine(numPages: 700, actual: 600)
    switch change {
    case "device ID":
      // Same layout as QEMU's, but a transitional 1af4:1002: IDs differ.
      next = Layout.qemu(numPages: 700, actual: 600, transitional: true)
    case "device config moved":
      // QEMU's layout, its device config at BAR4 + 0x2800 instead of + 0x2000.
      next = Layout.qemu(numPages: 0, actual: 0)
      Layout.put32(&next.config, 0x60 + 8, 0x2800)
      Layout.put32(&next.bars[4]!, 0x2800, 700)
      Layout.put32(&next.bars[4]!, 0x2804, 600)
    case "capabilities moved":
      break  // the dev machine's: same IDs, its list from 0x40, device config at BAR0 + 0x4000
    default:
      // QEMU's layout with a PCI_CFG capability that is not 20 bytes any more.
      next = Layout.qemu(numPages: 700, actual: 600)
      next.config[0x84 + 2] = 16
    }
    device.update { state in
      state.config = next.config
      state.bars = next.bars
      state.windowCap = next.windowCap
      state.reads = []
    }
    if change == "window shorter" {
      #expect(
        probeError(probe)
          == "virtio PCI_CFG capability at 0x84 is 16 bytes, needs 20 (with pci_cfg_data)")
    } else {
      let config = try probe.readBalloonConfig(pciAddress: "0000:00:03.0")
      #expect(config == VirtioBalloonConfig(numPages: 700, actual: 600))
      #expect(device.reads.contains(.init(offset: 0x00, count: 64)), "walked again")
    }
  }

  @Test("a kept layout whose window stops keeping its registers is forgotten, and the error named")
  func layoutWindowDropsWrites() throws {
    let device = Device(Layout.qemu(numPages: 1, actual: 2))
    let probe = probe(device)
    _ = try probe.readBalloonConfig(pciAddress: "0000:00:03.0")
    device.update { $0.dropsWrites = true }
    #expect(probeError(probe)?.hasPrefix("PCI_CFG window at 0x84 did not keep bar 4") == true)
    device.update {
      $0.dropsWrites = false
      $0.reads = []
    }
    // Walked again once the window works.
    _ = try probe.readBalloonConfig(pciAddress: "0000:00:03.0")
    #expect(device.reads.first == .init(offset: 0x00, count: 64))
  }

  @Test("a window left pointing elsewhere (the ISR) is never read through before it is set")
  func staleWindowNotRead() throws {
    let device = Device(Layout.qemu(numPages: 3, actual: 3))
    device.update { state in
      state.config[0x88] = 4
      Layout.put32(&state.config, 0x8c, 0x1000)  // the ISR: read-to-clear
      Layout.put32(&state.config, 0x90, 1)
    }
    _ = try probe(device).readBalloonConfig(pciAddress: "0000:00:03.0")
    #expect(!device.barReads.contains { $0.offset == 0x1000 })
  }

  @Test("values are little-endian u32s, all 32 bits")
  func fullWidth() throws {
    let device = Device(Layout.devMachine(numPages: 0xfedc_ba98, actual: 0x0102_0304))
    let config = try probe(device).readBalloonConfig(pciAddress: "0000:00:01.0")
    #expect(config.numPages == 0xfedc_ba98)
    #expect(config.actual == 0x0102_0304)
  }

  @Test("the factory gets the address in the kernel's lowercase spelling")
  func normalizedAddress() throws {
    let calls = VirtioPCICallCounter()
    let device = Device(Layout.qemu(numPages: 5, actual: 5))
    _ = try probe(device, configCalls: calls).readBalloonConfig(pciAddress: "0000:00:0A.0")
    #expect(calls.seen == ["0000:00:0a.0"])
  }

  @Test("an invalid address is refused before anything is opened")
  func invalidAddress() {
    let calls = VirtioPCICallCounter()
    let device = Device(Layout.qemu(numPages: 5, actual: 5))
    let probe = probe(device, configCalls: calls)
    #expect(
      probeError(probe, "../../../../etc/passwd")
        == "invalid PCI address \"../../../../etc/passwd\" (expected dddd:bb:dd.f)")
    #expect(
      probeError(probe, "0000:00:01.0/../../x")
        == "invalid PCI address \"0000:00:01.0/../../x\" (expected dddd:bb:dd.f)")
    #expect(calls.calls == 0)
    #expect(device.reads.isEmpty && device.writes.isEmpty)
  }

  @Test("a snapshot root is refused before anything is opened")
  func snapshotRefused() throws {
    let tree = try VirtioPCITempRoot()
    defer { tree.remove() }
    let config = Layout.qemu(numPages: 9, actual: 9).config
    try tree.write("/sys/bus/pci/devices/0000:00:03.0/config", config)
    let reason = "the PCI config window needs a live device, not a snapshot"

    #expect(probeError(VirtioPCIWindowProbe(root: tree.root)) == reason)
    #expect(probeError(VirtioPCIWindowProbe(root: .snapshot("/nonexistent"))) == reason)
    // The snapshot's file is untouched.
    #expect(try tree.contents("/sys/bus/pci/devices/0000:00:03.0/config") == config)

    let calls = VirtioPCICallCounter()
    let legacyCalls = VirtioPCICallCounter()
    let device = Device(Layout.qemu(numPages: 9, actual: 9))
    let refusing = VirtioPCIWindowProbe(
      root: tree.root,
      openConfigSpace: { (address: String) throws(ProbeError) -> any PCIConfigSpace in
        calls.record(address)
        return device
      },
      openLegacyIOBar: { (address: String) throws(ProbeError) -> any PCIIOBarReader in
        legacyCalls.record(address)
        throw ProbeError("unreachable")
      })
    #expect(probeError(refusing) == reason)
    #expect(calls.calls == 0 && legacyCalls.calls == 0)
  }

  @Test("64 bytes of config space (not root): no writes")
  func nonRoot() {
    let device = Device(Layout.qemu(numPages: 1, actual: 1))
    device.update { $0.readableSize = 64 }
    #expect(probeError(probe(device)) == "config space is 64 bytes (needs root)")
    #expect(device.writes.isEmpty)
  }

  @Test(
    "functions that are not a virtio balloon",
    arguments: [
      (
        UInt16(0x8086), UInt16(0x1237), UInt16(0),
        "not a virtio balloon PCI function (vendor 0x8086 device 0x1237)"
      ),
      (0x1af4, 0x1041, 0x1100, "not a virtio balloon PCI function (vendor 0x1af4 device 0x1041)"),
      (0x1af4, 0x1000, 0x0001, "not a virtio balloon PCI function (vendor 0x1af4 device 0x1000)"),
      (
        0x1af4, 0x1002, 0x0001,
        "not a virtio balloon PCI function (vendor 0x1af4 device 0x1002 subsystem device 0x0001)"
      ),
      (
        0xffff, 0xffff, 0xffff,
        "PCI function 0000:00:03.0 does not respond (config space reads all ones)"
      ),
    ])
  func notABalloon(vendor: UInt16, device id: UInt16, subsystem: UInt16, reason: String) {
    var layout = Layout.qemu(numPages: 1, actual: 1)
    Layout.put16(&layout.config, 0x00, vendor)
    Layout.put16(&layout.config, 0x02, id)
    Layout.put16(&layout.config, 0x2e, subsystem)
    let device = Device(layout)
    #expect(probeError(probe(device)) == reason)
    #expect(device.writes.isEmpty)
  }

  @Test("missing capabilities: no writes")
  func missingCaps() {
    var layout = Layout.qemu(numPages: 1, actual: 1)
    layout.config[0x34] = 0x70  // unlink PCI_CFG (0x84)
    var device = Device(layout)
    #expect(probeError(probe(device)) == "no virtio PCI_CFG capability")
    #expect(device.writes.isEmpty)

    layout = Layout.qemu(numPages: 1, actual: 1)
    layout.config[0x71] = 0x50  // unlink the device config (0x60)
    device = Device(layout)
    #expect(probeError(probe(device)) == "no virtio device-config capability")
    #expect(device.writes.isEmpty)

    layout = Layout.qemu(numPages: 1, actual: 1)
    layout.config[0x64] = 6  // a reserved BAR index: ignored
    device = Device(layout)
    #expect(probeError(probe(device)) == "no virtio device-config capability")

    layout = Layout.qemu(numPages: 1, actual: 1)
    layout.config[0x06] = 0  // no capability list at all (modern-only 0x1045)
    device = Device(layout)
    #expect(
      probeError(probe(device)) == "no virtio capabilities (not a modern virtio PCI function)")
    #expect(device.writes.isEmpty)
  }

  @Test("the first capability of each type wins")
  func firstOfType() throws {
    var layout = Layout.qemu(numPages: 11, actual: 12)
    // A second device-config capability (at the ISR's place, further down
    // the list) pointing at the sentinel: never used.
    Layout.putVirtioCap(
      &layout.config, at: 0x50, next: 0x40, cfgType: 4, bar: 4, offset: 0x1ffc, length: 8)
    let device = Device(layout)
    #expect(
      try probe(device).readBalloonConfig(pciAddress: "0000:00:03.0")
        == .init(numPages: 11, actual: 12))
  }

  @Test("malformed capabilities: short device config, short PCI_CFG, corrupt list")
  func malformed() {
    var layout = Layout.qemu(numPages: 1, actual: 1)
    Layout.put32(&layout.config, 0x6c, 4)
    var device = Device(layout)
    #expect(
      probeError(probe(device))
        == "virtio device-config capability at 0x60 is 4 bytes, too short for num_pages and actual")
    #expect(device.writes.isEmpty)

    layout = Layout.qemu(numPages: 1, actual: 1)
    Layout.put32(&layout.config, 0x68, 0xffff_fffc)
    device = Device(layout)
    #expect(
      probeError(probe(device))
        == "virtio device-config capability at 0x60 has offset 0xfffffffc at the end of the address space"
    )
    #expect(device.writes.isEmpty)

    layout = Layout.qemu(numPages: 1, actual: 1)
    layout.config[0x86] = 16
    device = Device(layout)
    #expect(
      probeError(probe(device))
        == "virtio PCI_CFG capability at 0x84 is 16 bytes, needs 20 (with pci_cfg_data)")
    #expect(device.writes.isEmpty)

    layout = Layout.qemu(numPages: 1, actual: 1)
    layout.config[0x41] = 0x84
    device = Device(layout)
    #expect(probeError(probe(device)) == "capability list loops back to 0x84")
    #expect(device.writes.isEmpty)
  }

  @Test("a window that drops writes is detected by the read-back, before any data read")
  func droppedWrites() {
    let device = Device(Layout.qemu(numPages: 1, actual: 1))
    device.update { $0.dropsWrites = true }
    #expect(
      probeError(probe(device))
        == "PCI_CFG window at 0x84 did not keep bar 4 offset 0x2000 length 4 "
        + "(reads back 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00)")
    #expect(dataReads(device, cap: 0x84).isEmpty)
    #expect(device.barReads.isEmpty)
  }

  @Test("lockdown on a modern-only device: the write error, one line")
  func lockdownModern() {
    let device = Device(Layout.devMachine(numPages: 1, actual: 1))
    let lockdown = SysfsPCIConfigSpace.writeFailure(.notPermitted, path: "/x")
    device.update { $0.writeError = lockdown }
    #expect(
      probeError(probe(device))
        == "PCI config space write refused (kernel lockdown?): Operation not permitted")
    #expect(device.writes == [.init(offset: 0x88, bytes: [0])])
    #expect(device.barReads.isEmpty)
  }

  @Test("lockdown on a transitional device: falls back to reading legacy I/O BAR0")
  func lockdownTransitional() throws {
    let device = Device(Layout.qemu(numPages: 1, actual: 1, transitional: true))
    device.update { $0.writeError = SysfsPCIConfigSpace.writeFailure(.notPermitted, path: "/x") }
    let legacy = SimulatedLegacyIOBar(numPages: 57344, actual: 57000, msixEnabled: false)
    let config = try probe(device, legacy: legacy).readBalloonConfig(pciAddress: "0000:00:03.0")
    #expect(config == VirtioBalloonConfig(numPages: 57344, actual: 57000))
    #expect(legacy.reads == [.init(offset: 20, count: 4), .init(offset: 24, count: 4)])
    #expect(device.barReads.isEmpty)
  }

  @Test(
    "legacy-only transitional device: I/O BAR0 at 20, or 24 with MSI-X enabled; no writes",
    arguments: [(Bool?.none, 20), (false, 20), (true, 24)])
  func legacy(msix: Bool?, base: Int) throws {
    let device = Device(Layout.legacyOnly(msixEnabled: msix))
    let legacy = SimulatedLegacyIOBar(numPages: 82944, actual: 82940, msixEnabled: msix == true)
    let calls = VirtioPCICallCounter()
    let config = try probe(device, legacy: legacy, legacyCalls: calls).readBalloonConfig(
      pciAddress: "0000:00:04.0")
    #expect(config == VirtioBalloonConfig(numPages: 82944, actual: 82940))
    #expect(legacy.reads == [.init(offset: base, count: 4), .init(offset: base + 4, count: 4)])
    #expect(calls.seen == ["0000:00:04.0"])
    #expect(device.writes.isEmpty)
  }

  @Test("legacy fallback failures name both routes")
  func legacyFailures() {
    var device = Device(Layout.legacyOnly(msixEnabled: false))
    #expect(
      probeError(probe(device), "0000:00:04.0")
        == "no virtio capabilities (not a modern virtio PCI function); "
        + "legacy I/O BAR0: /sys/bus/pci/devices/0000:00:04.0/resource0 is missing")

    var layout = Layout.legacyOnly(msixEnabled: false)
    Layout.put32(&layout.config, 0x10, 0xfe00_0000)  // a memory BAR0
    device = Device(layout)
    let calls = VirtioPCICallCounter()
    let legacy = SimulatedLegacyIOBar(numPages: 1, actual: 1, msixEnabled: false)
    #expect(
      probeError(probe(device, legacy: legacy, legacyCalls: calls))
        == "no virtio capabilities (not a modern virtio PCI function); legacy I/O BAR0: BAR0 is not an I/O BAR"
    )
    #expect(calls.calls == 0)
  }

  @Test("a modern-only device never falls back to legacy")
  func modernNoFallback() {
    var layout = Layout.devMachine(numPages: 1, actual: 1)
    layout.config[0x06] = 0
    let device = Device(layout)
    let calls = VirtioPCICallCounter()
    let legacy = SimulatedLegacyIOBar(numPages: 1, actual: 1, msixEnabled: false)
    #expect(
      probeError(probe(device, legacy: legacy, legacyCalls: calls))
        == "no virtio capabilities (not a modern virtio PCI function)")
    #expect(calls.calls == 0)
  }
}
