import SystemPackage

/// The hypervisors `balloonctl advise` knows the host-side setting of.
public enum Hypervisor: String, CaseIterable, Sendable {
  case vmware
  case proxmox
  case libvirt
  case qemu
  case firecracker
  case cloudHypervisor = "cloud-hypervisor"
  case xen
  case hyperv

  /// The ones that drive a virtio balloon: from inside the guest they look
  /// alike (all are KVM), so `auto` lists every one that fits.
  public static let virtioFamily: [Hypervisor] = [
    .qemu, .libvirt, .proxmox, .firecracker, .cloudHypervisor,
  ]
}

/// What `--hypervisor auto` found, and why. Like systemd-detect-virt: the DMI
/// vendor strings, `/sys/hypervisor/type`, the CPUID `hypervisor` bit (the
/// `hypervisor` flag in /proc/cpuinfo), plus the balloon kinds discovery
/// found (docs/kernel-interfaces.md, "Hypervisor detection").
public struct HypervisorDetection: Sendable, Equatable {
  /// The hypervisors whose setting applies, most specific first; empty when
  /// nothing says this is a VM.
  public var candidates: [Hypervisor]
  /// One line per fact found, quoting the file.
  public var evidence: [String]
  /// A short name for what was found ("VMware", "KVM/QEMU").
  public var found: String?

  public static let dmiFiles = ["sys_vendor", "product_name", "bios_vendor", "board_vendor"]
  public static let dmiDirectory = "/sys/class/dmi/id"
  public static let hypervisorType = "/sys/hypervisor/type"
  public static let cpuinfo = "/proc/cpuinfo"

  enum Family: String {
    case vmware = "VMware"
    case kvm = "KVM/QEMU"
    case cloudHypervisor = "Cloud Hypervisor"
    case xen = "Xen"
    case hyperv = "Hyper-V"
    /// A VM whose hypervisor no file names, with a virtio balloon.
    case virtio = "a KVM hypervisor (virtio balloon)"

    var candidates: [Hypervisor] {
      switch self {
      case .vmware: [.vmware]
      case .kvm: [.qemu, .libvirt, .proxmox]
      case .cloudHypervisor: [.cloudHypervisor]
      case .xen: [.xen]
      case .hyperv: [.hyperv]
      case .virtio: Hypervisor.virtioFamily
      }
    }
  }

  /// systemd's DMI vendor table (src/basic/virt.c), reduced to the
  /// hypervisors with a balloon: a prefix of any of the four DMI strings.
  static let dmiVendors: [(prefix: String, family: Family)] = [
    ("VMware", .vmware), ("VMW", .vmware), ("QEMU", .kvm), ("KVM", .kvm), ("OpenStack", .kvm),
    ("KubeVirt", .kvm), ("Cloud Hypervisor", .cloudHypervisor), ("Xen", .xen),
    ("Microsoft Corporation Virtual Machine", .hyperv), ("Hyper-V", .hyperv),
  ]

  /// Reads the files below `root`; unreadable or absent files are skipped
  /// (they only weaken the answer), never an error.
  public static func detect(root: Root, balloonKinds: [BalloonKind]) -> HypervisorDetection {
    var dmi: [(String, String)] = []
    for name in dmiFiles {
      let path = root.path(dmiDirectory).appending(name)
      if let bytes = try? SystemFile.read(path),
        let text = try? KernelText.attribute(bytes, path: path.string), !text.isEmpty
      {
        dmi.append((name, text))
      }
    }
    var type: String?
    let typePath = root.path(hypervisorType)
    if let bytes = try? SystemFile.read(typePath) {
      type = try? KernelText.attribute(bytes, path: typePath.string)
    }
    var cpuFlag = false
    if let bytes = try? SystemFile.read(root.path(cpuinfo)) {
      cpuFlag = hasHypervisorFlag(bytes)
    }
    return decide(dmi: dmi, hypervisorType: type, cpuFlag: cpuFlag, balloonKinds: balloonKinds)
  }

  /// The `hypervisor` word on the first `flags` line (x86 sets it from CPUID
  /// leaf 1, ECX bit 31, on every CPU alike).
  public static func hasHypervisorFlag(_ bytes: [UInt8]) -> Bool {
    let text = String(decoding: bytes.prefix(64 << 10), as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix("flags") {
      guard let colon = line.firstIndex(of: ":") else { return false }
      return line[line.index(after: colon)...].split(separator: " ").contains("hypervisor")
    }
    return false
  }

  /// Pure: the decision from what was read. The balloon is what must be
  /// capped, so its kind wins; then the DMI vendor, then /sys/hypervisor.
  public static func decide(
    dmi: [(String, String)], hypervisorType: String?, cpuFlag: Bool, balloonKinds: [BalloonKind]
  ) -> HypervisorDetection {
    var evidence: [String] = []
    var dmiFamily: Family?
    let product = dmi.first { $0.0 == "product_name" }?.1 ?? ""
    for (name, value) in dmi {
      // Hyper-V's sys_vendor is the generic "Microsoft Corporation": only
      // with product_name "Virtual Machine" is it a VM.
      let probe = value == "Microsoft Corporation" ? "\(value) \(product)" : value
      if let match = dmiVendors.first(where: { probe.hasPrefix($0.prefix) }) {
        evidence.append("DMI \(name) \"\(value)\" (\(match.family.rawValue))")
        if dmiFamily == nil { dmiFamily = match.family }
      }
    }
    var typeFamily: Family?
    if let hypervisorType, !hypervisorType.isEmpty {
      evidence.append("\(HypervisorDetection.hypervisorType) says \"\(hypervisorType)\"")
      if hypervisorType == "xen" { typeFamily = .xen }
    }
    if cpuFlag { evidence.append("the CPU's hypervisor flag is set (/proc/cpuinfo)") }
    var balloonFamily: Family?
    for kind in balloonKinds {
      evidence.append("a \(kind.rawValue) balloon")
      switch kind {
      case .vmware: balloonFamily = balloonFamily ?? .vmware
      case .xen: balloonFamily = balloonFamily ?? .xen
      case .hyperv: balloonFamily = balloonFamily ?? .hyperv
      case .virtio:
        if balloonFamily == nil && dmiFamily != .kvm && dmiFamily != .cloudHypervisor {
          balloonFamily = .virtio
        }
      default: break
      }
    }
    let family = balloonFamily ?? dmiFamily ?? typeFamily
    return HypervisorDetection(
      candidates: family?.candidates ?? [], evidence: evidence, found: family?.rawValue)
  }
}
