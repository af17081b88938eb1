// balloonctl-bench: the cost of one control tick, of the readers alone, and
// the memory of a controller over many ticks. `bench/run` drives it; its
// output is `key value` lines, like bench/floor.c's.
//
//   balloonctl-bench ticks   [-w WARMUP] [-b BATCHES] [-n PER_BATCH]
//       Controller.tick() in report mode on the live system, exactly as the
//       daemon calls it (no probe, no state store, a notice-level logger).
//   balloonctl-bench readers [-w WARMUP] [-b BATCHES] [-n PER_BATCH] meminfo|vmstat|both ...
//       What the tick spends reading: KeptOpenFile.refresh() + MeminfoReader /
//       VmstatReader.parse, as Controller.readMeminfo/readVmstat do.
//   balloonctl-bench memory  [-w WARMUP] [-t TICKS] [-i INTERVAL_MS]
//       RssAnon and VmRSS of this process after the warm-up and after TICKS
//       more ticks (flatness), at half-way, and every TICKS/20 (the trace). The
//       ticks see a simulated clock advancing INTERVAL_MS each, so periodic
//       work (rediscovery, the process scan) runs as in a real long run.
//   balloonctl-bench cold    [-i INTERVAL_MS] [-b COUNT] tick|both
//       COUNT single ticks (or reads of both files), each after sleeping
//       INTERVAL_MS in poll(), timed alone: what one costs an idle daemon,
//       whose caches and TLBs have cooled down in the sleep (median, p90).
//   balloonctl-bench loop    [-i INTERVAL_MS] hop|thread|sync
//       Runs forever (until SIGTERM/SIGINT) the daemon's loop around the real
//       Waiter and Controller, in one of three shapes, so bench/run can sample
//       each one's CPU per idle second next to the daemon: hop = every wait
//       hops to a serial DispatchQueue and back (the daemon's first loop, a
//       swift-service-lifecycle service, did this), thread = the Swift
//       concurrency runtime up but wait + tick on one dedicated thread, sync =
//       wait + tick on the main thread, no Dispatch, no tasks (the shape
//       balloonctl run has now: DaemonLoop). The first two are kept as the
//       measured evidence for it; the service model itself was retired with
//       the dependency (its last result: bench/BENCHMARKS.md.in).
//
// Timing: WARMUP untimed iterations, then BATCHES batches of PER_BATCH; each
// batch is timed with CLOCK_MONOTONIC (wall) and CLOCK_THREAD_CPUTIME_ID
// (this thread's CPU, user + kernel). The batch means are sorted; the median
// and the 99th percentile (nearest rank) are printed in ns per iteration.

import BalloonKit
import Dispatch
import Logging
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

struct Options {
  var warmup = 1000
  var batches = 200
  var perBatch = 50
  var ticks = 100_000
  var intervalMilliseconds: Int32 = 1000
  var modes: [String] = []
}

