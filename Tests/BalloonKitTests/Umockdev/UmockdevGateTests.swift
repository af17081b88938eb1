import Testing

/// Always runs: under `make test` (BALLOONCTL_REQUIRE_UMOCKDEV=1) the
/// umockdev suites must not skip silently for lack of the preload.
@Suite struct UmockdevGateTests {
  @Test func preloadPresentWhenRequired() {
    guard Umockdev.required else { return }
    #expect(
      Umockdev.preloaded,
      """
      BALLOONCTL_REQUIRE_UMOCKDEV=1 but LD_PRELOAD has no libumockdev-preload: \
      the umockdev suites were skipped. Run the tests under umockdev-wrapper.
      """)
  }
}
