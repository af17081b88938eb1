/*
 * floor: the cheapest reasonable reader of the two files balloonctl reads on
 * every tick, to measure the daemon against.
 *
 * Like earlyoom's parse_meminfo and like the daemon's KeptOpenFile: each file
 * is opened once and kept open; every iteration preads it from offset 0 into a
 * static buffer (procfs regenerates the content on each read from 0), then
 * scans it line by line and parses the keys the daemon needs (a memcmp at
 * line start, then strtoull). No allocation, no validation beyond that.
 *
 * Usage: floor [-w WARMUP] [-b BATCHES] [-n PER_BATCH] [-p PROC] meminfo|vmstat|both ...
 *        floor [-i INTERVAL_MS] [-b COUNT] cold
 *        floor [-i INTERVAL_MS] loop|loop-meminfo|loop-daemon|loop-vmstat|sleep
 *
 * meminfo, vmstat, both: the cost per read. WARMUP untimed iterations, then
 * BATCHES batches of PER_BATCH, each timed with CLOCK_MONOTONIC and
 * CLOCK_THREAD_CPUTIME_ID. Prints `key value` lines (the runner collects them):
 *   floor.<mode>.iterations       timed iterations
 *   floor.<mode>.wall_ns_median   ns of wall time per iteration, median of batch means
 *   floor.<mode>.wall_ns_p99      99th percentile (nearest rank) of batch means
 *   floor.<mode>.cpu_ns_median    ns of this thread's CPU (user + kernel) per iteration
 *   floor.<mode>.cpu_ns_p99
 *
 * cold: COUNT single reads of both files, each after sleeping INTERVAL_MS in
 * poll(), timed alone: what a read costs an idle daemon whose caches cooled.
 *   floor.cold.cpu_ns_median, floor.cold.cpu_ns_p90, floor.cold.wall_ns_median
 *
 * loop: an idle C daemon, the floor for CPU per idle second: one thread that
 * sleeps in poll() for the interval, then reads both files, until SIGTERM or
 * SIGINT. loop-meminfo, loop-vmstat: reading one file only. loop-daemon:
 * meminfo every tick and vmstat every 10th, as balloonctl run reads them when
 * no balloon it acts on is sized by vmstat. sleep: no reads
 * (the cost of waking up alone).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define USAGE                                                                                   \
	"usage: floor [-w WARMUP] [-b BATCHES] [-n PER_BATCH] [-p PROC] meminfo|vmstat|both ...\n" \
	"       floor [-i INTERVAL_MS] [-b COUNT] cold\n"                                              \
	"       floor [-i INTERVAL_MS] loop|loop-meminfo|loop-daemon|loop-vmstat|sleep\n"

/* The keys MeminfoReader and VmstatReader keep (Sources/BalloonKit/Readers). */
static const char *const meminfo_keys[] = {
	"MemTotal", "MemFree", "MemAvailable", "Unevictable", "Mlocked", "SwapTotal",
	"SwapFree", "AnonPages", "Shmem", "SUnreclaim", "KernelStack", "PageTables",
	"SecPageTables", "Percpu", "Balloon", "HugePages_Total", "Hugepagesize", "Hugetlb",
};
static const char *const vmstat_keys[] = {
	"nr_balloon_pages", "balloon_inflate", "balloon_deflate",
	"nr_foll_pin_acquired", "nr_foll_pin_released", "oom_kill",
};
#define NMEM (sizeof meminfo_keys / sizeof *meminfo_keys)
#define NVM (sizeof vmstat_keys / sizeof *vmstat_keys)

static size_t meminfo_len[NMEM], vmstat_len[NVM];
static unsigned long long meminfo_val[NMEM], vmstat_val[NVM];
static volatile unsigned long long sink;

static int meminfo_fd = -1, vmstat_fd = -1;
static char meminfo_buf[8192], vmstat_buf[16384];

