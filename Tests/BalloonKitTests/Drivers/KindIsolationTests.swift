import Foundation
import Testing

/// The pipeline's shared stages ask a balloon's driver and never branch on
/// its kind (BalloonDriver.swift): no kind literal (`.xen`) and no kind's
/// own type (`XenObservation`) in their code, comments aside. The one
/// exception is the virtio PCI config probe, a facility the reader is
/// handed (ReadContext.probe) rather than a kind's decision.
@Suite("kind isolation")
struct KindIsolationTests {
  static let sources = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Sources/BalloonKit")

  /// The shared stages: reader, snapshot, policy, executor, recorder, the
  /// daemon around them, the state file and the reports.
  static let sharedDirectories = [
    "Pipeline", "Snapshot", "State", "Daemon", "Report", "Limit", "Pinned",
  ]
  static let allowed: Set<String> = ["VirtioConfigProbe", "VirtioBalloonConfig"]
  static let kindName = try! NSRegularExpression(
    pattern: #"\b(?:Xen|VMware|Vmw|HyperV|Virtio)[A-Z]\w*|\.(?:virtio|vmware|xen|hyperv)\b"#)

  /// `file:line: match` for every kind-specific name outside comments.
  static func kindNames(in directory: String) throws -> [String] {
    let dir = sources.appendingPathComponent(directory)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir.path)
      .filter { $0.hasSuffix(".swift") }.sorted()
    var found: [String] = []
    for file in files {
      let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
      for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false)
        .enumerated()
      {
        let code = String(
          line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false)[0])
        let range = NSRange(code.startIndex..., in: code)
        for match in kindName.matches(in: code, range: range) {
          let name = String(code[Range(match.range, in: code)!])
          if !allowed.contains(name) { found.append("\(directory)/\(file):\(number + 1): \(name)") }
        }
      }
    }
    return found
  }

  @Test("no shared stage names a balloon kind", arguments: sharedDirectories)
  func sharedStage(_ directory: String) throws {
    #expect(try Self.kindNames(in: directory) == [])
  }

  @Test("the check sees a kind's name where one is")
  func checkFindsNames() throws {
    // The drivers' own folder is full of them: the pattern is not blind.
    let names = try Self.kindNames(in: "Drivers")
    #expect(names.contains { $0.hasSuffix(": XenObservation") })
    #expect(names.contains { $0.hasSuffix(": .virtio") })
  }
}
