import BalloonKit
import CUMockdev
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Whether this process runs under umockdev's preload (`umockdev-wrapper`).
/// Without it a testbed exists but nothing is redirected into it.
enum Umockdev {
  static var preloaded: Bool {
    guard let value = getenv("LD_PRELOAD") else { return false }
    return String(cString: value).contains("libumockdev-preload")
  }

  /// `BALLOONCTL_REQUIRE_UMOCKDEV=1` (set by `make test`): the umockdev
  /// suites must run, so a missing preload is a failure, not a skip.
  static var required: Bool {
    guard let value = getenv("BALLOONCTL_REQUIRE_UMOCKDEV") else { return false }
    return String(cString: value) == "1"
  }

  /// `Tests/BalloonKitTests/Fixtures/umockdev`, found from this source file
  /// (the test target excludes `Fixtures`, so they are not resources).
  static let fixtures = FilePath(#filePath).removingLastComponent().removingLastComponent()
    .appending("Fixtures").appending("umockdev")

  /// Every fixture, by file name.
  static let allFixtures = [
    "virtio-balloon-bound.umockdev",
    "virtio-balloon-unbound.umockdev",
    "virtio-balloon-and-blk.umockdev",
    "virtio-mmio-balloon.umockdev",
    "vmw-balloon-module.umockdev",
    "xen-memory.umockdev",
    "hyperv-dynamic-memory.umockdev",
    "none.umockdev",
  ]
}

struct TestbedError: Error, CustomStringConvertible {
  var description: String
}

/// A umockdev testbed: a fake `/sys` in a temporary directory that every
/// libc call of this process sees instead of the real one, plus uevents
/// delivered to this process's libudev monitors. Wraps the CUMockdev C API.
///
/// A testbed is global to the process (umockdev sets `UMOCKDEV_DIR`): use one
/// per test, in a `.serialized` suite. `deinit` removes the directory.
///
/// umockdev quirks handled here:
/// * `add_from_string` accepts only `/devices/...` records. Records for other
///   sysfs directories (`P: /module/vmw_balloon`) are written by hand: the
///   directory, `A:`/`H:` files and `L:` links; their `E:` lines are not
///   written (libudev derives the subsystem `module` from the devpath).
/// * umockdev puts a subsystem it does not know as a bus under
///   `/sys/class`. `xen_memory` is a bus (`subsys_system_register`), so its
///   devices are moved to `/sys/bus/xen_memory/devices` like the kernel has
///   them.
final class Testbed {
  private let testbed: UnsafeMutablePointer<UMockdevTestbed>
  /// The directory that plays `/` (`/tmp/umockdev.XXXXXX`).
  let rootDir: String

  init() throws {
    guard let testbed = umockdev_testbed_new() else {
      throw TestbedError(description: "umockdev_testbed_new failed")
    }
    self.testbed = testbed
    guard let root = umockdev_testbed_get_root_dir(testbed) else {
      g_object_unref(UnsafeMutableRawPointer(testbed))
      throw TestbedError(description: "umockdev_testbed_get_root_dir failed")
    }
    rootDir = String(cString: root)
    g_free(root)
  }

  deinit { g_object_unref(UnsafeMutableRawPointer(testbed)) }

  /// Adds the devices of a fixture in `Fixtures/umockdev`. Under the preload,
  /// umockdev sends an `add` uevent for each `/devices/` record.
  func add(fixture name: String) throws {
    let path = Umockdev.fixtures.appending(name)
    guard let bytes = try SystemFile.read(path) else {
      throw TestbedError(description: "\(path): no such fixture")
    }
    try add(String(decoding: bytes, as: UTF8.self))
  }