/* pread from 0 until EOF (or the buffer is full); NUL-terminates. */
static ssize_t slurp(int fd, char *buf, size_t cap)
{
	size_t total = 0;
	for (;;) {
		ssize_t n = pread(fd, buf + total, cap - 1 - total, (off_t)total);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		total += (size_t)n;
		if (n == 0 || total >= cap - 1)
			break;
	}
	buf[total] = '\0';
	return (ssize_t)total;
}

/* Lines are "Key:   123 kB" (meminfo, sep ':') or "key 123" (vmstat, sep ' '). */
static int parse(const char *buf, const char *const *keys, const size_t *lens, size_t nkeys,
		 unsigned long long *vals, char sep)
{
	int found = 0;
	const char *line = buf;
	while (*line) {
		for (size_t k = 0; k < nkeys; k++) {
			if (line[0] == keys[k][0] && memcmp(line, keys[k], lens[k]) == 0 &&
			    line[lens[k]] == sep) {
				vals[k] = strtoull(line + lens[k] + 1, NULL, 10);
				found++;
				break;
			}
		}
		const char *nl = strchr(line, '\n');
		if (!nl)
			break;
		line = nl + 1;
	}
	return found;
}

static void read_meminfo(void)
{
	if (slurp(meminfo_fd, meminfo_buf, sizeof meminfo_buf) <= 0) {
		perror("floor: /proc/meminfo");
		exit(1);
	}
	sink += (unsigned long long)parse(meminfo_buf, meminfo_keys, meminfo_len, NMEM, meminfo_val, ':');
	sink += meminfo_val[0];
}

static void read_vmstat(void)
{
	if (slurp(vmstat_fd, vmstat_buf, sizeof vmstat_buf) <= 0) {
		perror("floor: /proc/vmstat");
		exit(1);
	}
	sink += (unsigned long long)parse(vmstat_buf, vmstat_keys, vmstat_len, NVM, vmstat_val, ' ');
	sink += vmstat_val[0];
}

static void both(void)
{
	read_meminfo();
	read_vmstat();
}

/* What balloonctl run reads when nothing needs vmstat every tick: meminfo
 * every tick, vmstat every 10th (Controller.vmstatEveryTicks). */
