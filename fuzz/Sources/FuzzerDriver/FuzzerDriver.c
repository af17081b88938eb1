#include "FuzzerDriver.h"

// libFuzzer's entry for a program that has its own main (compiler-rt
// FuzzerInterface.h), and the callback each fuzzer target defines.
int LLVMFuzzerRunDriver(int *argc, char ***argv,
                        int (*test_one_input)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int balloonctl_fuzzer_main(int argc, char **argv) {
  return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}