/// To standard error (the C `stderr` global is not concurrency-safe in Swift 6).
func writeError(_ text: String) {
  var text = text
  text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

func usage() -> Never {
  let text = """
    usage: balloonctl-bench ticks   [-w WARMUP] [-b BATCHES] [-n PER_BATCH]
           balloonctl-bench readers [-w WARMUP] [-b BATCHES] [-n PER_BATCH] meminfo|vmstat|both ...
           balloonctl-bench memory  [-w WARMUP] [-t TICKS] [-i INTERVAL_MS]
           balloonctl-bench cold    [-i INTERVAL_MS] [-b COUNT] tick|both
           balloonctl-bench loop    [-i INTERVAL_MS] hop|thread|sync

    """
  writeError(text)
  exit(2)
}

func parseOptions(_ arguments: ArraySlice<String>) -> Options {
  var options = Options()
  var rest = arguments
  while let flag = rest.popFirst() {
    func number() -> Int {
      guard let text = rest.popFirst(), let value = Int(text), value >= 0 else { usage() }
      return value
    }
    switch flag {
    case "-w": options.warmup = number()
    case "-b": options.batches = max(1, number())
    case "-n": options.perBatch = max(1, number())
    case "-t": options.ticks = number()
    case "-i": options.intervalMilliseconds = Int32(clamping: max(1, number()))
    case let mode where !mode.hasPrefix("-"): options.modes.append(mode)
    default: usage()
    }
  }
  return options
}

func nanoseconds(_ clock: clockid_t) -> UInt64 {
  var spec = timespec()
  clock_gettime(clock, &spec)
  return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
}

/// Nearest-rank percentile of a sorted array.
func percentile(_ sorted: [Double], _ p: Double) -> Double {
  let rank = min(sorted.count, max(1, Int((p / 100 * Double(sorted.count)).rounded(.up))))
  return sorted[rank - 1]
}

func emit(_ key: String, _ value: Double) {
  print("\(key) \(Int(value.rounded()))")
}

func fail(_ message: String) -> Never {
  writeError("balloonctl-bench: \(message)\n")
  exit(1)
}

/// Runs `body` warm-up times, then in timed batches, and prints the result.
func measure(_ name: String, _ options: Options, _ body: () throws(SourceError) -> Void) {
  do {
    for _ in 0..<options.warmup { try body() }
    var wall: [Double] = []
    var cpu: [Double] = []
    wall.reserveCapacity(options.batches)
    cpu.reserveCapacity(options.batches)
    for _ in 0..<options.batches {
      let w0 = nanoseconds(CLOCK_MONOTONIC)
      let c0 = nanoseconds(CLOCK_THREAD_CPUTIME_ID)
      for _ in 0..<options.perBatch { try body() }
      let c1 = nanoseconds(CLOCK_THREAD_CPUTIME_ID)
      let w1 = nanoseconds(CLOCK_MONOTONIC)
      wall.append(Double(w1 - w0) / Double(options.perBatch))
      cpu.append(Double(c1 - c0) / Double(options.perBatch))
    }
    wall.sort()
    cpu.sort()
    print("\(name).iterations \(options.batches * options.perBatch)")
    emit("\(name).wall_ns_median", percentile(wall, 50))
    emit("\(name).wall_ns_p99", percentile(wall, 99))
    emit("\(name).cpu_ns_median", percentile(cpu, 50))
    emit("\(name).cpu_ns_p99", percentile(cpu, 99))
  } catch {
    fail("\(name): \(error)")
  }
}

/// The daemon's controller, as `balloonctl run --mode report` builds it,
/// minus the state store (nil writes nothing).
func makeController() -> Controller {
  LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .notice
    return handler
  }
  var logger = Logger(label: "balloonctl-bench")
  logger.logLevel = .notice
  return Controller(
    root: .live, config: ControllerConfig(mode: .report), actuators: nil, probe: nil, store: nil,
    previous: nil, pid: getpid(), logger: logger)
}

/// VmRSS, RssAnon from /proc/self/status, in KiB.
func selfMemory() -> (vmRSS: Int, rssAnon: Int) {
  guard let bytes = try? SystemFile.read("/proc/self/status") else {
    fail("/proc/self/status unreadable")
  }
  var rss = -1
  var anon = -1
  let text = String(decoding: bytes, as: UTF8.self)
  for line in text.split(separator: "\n") {
    let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" })
    guard parts.count >= 2, let value = Int(parts[1]) else { continue }
    if parts[0] == "VmRSS" { rss = value }
    if parts[0] == "RssAnon" { anon = value }
  }
  return (rss, anon)
}

/// Keeps results alive so nothing is optimized away.
nonisolated(unsafe) var sink: UInt64 = 0

func ticks(_ options: Options) {
  let controller = makeController()
  measure("swift.tick", options) { () throws(SourceError) in
    let report = try controller.tick()
    sink &+= report.snapshot.limit.bytes
  }
  print("swift.tick.balloons \(controller.devices.count)")
}

/// The two reads of a tick, as Controller.init opens the files and
/// Controller.readMeminfo / readVmstat read them.
final class Readers {
  let root = Root.live
  let meminfoFile: KeptOpenFile
  let vmstatFile: KeptOpenFile

  init() {
    meminfoFile = KeptOpenFile(
      root.path(MeminfoReader.path), capacity: 8192, shortReadIsEnd: true)
    vmstatFile = KeptOpenFile(root.path(VmstatReader.path), capacity: 16384)
  }

