/// What the kernel says about one OOM kill, from two of the records
/// mm/oom_kill.c logs (see docs/kernel-interfaces.md, "/dev/kmsg"):
///
///     oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),…,task=memlock,pid=146,uid=0
///     Out of memory: Killed process 146 (memlock) total-vm:525284kB, anon-rss:524344kB, …
///
/// (or "Memory cgroup out of memory: Killed process …"). The summary comes
/// first on 6.1 .. 7.x; the kill line is what makes a record.
public struct OOMVictim: Sendable, Equatable {
  public var pid: Int32
  public var comm: String
  public var anonRSSBytes: UInt64?
  /// `CONSTRAINT_NONE`, `CONSTRAINT_MEMCG`, … without the prefix, lower case
  /// (`none`, `memcg`, `cpuset`, `memory_policy`); nil when the summary was not seen.
  public var constraint: String?
  /// The kill line's wording: a memory cgroup's limit or the whole guest.
  public var memcg: Bool
  /// The kernel's timestamp (CLOCK_MONOTONIC µs) of the kill line.
  public var kernelMicroseconds: UInt64

  public init(
    pid: Int32, comm: String, anonRSSBytes: UInt64?, constraint: String?, memcg: Bool,
    kernelMicroseconds: UInt64
  ) {
    self.pid = pid
    self.comm = comm
    self.anonRSSBytes = anonRSSBytes
    self.constraint = constraint
    self.memcg = memcg
    self.kernelMicroseconds = kernelMicroseconds
  }
}

/// Turns kernel log records into OOM kills. Keeps the last summary line so
/// the kill line that follows gets its constraint. Records that are not about
/// an OOM kill are ignored; one that claims to be and does not parse is an
/// error (the caller logs it and goes on).
public struct OOMRecordMatcher: Sendable {
  private var summary: (pid: Int32, constraint: String)?

  public init() {}

  public mutating func take(_ record: KmsgRecord, path: String) throws(SourceError) -> OOMVictim? {
    let text = record.text
    if text.hasPrefix("oom-kill:") {
      summary = try Self.summary(text, path: path)
      return nil
    }
    let memcg: Bool
    let rest: Substring
    if let tail = text.dropPrefix("Out of memory: Killed process ") {
      memcg = false
      rest = tail
    } else if let tail = text.dropPrefix("Memory cgroup out of memory: Killed process ") {
      memcg = true
      rest = tail
    } else {
      return nil
    }
    var victim = try Self.killLine(rest, path: path, whole: text)
    victim.memcg = memcg
    victim.kernelMicroseconds = record.microseconds
    if let summary, summary.pid == victim.pid { victim.constraint = summary.constraint }
    summary = nil
    return victim
  }

  /// `oom-kill:key=value,…`: the constraint and the victim's pid. The
  /// memcg paths (`task_memcg=/a,b`) may hold commas, so only the known keys
  /// are looked for, and `task=` is taken as the last `,task=` before `,pid=`.
  static func summary(_ text: String, path: String) throws(SourceError) -> (
    pid: Int32, constraint: String
  ) {
    func fail(_ what: String) -> SourceError {
      .malformed(path, "OOM summary \(shown(text)): \(what)")
    }
    let body = text.dropFirst("oom-kill:".count)
    guard let constraintValue = body.dropPrefix("constraint=CONSTRAINT_") else {
      throw fail("no constraint=CONSTRAINT_…")
    }
    let constraint = constraintValue.prefix { $0 != "," }
    guard !constraint.isEmpty,
      constraint.allSatisfy({ $0.isASCII && ($0.isUppercase || $0 == "_") })
    else { throw fail("constraint is not a CONSTRAINT_ name") }
    guard let pidRange = body.ranges(of: ",pid=").last else {
      throw fail("no pid=")
    }
    let pidText = body[pidRange.upperBound...].prefix { $0 != "," }
    guard let pid = pid(pidText) else { throw fail("pid \"\(pidText)\" is not a pid") }
    return (pid, constraint.lowercased())
  }

  /// `<pid> (<comm>) total-vm:<n>kB, anon-rss:<n>kB, …`. comm is up to 15
  /// bytes and may hold spaces and parentheses, so it ends at the last ") ".
  static func killLine(_ rest: Substring, path: String, whole: String) throws(SourceError)
    -> OOMVictim
  {
    func fail(_ what: String) -> SourceError {
      .malformed(path, "OOM kill record \(shown(whole)): \(what)")
    }
    let pidText = rest.prefix { $0 != " " }
    guard let pid = pid(pidText) else { throw fail("pid \"\(pidText)\" is not a pid") }
    let afterPid = rest.dropFirst(pidText.count)
    guard afterPid.hasPrefix(" ("), let close = afterPid.firstRange(of: ") total-vm:") else {
      throw fail("no \"(comm) total-vm:\"")
    }
    let comm = String(afterPid[afterPid.index(afterPid.startIndex, offsetBy: 2)..<close.lowerBound])
    guard !comm.isEmpty, comm.utf8.count <= 64 else { throw fail("comm is empty or too long") }
    var anon: UInt64?
    if let anonRange = afterPid.firstRange(of: ", anon-rss:") {
      let digits = afterPid[anonRange.upperBound...].prefix { $0.isASCII && $0.isNumber }
      let unit = afterPid[anonRange.upperBound...].dropFirst(digits.count)
      guard let kib = UInt64(digits), unit.hasPrefix("kB"), let bytes = kib.times(1024) else {
        throw fail("anon-rss is not <n>kB")
      }
      anon = bytes
    }
    return OOMVictim(
      pid: pid, comm: comm, anonRSSBytes: anon, constraint: nil, memcg: false,
      kernelMicroseconds: 0)
  }

  /// A pid as the kernel prints it (`%d` of a positive number): digits
  /// only, no sign, no leading zero (`Int32("+069")` would take both).
  static func pid(_ text: Substring) -> Int32? {
    guard let first = text.utf8.first, first != UInt8(ascii: "0"),
      text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
      let pid = Int32(text), pid > 0
    else { return nil }
    return pid
  }

  static func shown(_ text: String) -> String {
    "\"" + (text.count <= 60 ? text : String(text.prefix(60)) + "…") + "\""
  }
}

extension StringProtocol {
  fileprivate func dropPrefix(_ prefix: String) -> SubSequence? {
    hasPrefix(prefix) ? dropFirst(prefix.count) : nil
  }
}
