import BalloonKit
import Testing

private let kib: UInt64 = 1024

@Suite("ProcessStatusReader: /proc/[pid]/status")
struct ProcessStatusReaderTests {
  @Test("virtio-6.18: leaders sorted by pid, kernel threads count 0")
  func scanVirtio618() throws {
    let all = try ProcessStatusReader.scan(root: Fixtures.root("virtio-6.18")).processes
    #expect(
      all == [
        ProcessPins(pid: 1, name: "init", lockedBytes: 0, pinnedBytes: 0),
        ProcessPins(pid: 2, name: "kthreadd", lockedBytes: 0, pinnedBytes: 0),
        ProcessPins(
          pid: 812, name: "rdma-server", lockedBytes: 524_288 * kib, pinnedBytes: 65_536 * kib),
        ProcessPins(pid: 1044, name: "uring-bench", lockedBytes: 0, pinnedBytes: 16_384 * kib),
      ])
    #expect(all.reduce(0) { $0 + $1.pinnedBytes } == 80 << 20)
  }

  @Test("kb-example: 2 GiB mlocked, nothing pinned") func scanKBExample() throws {
    let all = try ProcessStatusReader.scan(root: Fixtures.root("kb-example")).processes
    #expect(all.map(\.pid) == [1, 2, 4242])
    #expect(all.last == ProcessPins(pid: 4242, name: "trading-engine", lockedBytes: 2 << 30))
    #expect(all.allSatisfy { $0.pinnedBytes == 0 })
  }

  @Test(
    "trees without process directories scan to []",
    arguments: Fixtures.allTrees.filter { $0 != "virtio-6.18" && $0 != "kb-example" })
  func noProcesses(tree: String) throws {
    #expect(try ProcessStatusReader.scan(root: Fixtures.root(tree)) == ProcessScan())
  }

  @Test("a kernel thread has no VmLck/VmPin lines") func kernelThread() throws {
    let bytes = try Fixtures.bytes("virtio-6.18", "/proc/2/status")
    #expect(!String(decoding: bytes, as: UTF8.self).contains("VmLck"))
    let pins = try ProcessStatusReader.parse(bytes, path: "/proc/2/status")
    #expect(pins == ProcessPins(pid: 2, name: "kthreadd"))
  }

  @Test("the name is kept as the kernel prints it") func nameWithSpaces() throws {
    let text = "Name:\tkworker/0:1 events\nUmask:\t0022\nPid:\t37\nVmLck:\t       4 kB\n"
    let pins = try ProcessStatusReader.parse(Array(text.utf8), path: "/proc/37/status")
    #expect(pins == ProcessPins(pid: 37, name: "kworker/0:1 events", lockedBytes: 4096))
  }

  @Test("a process that exits mid-scan is skipped, others are read") func vanished() throws {
    let tree = try Fixtures.copy("virtio-6.18")
    tree.remove("/proc/1044/status")  // the directory is listed, its status is gone
    try tree.mkdir("/proc/5000")  // listed, then gone before the read
    try tree.write("/proc/self/status", "Name:\tnot-a-pid\nPid:\t9\n")  // not numeric: ignored
    let scan = try ProcessStatusReader.scan(root: tree.root)
    #expect(scan.processes.map(\.pid) == [1, 2, 812])
    #expect(scan.unreadable.isEmpty, "an exited process is not an unreadable one")
  }

  @Test("a malformed status is listed as unreadable, naming the file and line; the rest is read")
  func malformedInScan() throws {
    let tree = try Fixtures.copy("virtio-6.18")
    try tree.write("/proc/812/status", "Name:\trdma-server\nPid:\t812\nVmPin:\t  65x36 kB\n")
    let scan = try ProcessStatusReader.scan(root: tree.root)
    #expect(scan.processes.map(\.pid) == [1, 2, 1044])
    let failure = try #require(scan.unreadable.first)
    #expect(scan.unreadable.count == 1 && failure.pid == 812)
    #expect(failure.error.description.hasPrefix(tree.path("/proc/812/status") + ": line 3: "))
    #expect(failure.error.description.contains("\"VmPin\""))
    #expect(scan.vmPinSumBytes == 16_384 * kib)
  }

  @Test("no /proc at all is an error naming it") func noProc() throws {
    let tree = try TemporaryTree()
    let error = try #require(
      sourceError { () throws(SourceError) in _ = try ProcessStatusReader.scan(root: tree.root) })
    #expect(error.path == tree.path("/proc"))
  }
}
