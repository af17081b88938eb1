import BalloonKit
import SystemPackage
import Testing

@Suite("SelfProtection: which start-up pages are dropped before the lock")
struct SelfProtectionTests {
  /// /proc/PID/smaps of `sleep` on 6.18, with the keys between the header and
  /// Anonymous trimmed (the parser reads only those two), plus the vDSO.
  static let smaps = """
    563527f3d000-563527f3f000 r--p 00000000 fe:00 254651                     /usr/bin/sleep
    Size:                  8 kB
    Rss:                   8 kB
    Anonymous:             0 kB
    Locked:                0 kB
    VmFlags: rd mr mw me 
    563527f3f000-563527f44000 r-xp 00002000 fe:00 254651                     /usr/bin/sleep
    Size:                 20 kB
    Rss:                  20 kB
    Anonymous:             0 kB
    Locked:                0 kB
    VmFlags: rd ex mr mw me 
    563527f46000-563527f47000 r--p 00009000 fe:00 254651                     /usr/bin/sleep
    Size:                  4 kB
    Rss:                   4 kB
    Anonymous:             4 kB
    Locked:                0 kB
    VmFlags: rd mr mw me ac 
    563527f47000-563527f48000 rw-p 0000a000 fe:00 254651                     /usr/bin/sleep
    Size:                  4 kB
    Rss:                   4 kB
    Anonymous:             4 kB
    Locked:                0 kB
    VmFlags: rd wr mr mw me ac 
    56353a54f000-56353a570000 rw-p 00000000 00:00 0                          [heap]
    Size:                132 kB
    Rss:                  16 kB
    Anonymous:            16 kB
    Locked:                0 kB
    VmFlags: rd wr mr mw me ac 
    7efdc5085000-7efdc50dc000 r--p 00000000 fe:00 323409                     /usr/lib/locale/C.utf8/LC_CTYPE
    Size:                348 kB
    Rss:                 128 kB
    Anonymous:             0 kB
    Locked:                0 kB
    VmFlags: rd mr mw me 
    7ffd6a3f1000-7ffd6a3f3000 r-xp 00000000 00:00 0                          [vdso]
    Size:                  8 kB
    Rss:                   4 kB
    Anonymous:             0 kB
    Locked:                0 kB
    VmFlags: rd ex mr mw me de sd 

    """

  @Test("file-backed mappings only, with their private copies and whether writable")
  func fileBacked() {
    let mappings = SelfProtection.fileMappings(smaps: Array(Self.smaps.utf8))
    #expect(
      mappings == [
        .init(
          range: 0x5635_27f3_d000..<0x5635_27f3_f000, writable: false, inode: 254651,
          anonymousKiB: 0),
        .init(
          range: 0x5635_27f3_f000..<0x5635_27f4_4000, writable: false, inode: 254651,
          anonymousKiB: 0),
        // The RELRO page: read-only now, but a private copy (relocated): never
        // DONTNEED, which would bring back the file's unrelocated bytes.
        .init(
          range: 0x5635_27f4_6000..<0x5635_27f4_7000, writable: false, inode: 254651,
          anonymousKiB: 4),
        .init(
          range: 0x5635_27f4_7000..<0x5635_27f4_8000, writable: true, inode: 254651,
          anonymousKiB: 4),
        .init(
          range: 0x7efd_c508_5000..<0x7efd_c50d_c000, writable: false, inode: 323409,
          anonymousKiB: 0),
      ])
  }

  @Test("a mapping whose Anonymous line is missing or malformed is left out, not guessed")
  func malformed() {
    let text = """
      563527f3d000-563527f3f000 r--p 00000000 fe:00 254651                     /usr/bin/sleep
      Anonymous:             x kB
      563527f3f000-563527f44000 r-xp 00002000 fe:00 254651                     /usr/bin/sleep
      Size:                 20 kB
      563527f46000-563527f47000 r--p 00009000 fe:00 254651                     /usr/bin/sleep
      Anonymous:             4 MB
      5635zzf47000-563527f48000 rw-p 0000a000 fe:00 254651                     /usr/bin/sleep
      Anonymous:             0 kB
      563527f48000-563527f47000 rw-p 0000a000 fe:00 254651                     /usr/bin/sleep
      Anonymous:             0 kB
      7efdc5085000-7efdc50dc000 r--p 00000000 fe:00 323409                     /usr/lib/locale/C.utf8/LC_CTYPE
      Anonymous:             0 kB

      """
    let mappings = SelfProtection.fileMappings(smaps: Array(text.utf8))
    #expect(mappings.map(\.inode) == [323409])
    #expect(SelfProtection.fileMappings(smaps: []).isEmpty)
    #expect(SelfProtection.fileMappings(smaps: Array("\n\n-\n".utf8)).isEmpty)
  }

  @Test("this process's own smaps: its executable's text is found, read-only and unmodified")
  func live() throws {
    let smaps = try SystemFile.readRequired("/proc/self/smaps")
    let mappings = SelfProtection.fileMappings(smaps: smaps)
    let text = UInt(
      bitPattern: unsafeBitCast(Self.marker as @convention(c) () -> Void, to: Int.self))
    let holding = mappings.first { $0.range.contains(text) }
    #expect(holding != nil, "no file-backed mapping holds this test's own code")
    #expect(holding?.writable == false)
    #expect(holding?.anonymousKiB == 0)
  }

  static let marker: @convention(c) () -> Void = {}
}
