import CUdev
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

// Thin typed wrappers over libudev, in the style of swift-system: one call
// site per C function, a final class per libudev object that owns its
// reference and drops it in `deinit`, and typed errors instead of NULL and
// negative errno. Children (enumerators, devices, monitors) keep their `Udev`
// alive. None of these objects is thread-safe (neither is libudev): use each
// from one task at a time.
//
// libudev works without udevd: it then reads `/sys` directly (MODALIAS and
// DRIVER come from each device's `uevent` file), which is what balloonctl
// relies on in an initramfs or a container.

/// The libudev context (`struct udev`).
public final class Udev {
  let pointer: OpaquePointer

  /// The corresponding C function is `udev_new`.
  public init() throws(SourceError) {
    errno = 0
    guard let pointer = udev_new() else { throw Udev.failure(errno, "udev_new") }
    self.pointer = pointer
  }

  deinit { udev_unref(pointer) }

  /// An enumerator over the devices in `/sys`.
  public func enumerator() throws(SourceError) -> UdevEnumerator {
    try UdevEnumerator(udev: self)
  }

  /// The device at `syspath` (`/sys/devices/...`), or nil when there is no
  /// such device (any more).
  ///
  /// The corresponding C function is `udev_device_new_from_syspath`.
  public func device(syspath: String) throws(SourceError) -> UdevDevice? {
    errno = 0
    let result = udev_device_new_from_syspath(pointer, syspath)
    let error = errno
    guard let result else {
      if Udev.isAbsent(error) { return nil }
      throw Udev.failure(error, "udev_device_new_from_syspath(\(syspath))")
    }
    return try UdevDevice(udev: self, owning: result)
  }

  /// The device called `sysname` in `subsystem`, or nil when there is none.
  /// The subsystem `module` maps to `/sys/module/<sysname>`.
  ///
  /// The corresponding C function is `udev_device_new_from_subsystem_sysname`.
  public func device(subsystem: String, sysname: String) throws(SourceError) -> UdevDevice? {
    errno = 0
    let result = udev_device_new_from_subsystem_sysname(pointer, subsystem, sysname)
    let error = errno
    guard let result else {
      if Udev.isAbsent(error) { return nil }
      throw Udev.failure(error, "udev_device_new_from_subsystem_sysname(\(subsystem), \(sysname))")
    }
    return try UdevDevice(udev: self, owning: result)
  }

  /// A netlink event monitor; call `filter(subsystem:)` and then
  /// `enableReceiving()`.
  public func monitor(source: UdevMonitor.Source) throws(SourceError) -> UdevMonitor {
    try UdevMonitor(udev: self, source: source)
  }

  // MARK: Errors

  /// libudev's "no such device": the device does not exist or went away.
  static func isAbsent(_ code: Int32) -> Bool {
    code == ENOENT || code == ENODEV || code == ENOTDIR || code == ENXIO
  }

  /// A failed call that returned NULL; `code` is errno (0: not set).
  static func failure(_ code: Int32, _ function: String) -> SourceError {
    guard code > 0 else { return nullResult(function) }
    return SourceError(path: "libudev", .unreadable(Errno(rawValue: code)))
  }

  /// A negative-errno return code.
  static func check(_ rc: Int32, _ function: String) throws(SourceError) {
    guard rc < 0 else { return }
    guard rc != Int32.min else { throw nullResult(function) }  // -rc would overflow
    throw SourceError(path: "libudev", .unreadable(Errno(rawValue: -rc)))
  }

  /// NULL without an errno.
  static func nullResult(_ function: String) -> SourceError {
    SourceError(path: "libudev", .malformed(line: nil, "\(function) failed"))
  }
}

/// A device enumeration (`struct udev_enumerate`). Add matches, then `scan()`.
public final class UdevEnumerator {
  public let udev: Udev
  let pointer: OpaquePointer

  /// The corresponding C function is `udev_enumerate_new`.
  init(udev: Udev) throws(SourceError) {
    errno = 0
    guard let pointer = udev_enumerate_new(udev.pointer) else {
      throw Udev.failure(errno, "udev_enumerate_new")
    }
    self.udev = udev
    self.pointer = pointer
  }

