import BalloonKit
import FuzzSupport

/// virtio_balloon's inputs. The first byte picks: even, the sysfs `features`
/// string (KernelText.attribute, then VirtioFeature.bits), checked by
/// rebuilding the string from the bits; odd, the balloon counters
/// (VirtioBalloonReader.read on /proc/vmstat and /proc/meminfo, the rest of
/// the input split at the first 0xff byte).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Fuzz.bytes(data, size)
  guard let selector = bytes.first else { return 0 }
  if selector & 1 == 0 {
    features(Array(bytes.dropFirst()))
  } else {
    let files = Fuzz.split(bytes.dropFirst(), at: 0xff, into: 2)
    counters(vmstat: files[0], meminfo: files[1])
  }
  return 0
}

func features(_ bytes: [UInt8]) {
  let path = "/sys/devices/pci0000:00/0000:00:01.0/virtio0/features"
  let text: String
  do {
    text = try KernelText.attribute(bytes, path: path)
  } catch {
    Fuzz.requireOneLine(error, naming: path)
    return
  }
  let ones = text.utf8.filter { $0 == 0x31 }.count
  guard let bits = VirtioFeature.bits(fromSysfs: text) else {
    Fuzz.require(text.utf8.contains { $0 != 0x30 && $0 != 0x31 }, "refused a string of 0 and 1")
    return
  }
  Fuzz.require(bits.count == ones, "\(bits.count) bits for \(ones) ones")
  var rebuilt = [UInt8](repeating: 0x30, count: text.utf8.count)
  for bit in bits { rebuilt[bit] = 0x31 }
  Fuzz.require(rebuilt.elementsEqual(text.utf8), "bits \(bits) do not rebuild \(text)")
  let device = BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: "/sys/devices/virtio0", driver: "virtio_balloon",
    featureBits: bits)
  Fuzz.require(device.features.count == bits.count, "a feature without a name")
  Fuzz.require(device.deflateOnOOM == (bits.contains(2)), "deflateOnOOM is not bit 2")
}

func counters(vmstat vmstatBytes: [UInt8], meminfo meminfoBytes: [UInt8]) {
  guard let vmstat = try? VmstatReader.parse(vmstatBytes, path: "/proc/vmstat", pageSize: 4096)
  else { return }
  let meminfo =
    (try? MeminfoReader.parse(meminfoBytes, path: "/proc/meminfo"))
    ?? Meminfo(memTotal: 1 << 30, swapTotal: 0)
  let device = BalloonDevice(
    kind: .virtio, name: "virtio0", sysPath: "/sys/devices/virtio0", driver: "virtio_balloon")
  let root = Root.snapshot("/nonexistent-fuzz-root")
  let reading: BalloonReading
  do {
    reading = try VirtioBalloonReader.read(
      device: device, root: root, meminfo: meminfo, vmstat: vmstat, probe: nil)
  } catch {
    Fuzz.requireOneLine(error, naming: root.path(VmstatReader.path).string)
    if vmstat.balloonBytes == nil, meminfo.balloon == nil,
      let inflated = vmstat.balloonInflatedBytes, let deflated = vmstat.balloonDeflatedBytes
    {
      Fuzz.require(deflated > inflated, "refused inflate \(inflated) ≥ deflate \(deflated)")
    } else {
      Fuzz.require(false, "threw although a gauge or no event pair was given: \(error)")
    }
    return
  }
  // The best counter wins: the vmstat gauge, then meminfo, then the events.
  let expected: UInt64? =
    vmstat.balloonBytes ?? meminfo.balloon
    ?? vmstat.balloonInflatedBytes.flatMap { inflated in
      vmstat.balloonDeflatedBytes.map { inflated - $0 }
    }
  Fuzz.require(
    reading.current.bytes == expected,
    "current \(String(describing: reading.current.bytes)), expected \(String(describing: expected))"
  )
  Fuzz.require(reading.target.bytes == nil, "a target without a probe")
}

@main enum Main {
  static func main() { Fuzz.main() }
}
