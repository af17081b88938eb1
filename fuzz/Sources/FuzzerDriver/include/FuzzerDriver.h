#ifndef BALLOONCTL_FUZZER_DRIVER_H
#define BALLOONCTL_FUZZER_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer on this executable's `LLVMFuzzerTestOneInput` with the
/// command line's flags. The executable's Swift `main` calls it: SwiftPM links
/// every executable target with `main` bound to the target's own entry point,
/// so libFuzzer's `main` is never used.
int balloonctl_fuzzer_main(int argc, char **argv);

#endif