  /// Adds devices from text in the umockdev-record format.
  func add(_ text: String) throws {
    var devices: [String] = []
    for record in Self.records(text) {
      guard let first = record.first, first.hasPrefix("P: ") else {
        throw TestbedError(description: "record does not start with P: \(record)")
      }
      let devpath = String(first.dropFirst(3))
      if devpath.hasPrefix("/devices/") {
        devices.append(record.joined(separator: "\n"))
      } else {
        try materialize(devpath: devpath, lines: record.dropFirst())
      }
    }
    guard !devices.isEmpty else { return }
    var error: UnsafeMutablePointer<GError>?
    let added = umockdev_testbed_add_from_string(
      testbed, devices.joined(separator: "\n\n") + "\n", &error)
    if let error {
      let message = error.pointee.message.map { String(cString: $0) } ?? "unknown error"
      g_error_free(error)
      throw TestbedError(description: "umockdev_testbed_add_from_string: \(message)")
    }
    guard added != 0 else { throw TestbedError(description: "umockdev_testbed_add_from_string") }
    for record in Self.records(text) {
      let devpath = String(record[0].dropFirst(3))
      let subsystem = record.first { $0.hasPrefix("E: SUBSYSTEM=") }?.dropFirst(13)
      if let subsystem, Self.buses.contains(String(subsystem)) {
        try moveClassToBus(devpath: devpath, subsystem: String(subsystem))
      }
    }
  }

  /// Writes a sysfs attribute file (the device must exist).
  func setAttribute(_ syspath: String, _ name: String, _ value: String) {
    umockdev_testbed_set_attribute(testbed, syspath, name, value)
  }

  /// Creates the symbolic link `name` in the device directory (e.g. `driver`).
  func setLink(_ syspath: String, _ name: String, to target: String) {
    umockdev_testbed_set_attribute_link(testbed, syspath, name, target)
  }

  /// Removes the symbolic link or file `name` from the device directory (as
  /// the kernel removes `driver` on unbind).
  func removeEntry(_ syspath: String, _ name: String) throws {
    let path = real(syspath) + "/" + name
    guard unlink(path) == 0 else {
      throw TestbedError(description: "unlink \(path): \(Errno(rawValue: errno))")
    }
  }

  /// What the kernel does to sysfs when a driver binds: a `driver` link to
  /// `target` (relative to the device directory), and `DRIVER=<basename>`
  /// first in the `uevent` file.
  func bindDriver(_ syspath: String, to target: String) throws {
    setLink(syspath, "driver", to: target)
    let name = target.split(separator: "/").last.map(String.init) ?? target
    setAttribute(syspath, "uevent", "DRIVER=\(name)\n" + (try ueventLines(syspath)).joined())
  }

  /// What the kernel does to sysfs when a driver unbinds: the `driver` link
  /// goes, and so does `DRIVER=` from the `uevent` file (which umockdev also
  /// sends as the event's properties).
  func unbindDriver(_ syspath: String) throws {
    try removeEntry(syspath, "driver")
    setAttribute(syspath, "uevent", try ueventLines(syspath).joined())
  }

  /// The `uevent` file's lines (with their newlines), without `DRIVER=`.
  private func ueventLines(_ syspath: String) throws -> [String] {
    let text = String(
      decoding: try SystemFile.read(FilePath(real(syspath) + "/uevent")) ?? [], as: UTF8.self)
    return text.split(separator: "\n").filter { !$0.hasPrefix("DRIVER=") }.map { $0 + "\n" }
  }

  /// Sends a uevent for the device at `syspath` (`/sys/...`) to every bound
  /// monitor socket of this process.
  func uevent(_ syspath: String, _ action: String) {
    umockdev_testbed_uevent(testbed, syspath, action)
  }

  /// Removes a device directory. Send `remove` first: the sender needs the
  /// device to exist.
  func removeDevice(_ syspath: String) {
    umockdev_testbed_remove_device(testbed, syspath)
  }

  /// Whether a monitor socket exists (umockdev turns each uevent netlink
  /// socket into `$UMOCKDEV_DIR/event<fd>`); events reach only bound sockets.
  var hasEventSocket: Bool {
    guard let names = try? SystemFile.list(FilePath(rootDir)) else { return false }
    return names.contains { $0.hasPrefix("event") }
  }

  // MARK: Helpers

  /// Subsystems that are buses in the kernel but that umockdev files under
  /// `/sys/class`.
  static let buses: Set<String> = ["xen_memory"]

