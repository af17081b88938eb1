// swift-tools-version: 6.1
import PackageDescription

// Every target gets the same strictness: Swift 6 mode (strict concurrency) and
// the upcoming features swift-log enables for itself.
let upcoming: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("MemberImportVisibility"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
  name: "balloonctl",
  products: [
    .executable(name: "balloonctl", targets: ["balloonctl"]),
    .library(name: "BalloonKit", targets: ["BalloonKit"]),
    .executable(name: "balloonctl-bench", targets: ["BalloonBench"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
  ],
  targets: [
    .systemLibrary(name: "CUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
    // Linux interfaces Swift's Glibc module does not export (signalfd).
    .systemLibrary(name: "CLinux"),
    // Tests only: the umockdev C API that fakes /sys and sends uevents in-process.
    .systemLibrary(
      name: "CUMockdev", pkgConfig: "umockdev-1.0", providers: [.apt(["libumockdev-dev"])]),
    .target(
      name: "BalloonKit",
      dependencies: [
        "CUdev", "CLinux",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "SystemPackage", package: "swift-system"),
      ]),
    .executableTarget(
      name: "balloonctl",
      dependencies: [
        "BalloonKit",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "SystemPackage", package: "swift-system"),
      ]),
    // bench/run: the cost of a control tick and of the readers, the memory over many
    // ticks, and models of the daemon's loop.
    .executableTarget(
      name: "BalloonBench",
      dependencies: [
        "BalloonKit",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "SystemPackage", package: "swift-system"),
      ]),
    .testTarget(
      name: "BalloonKitTests",
      dependencies: [
        "BalloonKit", "CUMockdev",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "InMemoryLogging", package: "swift-log"),
        .product(name: "SystemPackage", package: "swift-system"),
      ],
      exclude: ["Fixtures"]),
  ]
)

for target in package.targets where target.type != .system {
  target.swiftSettings = (target.swiftSettings ?? []) + upcoming
}

// Release builds put the functions the idle daemon runs next to each other at
// the start of .text (the list: bench/tick.order, written by bench/order).
// -function-sections gives every function of ours a section gold can place
// (without it Swift gives one only to public ones). The tick's code then faults
// in, and stays locked, as a few 64 KiB fault-around windows instead of one per
// function spread over the binary (BENCHMARKS.md, section 3).
let tickOrder = String(#filePath.dropLast("Package.swift".count)) + "bench/tick.order"
for target in package.targets where target.name == "BalloonKit" || target.name == "balloonctl" {
  target.swiftSettings =
    (target.swiftSettings ?? []) + [
      .unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release))
    ]
}
for target in package.targets where target.name == "balloonctl" {
  target.linkerSettings = [
    .unsafeFlags(
      ["-Xlinker", "--section-ordering-file=\(tickOrder)"], .when(configuration: .release))
  ]
}
