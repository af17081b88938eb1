// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for balloonctl's parsers. Built only by fuzz/run, with
// `-sanitize=fuzzer,address` for every module (BalloonKit too, so libFuzzer
// sees its coverage); each executable is one fuzzer.
let fuzzers = [
  "meminfo", "vmstat", "process-status", "vmmemctl", "hv-balloon", "xen", "virtio", "pci-config",
  "state", "settings", "memmap", "kmsg",
]

let package = Package(
  name: "balloonctl-fuzz",
  dependencies: [  // SwiftPM names a path dependency after its directory; `balloonctl` is a
    // link to `..`, so the name is the same in every checkout (a checkout named
    // `fuzz` would otherwise clash with this package).
    .package(path: "balloonctl")
  ],
  targets: [
    // libFuzzer's driver entry, called from each fuzzer's Swift main.
    .target(name: "FuzzerDriver"),
    .target(
      name: "FuzzSupport",
      dependencies: ["FuzzerDriver", .product(name: "BalloonKit", package: "balloonctl")]),
  ]
    + fuzzers.map { name in
      .executableTarget(
        name: "fuzz-\(name)",
        dependencies: ["FuzzSupport", .product(name: "BalloonKit", package: "balloonctl")],
        path: "Sources/fuzz-\(name)")
    }
)
