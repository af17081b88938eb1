/// The JSON of an OOM record: written to state.json and shown by
/// `status --json` (`oom_kills`). Sizes in bytes, unknown as null.
///
///     {"at","read_boottime","kernel_us","source","victim":{"pid","comm","anon_rss_bytes"}|null,"constraint",
///      "balloons":[{"kind","name","current_bytes","target_bytes"}],
///      "limit_bytes","guest_bytes","pinned":{"hugetlb_bytes",…,"unswappable_bytes"},
///      "pinned_bytes","victim_counted_back","verdict","cap_bytes"}
///
/// `victim_counted_back`: the victim had exited when the balloons were read,
/// the guest has no swap, and its anon-rss is counted in `pinned` as
/// unswappable (the limit is the one of the moment of the kill).
public enum OOMRecordJSON {
  /// The state file keeps this many, newest last.
  public static let kept = 16

  public static func json(_ record: OOMRecord) -> JSONValue {
    var victim = JSONValue.null
    if let pid = record.victimPid {
      victim = .object([
        ("pid", .signed(Int64(pid))),
        ("comm", .optional(record.victimComm)),
        ("anon_rss_bytes", .optional(record.victimAnonRSSBytes)),
      ])
    }
    let pinned = record.pinned
    return .object([
      ("at", .signed(record.at)),
      ("read_boottime", .number(record.readBoottime)),
      ("kernel_us", .optional(record.kernelMicroseconds)),
      ("source", .string(record.source)),
      ("victim", victim),
      ("constraint", .optional(record.constraint)),
      (
        "balloons",
        .array(
          record.balloons.map {
            .object([
              ("kind", .string($0.kind.rawValue)),
              ("name", .string($0.name)),
              ("current_bytes", .optional($0.currentBytes)),
              ("target_bytes", .optional($0.targetBytes)),
            ])
          })
      ),
      ("limit_bytes", .integer(record.limitBytes)),
      ("guest_bytes", .integer(record.guestBytes)),
      (
        "pinned",
        .object(SnapshotJSON.pinnedParts(pinned))
      ),
      ("pinned_bytes", .integer(pinned.totalBytes)),
      ("victim_counted_back", .bool(record.victimCountedBack)),
      ("verdict", .string(record.verdict.rawValue)),
      ("cap_bytes", .optional(record.capBytes)),
    ])
  }

  /// The per-verdict totals since the state began (the metric's counters).
  public static func totalsJSON(_ totals: [OOMVerdict: UInt64]) -> JSONValue {
    .object(OOMVerdict.allCases.map { ($0.rawValue, .integer(totals[$0] ?? 0)) })
  }

  /// Parses one record of the state file, every field checked like the rest.
  static func parse(_ fields: StateFields) throws(SourceError) -> OOMRecord {
    let at = Int64(try fields.integer("at", StateRange.epochSeconds))
    let source = try fields.word("source", OOMRecord.sources)
    var victim: OOMVictim?
    if let object = try fields.optionalObject("victim") {
      let pid = Int32(try object.integer("pid", StateRange.pid))
      let comm = try object.optionalText("comm") ?? ""
      guard comm.utf8.count <= 64 else { throw object.fail("comm", "is longer than 64 bytes") }
      victim = OOMVictim(
        pid: pid, comm: comm,
        anonRSSBytes: try object.optionalInteger("anon_rss_bytes", StateRange.bytes),
        constraint: nil, memcg: false, kernelMicroseconds: 0)
    }
    let constraint = try fields.optionalText("constraint")
    if let constraint {
      guard !constraint.isEmpty, constraint.count <= 32,
        constraint.allSatisfy({ $0.isASCII && ($0.isLowercase || $0 == "_") })
      else { throw fields.fail("constraint", "is \"\(constraint)\"; expected a lower-case word") }
    }
    let entries = try fields.array("balloons")
    guard entries.count <= StateRange.maxBalloons else {
      throw fields.fail(
        "balloons", "has \(entries.count) entries; expected at most \(StateRange.maxBalloons)")
    }
    var balloons: [OOMBalloon] = []
    for (index, entry) in entries.enumerated() {
      let item = try StateFields(
        entry, path: fields.path, prefix: fields.prefix + "balloons[\(index)].")
      let kind = try item.kind("kind")
      balloons.append(
        OOMBalloon(
          kind: kind, name: try item.balloonName("name", kind: kind),
          currentBytes: try item.optionalInteger("current_bytes", StateRange.bytes),
          targetBytes: try item.optionalInteger("target_bytes", StateRange.bytes)))
    }
    guard let pinnedFields = try fields.optionalObject("pinned") else {
      throw fields.fail("pinned", "is missing")
    }
    let pinned = OOMPinned(
      hugetlbBytes: try pinnedFields.integer("hugetlb_bytes", StateRange.bytes),
      lockedBytes: try pinnedFields.integer("locked_bytes", StateRange.bytes),
      dmaPinnedBytes: try pinnedFields.integer("dma_pinned_bytes", StateRange.bytes),
      kernelBytes: try pinnedFields.integer("kernel_bytes", StateRange.bytes),
      unswappableBytes: try pinnedFields.integer("unswappable_bytes", StateRange.bytes))
    let verdict = OOMVerdict(
      rawValue: try fields.word("verdict", OOMVerdict.allCases.map(\.rawValue)))!
    var record = OOMRecord(
      at: at, source: source, victim: victim, balloons: balloons,
      limitBytes: try fields.integer("limit_bytes", StateRange.bytes),
      guestBytes: try fields.integer("guest_bytes", StateRange.bytes), pinned: pinned,
      judgement: OOMJudgement(
        verdict: verdict, capBytes: try fields.optionalInteger("cap_bytes", StateRange.bytes)))
    record.constraint = constraint
    record.victimCountedBack = try fields.optionalBool("victim_counted_back") ?? false
    record.readBoottime = try fields.seconds("read_boottime", StateRange.boottime)
    record.kernelMicroseconds = try fields.optionalInteger("kernel_us", StateRange.bytes)
    return record
  }

  static func parseTotals(_ fields: StateFields) throws(SourceError) -> [OOMVerdict: UInt64] {
    var totals: [OOMVerdict: UInt64] = [:]
    for verdict in OOMVerdict.allCases {
      // Zero is absent, as in a fresh state: a loaded state equals the saved one.
      let count = try fields.optionalInteger(verdict.rawValue, StateRange.releases) ?? 0
      if count > 0 { totals[verdict] = count }
    }
    return totals
  }
}