static void like_daemon(void)
{
	static unsigned tick;
	read_meminfo();
	if (tick++ % 10 == 0)
		read_vmstat();
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, int n, double p)
{
	int rank = (int)(p / 100.0 * n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

static void run(const char *mode, void (*body)(void), int warmup, int batches, int per_batch)
{
	double *wall = calloc((size_t)batches, sizeof *wall);
	double *cpu = calloc((size_t)batches, sizeof *cpu);
	if (!wall || !cpu) {
		perror("floor: calloc");
		exit(1);
	}
	for (int i = 0; i < warmup; i++)
		body();
	for (int b = 0; b < batches; b++) {
		uint64_t w0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		for (int i = 0; i < per_batch; i++)
			body();
		uint64_t c1 = now_ns(CLOCK_THREAD_CPUTIME_ID), w1 = now_ns(CLOCK_MONOTONIC);
		wall[b] = (double)(w1 - w0) / per_batch;
		cpu[b] = (double)(c1 - c0) / per_batch;
	}
	qsort(wall, (size_t)batches, sizeof *wall, cmp_double);
	qsort(cpu, (size_t)batches, sizeof *cpu, cmp_double);
	printf("floor.%s.iterations %d\n", mode, batches * per_batch);
	printf("floor.%s.wall_ns_median %.0f\n", mode, percentile(wall, batches, 50));
	printf("floor.%s.wall_ns_p99 %.0f\n", mode, percentile(wall, batches, 99));
	printf("floor.%s.cpu_ns_median %.0f\n", mode, percentile(cpu, batches, 50));
	printf("floor.%s.cpu_ns_p99 %.0f\n", mode, percentile(cpu, batches, 99));
	fflush(stdout);
	free(wall);
	free(cpu);
}

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/*
 * cold: the cost of one read of both files after sleeping INTERVAL_MS, as an
 * idle daemon pays it (caches and TLBs cooled down by the sleep). Prints the
 * median and p90 of BATCHES single reads.
 */
static void cold(int interval_ms, int count)
{
	double *cpu = calloc((size_t)count, sizeof *cpu);
	double *wall = calloc((size_t)count, sizeof *wall);
	if (!cpu || !wall) {
		perror("floor: calloc");
		exit(1);
	}
	both();
	for (int i = 0; i < count; i++) {
		poll(NULL, 0, interval_ms);
		uint64_t w0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		both();
		uint64_t c1 = now_ns(CLOCK_THREAD_CPUTIME_ID), w1 = now_ns(CLOCK_MONOTONIC);
		cpu[i] = (double)(c1 - c0);
		wall[i] = (double)(w1 - w0);
	}
	qsort(cpu, (size_t)count, sizeof *cpu, cmp_double);
	qsort(wall, (size_t)count, sizeof *wall, cmp_double);
	printf("floor.cold.reads %d\n", count);
	printf("floor.cold.interval_ms %d\n", interval_ms);
	printf("floor.cold.cpu_ns_median %.0f\n", percentile(cpu, count, 50));
	printf("floor.cold.cpu_ns_p90 %.0f\n", percentile(cpu, count, 90));
	printf("floor.cold.wall_ns_median %.0f\n", percentile(wall, count, 50));
	fflush(stdout);
	free(cpu);
	free(wall);
}

/* The idle daemon's floor: sleep in poll() for the interval, then (maybe) read. */
static void idle_loop(int interval_ms, void (*body)(void))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	while (!stop) {
		poll(NULL, 0, interval_ms);
		if (body && !stop)
			body();
	}
}

static int open_kept(const char *proc, const char *name)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", proc, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "floor: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	int warmup = 1000, batches = 200, per_batch = 50, interval_ms = 1000, opt;
	const char *proc = "/proc";
	while ((opt = getopt(argc, argv, "w:b:n:p:i:")) != -1) {
		switch (opt) {
		case 'w': warmup = atoi(optarg); break;
		case 'b': batches = atoi(optarg); break;
		case 'n': per_batch = atoi(optarg); break;
		case 'p': proc = optarg; break;
		case 'i': interval_ms = atoi(optarg); break;
		default: fputs(USAGE, stderr); return 2;
		}
	}
	if (optind >= argc || warmup < 0 || batches < 1 || per_batch < 1 || interval_ms < 1) {
		fputs(USAGE, stderr);
		return 2;
	}
	for (size_t k = 0; k < NMEM; k++)
		meminfo_len[k] = strlen(meminfo_keys[k]);
	for (size_t k = 0; k < NVM; k++)
		vmstat_len[k] = strlen(vmstat_keys[k]);
	meminfo_fd = open_kept(proc, "meminfo");
	vmstat_fd = open_kept(proc, "vmstat");

	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "meminfo") == 0)
			run("meminfo", read_meminfo, warmup, batches, per_batch);
		else if (strcmp(argv[i], "vmstat") == 0)
			run("vmstat", read_vmstat, warmup, batches, per_batch);
		else if (strcmp(argv[i], "both") == 0)
			run("both", both, warmup, batches, per_batch);
		else if (strcmp(argv[i], "cold") == 0)
			cold(interval_ms, batches);
		else if (strcmp(argv[i], "loop") == 0)
			idle_loop(interval_ms, both);
		else if (strcmp(argv[i], "loop-meminfo") == 0)
			idle_loop(interval_ms, read_meminfo);
		else if (strcmp(argv[i], "loop-daemon") == 0)
			idle_loop(interval_ms, like_daemon);
		else if (strcmp(argv[i], "loop-vmstat") == 0)
			idle_loop(interval_ms, read_vmstat);
		else if (strcmp(argv[i], "sleep") == 0)
			idle_loop(interval_ms, NULL);
		else {
			fprintf(stderr, "floor: unknown mode '%s'\n" USAGE, argv[i]);
			return 2;
		}
	}
	return 0;
}
