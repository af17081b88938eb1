/// The members of one object of the state file, each read as untrusted
/// input: the type, the range and the text are checked, and a failure names
/// the file and the field (`balloons[0].backoff_seconds`).
public struct StateFields {
  let value: JSONValue
  let path: String
  let prefix: String

  init(_ value: JSONValue, path: String, prefix: String) throws(SourceError) {
    guard case .object = value else {
      throw .malformed(
        path, prefix.isEmpty ? "not a JSON object" : "\"\(prefix.dropLast())\" is not an object")
    }
    self.value = value
    self.path = path
    self.prefix = prefix
  }

  func fail(_ field: String, _ what: String) -> SourceError {
    .malformed(path, "\"\(prefix)\(field)\" \(what)")
  }

  /// A short rendering of a bad value for the error.
  func shown(_ value: JSONValue) -> String {
    let text = value.rendered(pretty: false)
    return text.count <= 40 ? text : String(text.prefix(40)) + "…"
  }

  func required(_ field: String) throws(SourceError) -> JSONValue {
    guard let member = value[field], !member.isNull else { throw fail(field, "is missing") }
    return member
  }

  func optional(_ field: String) -> JSONValue? {
    guard let member = value[field], !member.isNull else { return nil }
    return member
  }

  func integer(_ field: String, _ range: ClosedRange<UInt64>) throws(SourceError) -> UInt64 {
    try integer(field, required(field), range)
  }

  public func optionalInteger(_ field: String, _ range: ClosedRange<UInt64>) throws(SourceError)
    -> UInt64?
  {
    guard let member = optional(field) else { return nil }
    return try integer(field, member, range)
  }

  private func integer(_ field: String, _ member: JSONValue, _ range: ClosedRange<UInt64>)
    throws(SourceError) -> UInt64
  {
    guard case .integer(let number) = member, range.contains(number) else {
      throw fail(
        field,
        "is \(shown(member)); expected an integer from \(range.lowerBound) to \(range.upperBound)")
    }
    return number
  }

  func seconds(_ field: String, _ range: ClosedRange<Double>) throws(SourceError) -> Double {
    try seconds(field, required(field), range)
  }

  func optionalSeconds(_ field: String, _ range: ClosedRange<Double>) throws(SourceError) -> Double?
  {
    guard let member = optional(field) else { return nil }
    return try seconds(field, member, range)
  }

  private func seconds(_ field: String, _ member: JSONValue, _ range: ClosedRange<Double>)
    throws(SourceError) -> Double
  {
    // The parser yields only finite numbers; the range check keeps it so.
    guard let number = member.double, number.isFinite, range.contains(number) else {
      throw fail(
        field,
        "is \(shown(member)); expected seconds from \(Int64(range.lowerBound)) to \(Int64(range.upperBound))"
      )
    }
    return number
  }

  func bool(_ field: String) throws(SourceError) -> Bool {
    let member = try required(field)
    guard let flag = member.bool else {
      throw fail(field, "is \(shown(member)); expected true or false")
    }
    return flag
  }

  func optionalBool(_ field: String) throws(SourceError) -> Bool? {
    guard optional(field) != nil else { return nil }
    return try bool(field)
  }

  func array(_ field: String) throws(SourceError) -> [JSONValue] {
    let member = try required(field)
    guard let items = member.array else {
      throw fail(field, "is \(shown(member)); expected an array")
    }
    return items
  }

  func optionalObject(_ field: String) throws(SourceError) -> StateFields? {
    guard let member = optional(field) else { return nil }
    return try StateFields(member, path: path, prefix: prefix + field + ".")
  }

  /// One of a fixed set of words.
  func word(_ field: String, _ words: [String]) throws(SourceError) -> String {
    let member = try required(field)
    guard let text = member.string, words.contains(text) else {
      throw fail(field, "is \(shown(member)); expected one of \(words.joined(separator: ", "))")
    }
    return text
  }

  func kind(_ field: String) throws(SourceError) -> BalloonKind {
    BalloonKind(rawValue: try word(field, BalloonKind.allCases.map(\.rawValue)))!
  }

  func balloonName(_ field: String, kind: BalloonKind) throws(SourceError) -> String {
    let member = try required(field)
    guard let name = member.string, BalloonRecord.isValid(name: name, kind: kind) else {
      throw fail(field, "is \(shown(member)); not the name of a \(kind.rawValue) balloon")
    }
    return name
  }

  /// Free text (a reason): bounded, and no control characters, which a
  /// terminal showing `status` would obey.
  func text(_ field: String) throws(SourceError) -> String {
    let member = try required(field)
    return try text(field, member)
  }

  func optionalText(_ field: String) throws(SourceError) -> String? {
    guard let member = optional(field) else { return nil }
    return try text(field, member)
  }

  private func text(_ field: String, _ member: JSONValue) throws(SourceError) -> String {
    guard let text = member.string else {
      throw fail(field, "is \(shown(member)); expected a string")
    }
    guard text.utf8.count <= StateRange.maxTextBytes else {
      throw fail(field, "is longer than \(StateRange.maxTextBytes) bytes")
    }
    guard !text.unicodeScalars.contains(where: StateFields.isControl) else {
      throw fail(field, "contains a control character")
    }
    return text
  }

  func optionalSysPath(_ field: String) throws(SourceError) -> String? {
    guard let text = try optionalText(field) else { return nil }
    guard text.isEmpty || text.hasPrefix("/sys/") else {
      throw fail(field, "is \"\(text)\"; expected a path below /sys")
    }
    return text
  }

  static func isControl(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
  }
}