  /// `/sys/...` inside the testbed directory.
  private func real(_ sysPath: String) -> String { rootDir + sysPath }

  /// Records (paragraphs) as lists of lines.
  static func records(_ text: String) -> [[String]] {
    var records: [[String]] = []
    var current: [String] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
      if line.isEmpty {
        if !current.isEmpty { records.append(current) }
        current = []
      } else {
        current.append(String(line))
      }
    }
    if !current.isEmpty { records.append(current) }
    return records
  }

  /// Creates a non-device sysfs directory (`/module/...`) by hand.
  private func materialize(devpath: String, lines: ArraySlice<String>) throws {
    let directory = real("/sys" + devpath)
    try makeDirectories(directory)
    for line in lines {
      let type = line.prefix(3)
      let body = line.dropFirst(3)
      guard let equals = body.firstIndex(of: "=") else {
        throw TestbedError(description: "malformed line in \(devpath): \(line)")
      }
      let key = String(body[..<equals])
      let value = String(body[body.index(after: equals)...])
      let path = directory + "/" + key
      switch type {
      case "A: ":
        try write(path, Array(Self.unescape(value).utf8))
      case "H: ":
        try write(path, Self.hex(value))
      case "L: ":
        try makeDirectories(String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]))
        guard symlink(value, path) == 0 else {
          throw TestbedError(description: "symlink \(path): \(Errno(rawValue: errno))")
        }
      case "E: ":
        continue
      default:
        throw TestbedError(description: "unknown line type in \(devpath): \(line)")
      }
    }
  }

  /// Moves `/sys/class/<subsystem>/<name>` to `/sys/bus/<subsystem>/devices`
  /// and points the device's `subsystem` link there.
  private func moveClassToBus(devpath: String, subsystem: String) throws {
    let name = String(
      devpath[devpath.index(after: devpath.lastIndex(of: "/") ?? devpath.startIndex)...])
    let classLink = real("/sys/class/\(subsystem)/\(name)")
    guard SystemFile.readLink(FilePath(classLink)) != nil else { return }
    let depth = devpath.split(separator: "/").count
    let up = String(repeating: "../", count: depth)
    try makeDirectories(real("/sys/bus/\(subsystem)/devices"))
    guard unlink(classLink) == 0,
      symlink("../../.." + devpath, real("/sys/bus/\(subsystem)/devices/\(name)")) == 0,
      unlink(real("/sys\(devpath)/subsystem")) == 0,
      symlink(up + "bus/\(subsystem)", real("/sys\(devpath)/subsystem")) == 0
    else { throw TestbedError(description: "moving \(devpath) to bus \(subsystem): \(errno)") }
    _ = rmdir(real("/sys/class/\(subsystem)"))
  }

  private func makeDirectories(_ path: String) throws {
    var prefix = ""
    for component in path.split(separator: "/") {
      prefix += "/" + component
      if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
        throw TestbedError(description: "mkdir \(prefix): \(Errno(rawValue: errno))")
      }
    }
  }

  private func write(_ path: String, _ bytes: [UInt8]) throws {
    try makeDirectories(String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]))
    do {
      let fd = try FileDescriptor.open(
        FilePath(path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
      try fd.closeAfter { _ = try fd.writeAll(bytes) }
    } catch {
      throw TestbedError(description: "write \(path): \(error)")
    }
  }

  /// The `A:` escapes umockdev-record writes (`\n`, `\t`, `\\`).
  static func unescape(_ text: String) -> String {
    var result = ""
    var escaped = false
    for character in text {
      if escaped {
        switch character {
        case "n": result.append("\n")
        case "t": result.append("\t")
        default: result.append(character)
        }
        escaped = false
      } else if character == "\\" {
        escaped = true
      } else {
        result.append(character)
      }
    }
    return result
  }

  static func hex(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var high: UInt8?
    for character in text.utf8 {
      guard let nibble = UInt8(String(UnicodeScalar(character)), radix: 16) else { continue }
      if let value = high {
        bytes.append(value << 4 | nibble)
        high = nil
      } else {
        high = nibble
      }
    }
    return bytes
  }
}
