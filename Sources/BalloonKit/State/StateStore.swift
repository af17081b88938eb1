public import SystemPackage

/// Reads and atomically writes the state file, `<directory>/state.json`.
/// The directory must be a real directory (not a symlink) that no other user
/// can write (see CheckedDirectory).
public struct StateStore: Sendable {
  public let directory: FilePath
  public static let fileName = "state.json"
  public var file: FilePath { directory.appending(StateStore.fileName) }

  public static let defaultDirectory: FilePath = "/run/balloonctl"
  /// A state for a handful of balloons is a few KiB.
  public static let sizeLimit = 256 << 10

  public init(directory: FilePath) { self.directory = directory }

  /// nil when no daemon has written a state (first start, or after reboot).
  /// Read-only: a bad file or directory is an error, and nothing is moved.
  public func load() throws(SourceError) -> DaemonState? {
    guard let dir = try CheckedDirectory.open(directory, owners: .usOrRoot, create: false),
      let bytes = try dir.read(StateStore.fileName, owners: .usOrRoot, limit: StateStore.sizeLimit)
    else { return nil }
    return try DaemonState.parse(bytes, path: file.string)
  }

  /// What the daemon starts from.
  public struct Resume: Sendable {
    /// The previous run's state; nil on a first start or when it was unusable.
    public var state: DaemonState?
    /// Why the state file was unusable (to log at error level).
    public var problem: SourceError?
    /// Where the unusable file was moved.
    public var movedTo: FilePath?
  }

  /// The state to resume at daemon start. A state file that is not one
  /// (corrupt content, a number out of range, a FIFO, a symlink, a file of
  /// another user) must not stop the daemon, or it would crash-loop: with
  /// `moveAside` (the caller holds the lock) it is renamed to
  /// `state.json.corrupt-<epoch seconds>` in the same directory and the run
  /// starts clean. A state directory that is not safe to use, or an I/O
  /// error, still throws: the daemon cannot keep its state there either.
  public func loadForResume(moveAside: Bool) throws(SourceError) -> Resume {
    guard let dir = try CheckedDirectory.open(directory, owners: .usOrRoot, create: false) else {
      return Resume()
    }
    let problem: SourceError
    do {
      guard
        let bytes = try dir.read(
          StateStore.fileName, owners: .usOrRoot, limit: StateStore.sizeLimit)
      else { return Resume() }
      return Resume(state: try DaemonState.parse(bytes, path: file.string))
    } catch {
      if case .unreadable = error.problem { throw error }
      problem = error
    }
    guard moveAside else { return Resume(problem: problem) }
    let moved = try dir.moveAside(
      StateStore.fileName, to: "\(StateStore.fileName).corrupt-\(Clock.wall())")
    return Resume(problem: problem, movedTo: moved)
  }

  /// Written to a new temporary file in the same directory, fsynced and
  /// renamed over the old one: a crash at any point leaves either the old or
  /// the new state (CheckedDirectory.replace).
  public func save(_ state: DaemonState) throws(SourceError) {
    let dir = try openForWriting()
    try dir.replace(StateStore.fileName, with: Array((state.json().rendered() + "\n").utf8))
  }

  /// Creates the directory and any missing parents (`mkdir -p`, mode 0755)
  /// and checks it: a real directory of ours that no one else can write.
  public func ensureDirectory() throws(SourceError) {
    _ = try openForWriting()
  }

  func openForWriting() throws(SourceError) -> CheckedDirectory {
    guard let dir = try CheckedDirectory.open(directory, owners: .us, create: true) else {
      throw SourceError(path: directory.string, .unwritable(.noSuchFileOrDirectory))
    }
    return dir
  }
}