  deinit { udev_enumerate_unref(pointer) }

  /// Only devices of `subsystem`.
  ///
  /// The corresponding C function is `udev_enumerate_add_match_subsystem`.
  public func match(subsystem: String) throws(SourceError) {
    try Udev.check(
      udev_enumerate_add_match_subsystem(pointer, subsystem), "udev_enumerate_add_match_subsystem")
  }

  /// Only devices whose sysfs attribute `name` equals `value` (a glob; the
  /// trailing newline of the file is ignored), or exists when `value` is nil.
  ///
  /// The corresponding C function is `udev_enumerate_add_match_sysattr`.
  public func match(sysattr name: String, value: String?) throws(SourceError) {
    try Udev.check(
      udev_enumerate_add_match_sysattr(pointer, name, value), "udev_enumerate_add_match_sysattr")
  }

  /// Scans `/sys` and returns the syspaths of the matching devices.
  ///
  /// The corresponding C functions are `udev_enumerate_scan_devices`,
  /// `udev_enumerate_get_list_entry`, `udev_list_entry_get_name` and
  /// `udev_list_entry_get_next`.
  public func scan() throws(SourceError) -> [String] {
    try Udev.check(udev_enumerate_scan_devices(pointer), "udev_enumerate_scan_devices")
    var syspaths: [String] = []
    var entry = udev_enumerate_get_list_entry(pointer)
    while let current = entry {
      if let name = udev_list_entry_get_name(current) { syspaths.append(String(cString: name)) }
      entry = udev_list_entry_get_next(current)
    }
    return syspaths
  }

  /// Scans and opens every matching device. A device that disappears
  /// between the scan and the open is skipped.
  public func devices() throws(SourceError) -> [UdevDevice] {
    var devices: [UdevDevice] = []
    for syspath in try scan() {
      if let device = try udev.device(syspath: syspath) { devices.append(device) }
    }
    return devices
  }
}

/// A device (`struct udev_device`), from a lookup, an enumeration or a
/// monitor. For a monitored device, `action` is set and the properties are
/// those of the event; sysattrs are read from `/sys` on demand (a removed
/// device has none).
public final class UdevDevice {
  public let udev: Udev
  let pointer: OpaquePointer

  /// `/sys/devices/pci0000:00/0000:00:01.0/virtio0`
  public let syspath: String
  /// `virtio0`
  public let sysname: String
  /// The syspath without `/sys`: `/devices/pci0000:00/0000:00:01.0/virtio0`.
  public let devpath: String

  /// Takes over one reference to `pointer`.
  init(udev: Udev, owning pointer: OpaquePointer) throws(SourceError) {
    self.udev = udev
    self.pointer = pointer
    // Read the identity once; libudev always has it for a device it returned,
    // but a NULL must not trap.
    guard let syspath = udev_device_get_syspath(pointer),
      let sysname = udev_device_get_sysname(pointer),
      let devpath = udev_device_get_devpath(pointer)
    else {
      UdevDevice.release(pointer)
      throw Udev.nullResult("udev_device_get_syspath")
    }
    self.syspath = String(cString: syspath)
    self.sysname = String(cString: sysname)
    self.devpath = String(cString: devpath)
  }

  deinit { UdevDevice.release(pointer) }

  /// The corresponding C function is `udev_device_unref`.
  private static func release(_ pointer: OpaquePointer) { udev_device_unref(pointer) }

  /// `virtio`, `pci`, `module`, …; nil when the device has none.
  ///
  /// The corresponding C function is `udev_device_get_subsystem`.
  public var subsystem: String? { udev_device_get_subsystem(pointer).map { String(cString: $0) } }

  /// The bound driver (the basename of the `driver` link, or an event's
  /// `DRIVER`); nil when unbound.
  ///
  /// The corresponding C function is `udev_device_get_driver`.
  public var driver: String? { udev_device_get_driver(pointer).map { String(cString: $0) } }

