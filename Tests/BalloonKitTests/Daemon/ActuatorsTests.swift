import BalloonKit
import SystemPackage
import Testing

@Suite("Actuators: the only writers, on fixture copies")
struct ActuatorsTests {
  let virtio = BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: "/sys/devices/pci0000:00/0000:00:01.0/virtio0",
    driver: "virtio_balloon")

  @Test("a missing lever file is an error naming it, and is never created")
  func missingAttribute() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    let actuators = Actuators(root: guest.root)
    #expect(!actuators.leverAvailable(for: virtio, held: false))
    do {
      try actuators.release(virtio)
      Issue.record("released without an unbind file")
    } catch {
      #expect(error.errno == .noSuchFileOrDirectory)
      #expect(
        error.description.contains(
          guest.root.path(Actuators.virtioDriverDirectory + "/unbind").string))
      #expect(!error.needsRestart)
    }
    #expect(!SystemFile.exists(guest.root.path(Actuators.virtioDriverDirectory + "/unbind")))
  }

  @Test("writes replace the attribute's content, as echo > attr does")
  func truncates() throws {
    let guest = try SimulatedGuest("virtio-6.18")
    try guest.tree.write(Actuators.virtioDriverDirectory + "/unbind", "something longer\n")
    try Actuators(root: guest.root).release(virtio)
    #expect(try guest.text(Actuators.virtioDriverDirectory + "/unbind") == "virtio0")
  }

  @Test("a read-only lever (EROFS) asks for a restart; other failures do not")
  func restartOnReadOnly() {
    #expect(ActuatorError("x", errno: .readOnlyFileSystem).needsRestart)
    #expect(!ActuatorError("x", errno: .permissionDenied).needsRestart)
    #expect(!ActuatorError("modprobe exited with 1").needsRestart)
  }

  @Test("VMware: modprobe's exit status decides; a built-in module has no lever")
  func vmware() throws {
    let guest = try SimulatedGuest("vmw-6.x")
    let device = BalloonDevice(
      kind: .vmware, name: "vmw_balloon", sysPath: "/sys/module/vmw_balloon", driver: "vmw_balloon")
    let runner = RecordingRunner()
    var actuators = Actuators(root: guest.root, runner: runner)
    // No initstate: built in, cannot be unloaded.
    guest.tree.remove("/sys/module/vmw_balloon/initstate")
    try guest.tree.write("/sbin/modprobe", "")
    #expect(!actuators.leverAvailable(for: device, held: false))
    try guest.tree.write("/sys/module/vmw_balloon/initstate", "live\n")
    #expect(actuators.leverAvailable(for: device, held: false))
    runner.status = 1
    #expect(throws: ActuatorError.self) { try actuators.release(device) }
    runner.status = 0
    actuators.vmwShrinker = true
    try actuators.readmit(device)
    #expect(runner.calls.last?.suffix(2) == ["vmw_balloon", "vmwballoon_shrinker_enable=1"])
  }

  @Test("SpawnRunner reports exit statuses and unrunnable programs")
  func spawn() throws {
    let runner = SpawnRunner()
    #expect(try runner.run(["/bin/true"]) == 0)
    #expect(try runner.run(["/bin/sh", "-c", "exit 3"]) == 3)
    #expect(throws: ActuatorError.self) { try runner.run(["/nonexistent/modprobe"]) }
  }

  @Test("Hyper-V and disabled kinds have no lever")
  func noLever() throws {
    let guest = try SimulatedGuest("hyperv")
    let hv = BalloonDevice(
      kind: .hyperv, name: "guid", sysPath: "/sys/bus/vmbus/devices/guid", driver: "hv_balloon")
    #expect(!Actuators(root: guest.root).leverAvailable(for: hv, held: false))
    let virtioGuest = try SimulatedGuest("virtio-6.18")
    try virtioGuest.addDriverControlFiles()
    #expect(Actuators(root: virtioGuest.root).leverAvailable(for: virtio, held: false))
    #expect(
      !Actuators(root: virtioGuest.root, enabledLevers: [.xen]).leverAvailable(
        for: virtio, held: false))
  }
}