  func readMeminfo() throws(SourceError) -> Meminfo {
    guard try meminfoFile.refresh() else {
      throw SourceError(path: meminfoFile.path.string, .unreadable(.noSuchFileOrDirectory))
    }
    return try meminfoFile.withBytes { bytes throws(SourceError) in
      try MeminfoReader.parse(bytes, path: meminfoFile.path.string)
    }
  }

  func readVmstat() throws(SourceError) -> Vmstat {
    guard try vmstatFile.refresh() else {
      throw SourceError(path: vmstatFile.path.string, .unreadable(.noSuchFileOrDirectory))
    }
    return try vmstatFile.withBytes { bytes throws(SourceError) in
      try VmstatReader.parse(bytes, path: vmstatFile.path.string, pageSize: root.pageSize)
    }
  }
}

func readers(_ options: Options) {
  let files = Readers()
  let modes = options.modes.isEmpty ? ["meminfo", "vmstat", "both"] : options.modes
  for mode in modes {
    switch mode {
    case "meminfo":
      measure("swift.meminfo", options) { () throws(SourceError) in
        sink &+= try files.readMeminfo().memTotal
      }
    case "vmstat":
      measure("swift.vmstat", options) { () throws(SourceError) in
        sink &+= try files.readVmstat().oomKill ?? 1
      }
    case "both":
      measure("swift.both", options) { () throws(SourceError) in
        sink &+= try files.readMeminfo().memTotal
        sink &+= try files.readVmstat().oomKill ?? 1
      }
    default: usage()
    }
  }
}

/// RssAnon over many ticks. The clock is simulated at the daemon's interval
/// (tick i sees boot time start + i × interval), so the time-driven work of
/// a long run happens as often as it would in TICKS × interval of real time:
/// rediscovery every 300 s, the Σ VmPin process scan every 600 s.
func memory(_ options: Options) {
  let controller = makeController()
  let step = Double(options.intervalMilliseconds) / 1000
  let start = Clock.boottime()
  let wall = Clock.wall()
  var index = 0
  func tick() throws(SourceError) {
    index += 1
    let report = try controller.tick(
      now: start + Double(index) * step, wall: wall + Int64((Double(index) * step).rounded()))
    sink &+= report.snapshot.limit.bytes
  }
  do {
    for _ in 0..<options.warmup { try tick() }
    let before = selfMemory()
    var maxAnon = before.rssAnon
    var half = before.rssAnon
    var trace: [Int] = []
    let chunk = max(1, options.ticks / 20)
    var done = 0
    while done < options.ticks {
      let count = min(chunk, options.ticks - done)
      for _ in 0..<count { try tick() }
      done += count
      let anon = selfMemory().rssAnon
      trace.append(anon)
      maxAnon = max(maxAnon, anon)
      if done <= options.ticks / 2 { half = anon }
    }
    let after = selfMemory()
    print("swift.memory.ticks \(options.ticks)")
    print("swift.memory.simulated_hours \(Int((Double(options.ticks) * step / 3600).rounded()))")
    print("swift.memory.rssanon_kib_before \(before.rssAnon)")
    print("swift.memory.rssanon_kib_after \(after.rssAnon)")
    print("swift.memory.rssanon_kib_half \(half)")
    print("swift.memory.rssanon_kib_max \(maxAnon)")
    print("swift.memory.rssanon_kib_trace \(trace.map(String.init).joined(separator: ","))")
    print("swift.memory.vmrss_kib_before \(before.vmRSS)")
    print("swift.memory.vmrss_kib_after \(after.vmRSS)")
  } catch {
    fail("memory: \(error)")
  }
}

