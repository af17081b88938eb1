import BalloonKit
import SystemPackage
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `status --json` and `run --once --json` read through the same path: on
/// every fixture tree they must agree on the balloons, their sizes, the
/// pinned memory and the limit (report mode, --root: nothing is written).
@Suite("status and run --once agree")
struct StatusOnceAgreementTests {
  /// The tree directories on disk, so a new tree is covered without a list to edit.
  static var treesOnDisk: [String] {
    var names: [String] = []
    guard let dir = opendir(Fixtures.roots.string) else { return [] }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) {
        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
      }
      if name != "." && name != ".." && entry.pointee.d_type == UInt8(DT_DIR) {
        names.append(name)
      }
    }
    return names.sorted()
  }

  @Test("every tree on disk is in Fixtures.allTrees (and so below)")
  func everyTree() {
    #expect(!Self.treesOnDisk.isEmpty)
    #expect(Self.treesOnDisk == Fixtures.allTrees.sorted())
  }

  /// What both documents must say the same about.
  static func shared(_ document: JSONValue) -> [String: JSONValue?] {
    var fields: [String: JSONValue?] = [
      "memory": document["memory"],
      "limit": document["limit"],
      "over_limit": document["over_limit"],
    ]
    let balloons = document["balloons"]?.array ?? []
    fields["balloon_count"] = .integer(UInt64(balloons.count))
    for (index, balloon) in balloons.enumerated() {
      for key in [
        "kind", "name", "driver", "bound", "current_bytes", "target_bytes", "current_source",
        "target_source", "device_actual_bytes", "over_limit",
      ] {
        fields["balloons[\(index)].\(key)"] = balloon[key]
      }
    }
    return fields
  }

  @Test("status --json and run --once --json agree", arguments: Fixtures.allTrees)
  func agree(_ tree: String) throws {
    let root = Fixtures.directory(tree).string
    let status = try Balloonctl.run(["status", "--json", "--root", root])
    let once = try Balloonctl.run(["run", "--once", "--mode", "report", "--json", "--root", root])
    #expect(status.status == 0, "\(status.stderr)")
    #expect(once.status == 0, "\(once.stderr)")
    let statusDocument = try JSONParser.parse(status.stdout)
    let onceDocument = try JSONParser.parse(once.stdout)
    let expected = Self.shared(statusDocument)
    let actual = Self.shared(onceDocument)
    // Nothing compared may be missing from either (a renamed member would
    // otherwise compare nil with nil).
    for key in ["memory", "limit", "over_limit"] {
      #expect(expected[key] != nil && expected[key]! != nil, "status: \(key)")
    }
    #expect(statusDocument["limit"]?["bytes"]?.uint64 != nil)
    #expect(statusDocument["memory"]?["pinned_bytes"]?.uint64 != nil)
    for key in Set(expected.keys).union(actual.keys).sorted() {
      #expect(expected[key] ?? nil == actual[key] ?? nil, "\(tree): \(key)")
    }
    // Every balloon status lists has a decision in run --once, in order.
    let names = statusDocument["balloons"]?.array?.map { $0["name"] } ?? []
    let decided = onceDocument["decisions"]?.array?.map { $0["balloon"] } ?? []
    #expect(names == decided, "\(tree)")
  }
}
