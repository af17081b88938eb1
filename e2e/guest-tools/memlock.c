/*
 * memlock MiB [seconds]
 *
 * Maps MiB of anonymous memory, mlock()s it (which faults every page in and
 * pins it), prints "MEMLOCK-OK mib=N pid=P" and holds it: forever, or for
 * `seconds` when given. Stands for a process with pinned memory (a database
 * with locked buffers, a DPDK/RDMA application) in the end-to-end tests.
 * On failure prints "MEMLOCK-FAIL ..." and exits 1.
 * Built with gcc -static; runs inside the QEMU test guest only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: memlock MiB [seconds]\n");
		return 2;
	}
	char *end;
	unsigned long mib = strtoul(argv[1], &end, 10);
	if (*end != '\0' || mib == 0) {
		fprintf(stderr, "memlock: bad size '%s'\n", argv[1]);
		return 2;
	}
	long seconds = argc > 2 ? strtol(argv[2], NULL, 10) : -1;
	size_t len = (size_t)mib << 20;

	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		printf("MEMLOCK-FAIL mmap mib=%lu errno=%d (%s)\n", mib, errno, strerror(errno));
		return 1;
	}
	/* Touch first so the pages are real anonymous pages, then pin them. */
	long page = sysconf(_SC_PAGESIZE);
	for (size_t off = 0; off < len; off += (size_t)page)
		p[off] = (char)(off >> 12);
	if (mlock(p, len) != 0) {
		printf("MEMLOCK-FAIL mlock mib=%lu errno=%d (%s)\n", mib, errno, strerror(errno));
		return 1;
	}
	printf("MEMLOCK-OK mib=%lu pid=%d\n", mib, (int)getpid());
	fflush(stdout);
	if (seconds < 0) {
		for (;;)
			pause();
	}
	sleep((unsigned)seconds);
	printf("MEMLOCK-DONE mib=%lu\n", mib);
	return 0;
}
