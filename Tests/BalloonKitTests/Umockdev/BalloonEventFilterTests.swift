import Testing

@testable import BalloonKit

/// Which uevents the monitor keeps, as a table; runs without umockdev. The
/// cases umockdev cannot produce are here: real kernel events carry MODALIAS
/// and DRIVER in the event, and a removed device has no sysfs attributes.
@Suite struct BalloonEventFilterTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var label: String
    var action: String
    var subsystem: String
    var name: String
    var driver: String?
    var modalias: String?
    var attributes: [String: String] = [:]
    var kept: Bool

    var testDescription: String { label }
  }

  static let cases: [Case] = [
    Case(
      label: "virtio balloon add, MODALIAS from the kernel", action: "add", subsystem: "virtio",
      name: "virtio0", modalias: "virtio:d00000005v00001AF4", kept: true),
    Case(
      label: "virtio-mmio balloon (other vendor)", action: "add", subsystem: "virtio",
      name: "virtio3", modalias: "virtio:d00000005v554D4551", kept: true),
    Case(
      label: "virtio balloon bind", action: "bind", subsystem: "virtio", name: "virtio0",
      driver: "virtio_balloon", modalias: "virtio:d00000005v00001AF4", kept: true),
    Case(
      label: "virtio balloon remove: device gone, MODALIAS only", action: "remove",
      subsystem: "virtio", name: "virtio0", modalias: "virtio:d00000005v00001AF4", kept: true),
    Case(
      label: "virtio balloon without MODALIAS: sysfs device", action: "change",
      subsystem: "virtio", name: "virtio0", attributes: ["device": "0x0005"], kept: true),
    Case(
      label: "virtio_blk", action: "add", subsystem: "virtio", name: "virtio1",
      driver: "virtio_blk", modalias: "virtio:d00000002v00001AF4", kept: false),
    Case(
      label: "MODALIAS wins over a stale sysfs attribute", action: "add", subsystem: "virtio",
      name: "virtio1", modalias: "virtio:d00000002v00001AF4", attributes: ["device": "0x0005"],
      kept: false),
    Case(
      label: "device id 0x0050 is not 0x0005", action: "add", subsystem: "virtio",
      name: "virtio7", modalias: "virtio:d00000050v00001AF4", kept: false),
    Case(
      label: "removed device without MODALIAS: unknown, dropped", action: "remove",
      subsystem: "virtio", name: "virtio0", kept: false),
    Case(
      label: "virtio balloon move", action: "move", subsystem: "virtio", name: "virtio0",
      modalias: "virtio:d00000005v00001AF4", kept: false),
    Case(
      label: "vmw_balloon module load", action: "add", subsystem: "module", name: "vmw_balloon",
      kept: true),
    Case(
      label: "virtio_balloon module unload", action: "remove", subsystem: "module",
      name: "virtio_balloon", kept: true),
    Case(label: "fuse module", action: "add", subsystem: "module", name: "fuse", kept: false),
    Case(
      label: "xen_memory0", action: "change", subsystem: "xen_memory", name: "xen_memory0",
      kept: true),
    Case(
      label: "Hyper-V Dynamic Memory bind", action: "bind", subsystem: "vmbus",
      name: "1eccfd72-4b41-45ef-b73a-4a6e44c12924", driver: "hv_balloon",
      modalias: "vmbus:dc7450528589e2468057a307dc18a502", kept: true),
    Case(
      label: "Hyper-V Dynamic Memory by class_id", action: "add", subsystem: "vmbus",
      name: "1eccfd72-4b41-45ef-b73a-4a6e44c12924",
      attributes: ["class_id": "{525074dc-8985-46e2-8057-a307dc18a502}"], kept: true),
    Case(
      label: "Hyper-V network device", action: "add", subsystem: "vmbus",
      name: "000d3a6e-4a2b-000d-3a6e-4a2b000d3a6e", driver: "hv_netvsc",
      modalias: "vmbus:635161f83edfc546913ff2d2f965ed0e", kept: false),
    Case(
      label: "PCI function of the balloon", action: "add", subsystem: "pci",
      name: "0000:00:01.0", driver: "virtio-pci",
      modalias: "pci:v00001AF4d00001045sv00001AF4sd00001045bcFFscFFi00", kept: false),
  ]

  @Test(arguments: cases)
  func filter(_ test: Case) {
    let event = BalloonEventMonitor.event(
      action: test.action, subsystem: test.subsystem, name: test.name, driver: test.driver,
      modalias: test.modalias, sysattr: { test.attributes[$0] })
    if test.kept {
      #expect(
        event
          == BalloonEvent(
            action: test.action, subsystem: test.subsystem, name: test.name, driver: test.driver))
    } else {
      #expect(event == nil)
    }
  }
}
