/* Linux interfaces Swift's Glibc module does not export. */
#include <sys/signalfd.h>
#include <malloc.h>