  /// The event's action (`add`, `remove`, `bind`, `unbind`, `change`, …);
  /// nil for a device that did not come from a monitor.
  ///
  /// The corresponding C function is `udev_device_get_action`.
  public var action: String? { udev_device_get_action(pointer).map { String(cString: $0) } }

  /// A uevent/udev property such as `MODALIAS`, or nil.
  ///
  /// The corresponding C function is `udev_device_get_property_value`.
  public func property(_ key: String) -> String? {
    udev_device_get_property_value(pointer, key).map { String(cString: $0) }
  }

  /// A sysfs attribute (`device`, `features`, `class_id`), without its
  /// trailing newline; nil when absent or unreadable.
  ///
  /// The corresponding C function is `udev_device_get_sysattr_value`.
  public func sysattr(_ name: String) -> String? {
    udev_device_get_sysattr_value(pointer, name).map { String(cString: $0) }
  }

  /// The parent device (the PCI function of a virtio device), or nil at the
  /// top of the tree.
  ///
  /// The corresponding C functions are `udev_device_get_parent` (which
  /// returns a reference owned by the child) and `udev_device_ref`.
  public var parent: UdevDevice? {
    guard let borrowed = udev_device_get_parent(pointer),
      let owned = udev_device_ref(borrowed)
    else { return nil }
    return try? UdevDevice(udev: udev, owning: owned)
  }
}

/// A uevent monitor (`struct udev_monitor`) on a netlink socket.
public final class UdevMonitor {
  /// Which netlink group to listen to.
  public enum Source: String, Sendable {
    /// Events after udevd processed them (needs a running udevd).
    case udev
    /// Raw kernel events (works without udevd, e.g. in an initramfs).
    case kernel
  }

  public let udev: Udev
  public let source: Source
  let pointer: OpaquePointer

  /// The corresponding C function is `udev_monitor_new_from_netlink`.
  init(udev: Udev, source: Source) throws(SourceError) {
    errno = 0
    guard let pointer = udev_monitor_new_from_netlink(udev.pointer, source.rawValue) else {
      throw Udev.failure(errno, "udev_monitor_new_from_netlink(\(source.rawValue))")
    }
    self.udev = udev
    self.source = source
    self.pointer = pointer
  }

  deinit { udev_monitor_unref(pointer) }

  /// Receive only events of `subsystem` (and `devtype`, when given). Call
  /// before `enableReceiving()`.
  ///
  /// The corresponding C function is `udev_monitor_filter_add_match_subsystem_devtype`.
  public func filter(subsystem: String, devtype: String? = nil) throws(SourceError) {
    try Udev.check(
      udev_monitor_filter_add_match_subsystem_devtype(pointer, subsystem, devtype),
      "udev_monitor_filter_add_match_subsystem_devtype")
  }

  /// Binds the socket and installs the filter.
  ///
  /// The corresponding C function is `udev_monitor_enable_receiving`.
  public func enableReceiving() throws(SourceError) {
    try Udev.check(udev_monitor_enable_receiving(pointer), "udev_monitor_enable_receiving")
  }

  /// The socket, non-blocking and close-on-exec, for `poll()`. Owned by the
  /// monitor: do not close it.
  ///
  /// The corresponding C function is `udev_monitor_get_fd`.
  public var fd: Int32 { udev_monitor_get_fd(pointer) }

  /// The next pending event that passes the filter, or nil when none is
  /// pending (never blocks). Throws on a socket error, e.g. `ENOBUFS` when
  /// the receive buffer overflowed and events were lost; receiving again
  /// after that continues with the next event.
  ///
  /// The corresponding C function is `udev_monitor_receive_device`.
  public func receive() throws(SourceError) -> UdevDevice? {
    while true {
      errno = 0
      let result = udev_monitor_receive_device(pointer)
      let error = errno
      if let result { return try UdevDevice(udev: udev, owning: result) }
      if error == EINTR { continue }
      if error == EAGAIN || error == EWOULDBLOCK { return nil }
      throw Udev.failure(error, "udev_monitor_receive_device")
    }
  }
}
