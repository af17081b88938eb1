import Testing

@testable import BalloonKit

private typealias Layout = VirtioPCILayout

private func cap(
  _ position: Int, type: UInt8, bar: UInt8 = 4, offset: UInt32 = 0, length: UInt32 = 0,
  capLength: Int = 16
) -> VirtioPCICapability {
  VirtioPCICapability(
    cfgType: type, bar: bar, id: 0, offset: offset, length: length, position: position,
    capLength: capLength)
}

private func parseError(_ config: [UInt8]) -> String? {
  do {
    _ = try VirtioPCICapabilities.parse(config: config)
    return nil
  } catch {
    return error.reason
  }
}

@Suite("VirtioPCI capability walk")
struct VirtioPCICapabilitiesTests {
  @Test("QEMU's list, in list order")
  func qemuLayout() throws {
    let caps = try VirtioPCICapabilities.parse(config: Layout.qemu(numPages: 1, actual: 1).config)
    #expect(
      caps == [
        cap(0x84, type: 5, bar: 0, capLength: 20),
        cap(0x70, type: 2, offset: 0x3000, length: 0x1000, capLength: 20),
        cap(0x60, type: 4, offset: 0x2000, length: 0x1000),
        cap(0x50, type: 3, offset: 0x1000, length: 0x1000),
        cap(0x40, type: 1, offset: 0x0000, length: 0x1000),
      ])
  }

  @Test("the dev machine's list: MSI-X walked but not a virtio capability")
  func devMachineLayout() throws {
    let config = Layout.devMachine(numPages: 1, actual: 1).config
    let caps = try VirtioPCICapabilities.parse(config: config)
    #expect(
      caps == [
        cap(0x40, type: 1, bar: 0, offset: 0x0000, length: 0x38),
        cap(0x50, type: 3, bar: 0, offset: 0x2000, length: 0x4),
        cap(0x60, type: 4, bar: 0, offset: 0x4000, length: 0x1000),
        cap(0x70, type: 2, bar: 0, offset: 0x6000, length: 0x1000, capLength: 20),
        cap(0x84, type: 5, bar: 0, capLength: 20),
      ])
    let entries = try VirtioPCICapabilities.walk(config: config)
    #expect(entries.map(\.position) == [0x40, 0x50, 0x60, 0x70, 0x84, 0x98])
    #expect(entries.map(\.id) == [9, 9, 9, 9, 9, 0x11])
    #expect(VirtioPCICapabilities.msixEnabled(entries) == true)
    let disabled = try VirtioPCICapabilities.walk(
      config: Layout.devMachine(numPages: 1, actual: 1, msixEnabled: false).config)
    #expect(VirtioPCICapabilities.msixEnabled(disabled) == false)
    #expect(VirtioPCICapabilities.msixEnabled(Array(entries.prefix(5))) == nil)
  }

  @Test("no capability list: status bit 4 clear, or a null pointer")
  func noList() throws {
    var config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x06] &= ~0x10  // pointer 0x84 is still there, but means nothing
    #expect(try VirtioPCICapabilities.parse(config: config).isEmpty)
    config[0x06] |= 0x10
    config[0x34] = 0
    #expect(try VirtioPCICapabilities.parse(config: config).isEmpty)
  }

  @Test("a list that loops throws, whatever the cycle length")
  func loops() {
    var config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x41] = 0x84  // common → back to the head
    #expect(parseError(config) == "capability list loops back to 0x84")
    config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x85] = 0x84  // points at itself
    #expect(parseError(config) == "capability list loops back to 0x84")
    config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x51] = 0x60  // ISR → device → ISR
    #expect(parseError(config) == "capability list loops back to 0x60")
  }

  @Test("pointers into the header throw")
  func intoHeader() {
    var config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x34] = 0x20
    #expect(parseError(config) == "capability pointer 0x20 points into the 64-byte header")
    config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x51] = 0x3c  // a cap_next into the header
    #expect(parseError(config) == "capability pointer 0x3c points into the 64-byte header")
  }

  @Test("the low two bits of every pointer are ignored, as the kernel does")
  func pointerLowBits() throws {
    var config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x34] = 0x87
    config[0x85] = 0x73
    let caps = try VirtioPCICapabilities.parse(config: config)
    #expect(caps.map(\.position) == [0x84, 0x70, 0x60, 0x50, 0x40])
  }

  @Test("truncated to the 64 bytes a non-root reader gets")
  func nonRootTruncation() {
    let config = Layout.qemu(numPages: 1, actual: 1).config
    #expect(parseError(Array(config.prefix(64))) == "config space is 64 bytes (needs root)")
  }

  @Test("shorter than the header")
  func shortHeader() {
    #expect(
      parseError(Array(Layout.qemu(numPages: 1, actual: 1).config.prefix(10)))
        == "config space is 10 bytes, shorter than the 64-byte header")
    #expect(parseError([]) == "config space is 0 bytes, shorter than the 64-byte header")
  }

  @Test("a virtio capability cut off by the end of the bytes")
  func cutOff() {
    let config = Layout.qemu(numPages: 1, actual: 1).config
    #expect(
      parseError(Array(config.prefix(0x88)))
        == "virtio capability at 0x84 is cut off by the end of config space (4 of 16 bytes)")
    #expect(
      parseError(Array(config.prefix(0x86)))
        == "virtio capability at 0x84 is cut off by the end of config space (2 of 16 bytes)")
    #expect(
      parseError(Array(config.prefix(0x80)))
        == "capability at 0x84 is beyond the end of config space")
  }

  @Test("a virtio capability that would run past 256 bytes")
  func pastStandardSpace() {
    var config = Layout.qemu(numPages: 1, actual: 1).config + [UInt8](repeating: 0, count: 256)
    Layout.putVirtioCap(&config, at: 0xf8, next: 0, cfgType: 4, bar: 4, offset: 0x2000, length: 8)
    config[0x41] = 0xf8
    #expect(
      parseError(config)
        == "virtio capability at 0xf8 is cut off by the end of config space (8 of 16 bytes)")
  }

  @Test("vendor capabilities with cap_len < 16 are skipped, and the walk goes on")
  func shortVendorCapSkipped() throws {
    var config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x72] = 8  // notify claims 8 bytes: not a virtio_pci_cap
    let caps = try VirtioPCICapabilities.parse(config: config)
    #expect(caps.map(\.position) == [0x84, 0x60, 0x50, 0x40])
  }

  @Test("an all-ones capability ID ends the walk")
  func allOnesEnds() throws {
    var config = Layout.qemu(numPages: 1, actual: 1).config
    config[0x50] = 0xff
    #expect(try VirtioPCICapabilities.parse(config: config).map(\.position) == [0x84, 0x70, 0x60])
  }

  @Test("the longest possible list (48 capabilities) is walked")
  func longestList() throws {
    var config = Layout.header(
      device: 0x1045, subsystemDevice: 0, capabilityPointer: 0x40, bars: [:])
    for position in stride(from: 0x40, through: 0xfc, by: 4) {
      config[position] = 0x0d  // any non-vendor ID: 4 bytes each
      config[position + 1] = position == 0xfc ? 0 : UInt8(position + 4)
    }
    let entries = try VirtioPCICapabilities.walk(config: config)
    #expect(entries.count == 48)
    #expect(entries.last?.position == 0xfc)
    #expect(try VirtioPCICapabilities.parse(config: config).isEmpty)
  }

  @Test("random config spaces never trap")
  func fuzz() {
    var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
    func next() -> UInt64 {
      seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return seed >> 33
    }
    let base = Layout.devMachine(numPages: 1, actual: 1).config
    var outcomes = (parsed: 0, threw: 0)
    for round in 0..<3000 {
      var config = base
      // Corrupt a few bytes of the capability area, sometimes the pointer.
      for _ in 0..<(1 + Int(next() % 6)) {
        let at = round % 5 == 0 ? 0x34 : 0x40 + Int(next() % 0xc0)
        config[at] = UInt8(truncatingIfNeeded: next())
      }
      if round % 7 == 0 { config[0x06] ^= 0x10 }
      let length = round % 3 == 0 ? Int(next() % 257) : 256
      do {
        let caps = try VirtioPCICapabilities.parse(config: Array(config.prefix(length)))
        #expect(caps.count <= VirtioPCICapabilities.maxCapabilities)
        #expect(caps.allSatisfy { $0.position >= 0x40 && $0.position + 16 <= 0x100 })
        outcomes.parsed += 1
      } catch {
        #expect(!error.reason.isEmpty)
        outcomes.threw += 1
      }
    }
    #expect(outcomes.parsed > 100)
    #expect(outcomes.threw > 100)
  }
}
