/*
 * memhog MiB [seconds]
 *
 * Allocates MiB of anonymous memory and touches every page (a workload that
 * needs memory), printing "MEMHOG-PROGRESS mib=X" every 32 MiB and
 * "MEMHOG-OK mib=N ms=T" once all of it is resident; then holds it for
 * `seconds` (default 0), prints "MEMHOG-DONE" and exits 0.
 * If the kernel OOM-kills it, the shell sees exit status 137 (SIGKILL) and the
 * last progress line tells how far it got. A failed mmap prints
 * "MEMHOG-FAIL ..." and exits 1.
 * Built with gcc -static; runs inside the QEMU test guest only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: memhog MiB [seconds]\n");
		return 2;
	}
	char *end;
	unsigned long mib = strtoul(argv[1], &end, 10);
	if (*end != '\0' || mib == 0) {
		fprintf(stderr, "memhog: bad size '%s'\n", argv[1]);
		return 2;
	}
	long seconds = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
	size_t len = (size_t)mib << 20;
	long long t0 = now_ms();

	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		printf("MEMHOG-FAIL mmap mib=%lu errno=%d (%s)\n", mib, errno, strerror(errno));
		return 1;
	}
	long page = sysconf(_SC_PAGESIZE);
	for (size_t off = 0; off < len; off += (size_t)page) {
		p[off] = (char)(off >> 12);
		if (((off + (size_t)page) & ((32UL << 20) - 1)) == 0) {
			printf("MEMHOG-PROGRESS mib=%zu\n", (off + (size_t)page) >> 20);
			fflush(stdout);
		}
	}
	printf("MEMHOG-OK mib=%lu ms=%lld\n", mib, now_ms() - t0);
	fflush(stdout);
	if (seconds > 0)
		sleep((unsigned)seconds);
	printf("MEMHOG-DONE mib=%lu\n", mib);
	return 0;
}