/// One tick (or one read of both files) after each sleep, timed alone.
func cold(_ options: Options) {
  let count = options.batches
  var body: () throws(SourceError) -> Void
  let name: String
  switch options.modes.first ?? "tick" {
  case "tick":
    let controller = makeController()
    body = { () throws(SourceError) in sink &+= try controller.tick().snapshot.limit.bytes }
    name = "swift.cold_tick"
  case "both":
    let files = Readers()
    body = { () throws(SourceError) in
      sink &+= try files.readMeminfo().memTotal
      sink &+= try files.readVmstat().oomKill ?? 1
    }
    name = "swift.cold_both"
  default: usage()
  }
  do {
    try body()
    var cpu: [Double] = []
    var wall: [Double] = []
    for _ in 0..<count {
      _ = poll(nil, 0, options.intervalMilliseconds)
      let w0 = nanoseconds(CLOCK_MONOTONIC)
      let c0 = nanoseconds(CLOCK_THREAD_CPUTIME_ID)
      try body()
      let c1 = nanoseconds(CLOCK_THREAD_CPUTIME_ID)
      let w1 = nanoseconds(CLOCK_MONOTONIC)
      cpu.append(Double(c1 - c0))
      wall.append(Double(w1 - w0))
    }
    cpu.sort()
    wall.sort()
    print("\(name).count \(count)")
    print("\(name).interval_ms \(options.intervalMilliseconds)")
    emit("\(name).cpu_ns_median", percentile(cpu, 50))
    emit("\(name).cpu_ns_p90", percentile(cpu, 90))
    emit("\(name).wall_ns_median", percentile(wall, 50))
  } catch {
    fail("cold: \(error)")
  }
}

/// The daemon's loop body (DaemonLoop.run, minus signals, metrics and the exit
/// policy) around the real Waiter, udev monitor, PSI trigger and Controller.
final class LoopModel: @unchecked Sendable {
  let controller: Controller
  let monitor: BalloonEventMonitor?
  let pressure: PressureTrigger?
  let waiter: Waiter
  let interval: Int32
  var continuation: CheckedContinuation<Void, Never>?
  /// A pipe standing in for the daemon's signalfd, so the wait polls the
  /// same descriptors as the daemon's.
  private var wake: [Int32] = [-1, -1]

  init(_ options: Options) {
    controller = makeController()
    monitor = try? BalloonEventMonitor()
    pressure = try? PressureTrigger.open(root: .live).get()
    guard pipe(&wake) == 0 else { fail("loop: pipe: \(Errno(rawValue: errno))") }
    waiter = Waiter(
      monitorFD: monitor?.fileDescriptor, pressureFD: pressure?.fileDescriptor, signalFD: wake[0])
    do {
      _ = try controller.tick()
    } catch {
      fail("loop: \(error)")
    }
    interval = options.intervalMilliseconds
  }

  func wait() -> WakeReasons { waiter.wait(timeoutMilliseconds: interval) }

  func tick(after reasons: WakeReasons) {
    if reasons.contains(.udev), let monitor {
      _ = monitor.drain()
      controller.invalidateDevices()
    }
    _ = try? controller.tick()
  }
}

func loop(_ options: Options) -> Never {
  let model = LoopModel(options)
  switch options.modes.first ?? "sync" {
  case "sync":
    while true { model.tick(after: model.wait()) }
  case "hop":
    let queue = DispatchQueue(label: "balloonctl.wait")
    Task.detached {
      while true {
        let reasons = await withCheckedContinuation { continuation in
          queue.async { continuation.resume(returning: model.wait()) }
        }
        model.tick(after: reasons)
      }
    }
    dispatchMain()
  case "thread":
    Task.detached {
      await withCheckedContinuation { continuation in
        model.continuation = continuation
        var thread = pthread_t()
        let context = Unmanaged.passRetained(model).toOpaque()
        let created = pthread_create(
          &thread, nil,
          { context in
            let model = Unmanaged<LoopModel>.fromOpaque(context!).takeRetainedValue()
            while model.continuation != nil { model.tick(after: model.wait()) }
            return nil
          }, context)
        if created != 0 { fail("loop: pthread_create: \(created)") }
      }
    }
    dispatchMain()
  default: usage()
  }
}

let arguments = CommandLine.arguments.dropFirst()
guard let command = arguments.first else { usage() }
let options = parseOptions(arguments.dropFirst())
switch command {
case "ticks": ticks(options)
case "readers": readers(options)
case "memory": memory(options)
case "cold": cold(options)
case "loop": loop(options)
default: usage()
}
// Uses `sink`, so the measured results cannot be optimized away.
if sink == 0 { writeError("balloonctl-bench: every reading was zero\n") }
