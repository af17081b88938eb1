/*
 * e2emon [interval-seconds]
 *
 * The test guest's monitor: every interval (default 1 s, fractions allowed)
 * prints one line to stdout
 *   E2E-MON t=<uptime> nr_balloon_pages=.. balloon_inflate=.. balloon_deflate=..
 *     oom_kill=.. MemTotal=.. MemFree=.. MemAvailable=.. Balloon=.. Mlocked=..
 *     SwapTotal=.. SwapFree=..
 * (meminfo values in kB, vmstat values in pages, "-" when the kernel has no
 * such field, e.g. nr_balloon_pages and Balloon before 6.15).
 * A C loop instead of a shell one: under TCG a shell parsing /proc/vmstat
 * costs ~15 % of the single vCPU, which would skew the timings measured.
 * Protects itself from the OOM killer so it keeps reporting during OOM.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[65536];

static ssize_t slurp(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = 0, r;
	while (n < (ssize_t)sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
		n += r;
	close(fd);
	buf[n < 0 ? 0 : n] = '\0';
	return n;
}

/* Finds "key<sep>value" at a line start; copies the number or "-". */
static void field(const char *key, char *out, size_t outlen)
{
	size_t klen = strlen(key);
	const char *p = buf;
	while (p && *p) {
		if (strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == ':')) {
			const char *v = p + klen;
			while (*v == ' ' || *v == ':' || *v == '\t')
				v++;
			size_t i = 0;
			while (v[i] >= '0' && v[i] <= '9' && i + 1 < outlen) {
				out[i] = v[i];
				i++;
			}
			out[i] = '\0';
			if (i > 0)
				return;
			break;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	snprintf(out, outlen, "-");
}

int main(int argc, char **argv)
{
	double interval = argc > 1 ? atof(argv[1]) : 1.0;
	if (interval <= 0)
		interval = 1.0;
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "-1000", 5) < 0) { /* best effort */ }
		close(fd);
	}
	static const char *vm[] = {"nr_balloon_pages", "balloon_inflate", "balloon_deflate", "oom_kill"};
	static const char *mi[] = {"MemTotal", "MemFree", "MemAvailable", "Balloon", "Mlocked", "SwapTotal", "SwapFree"};
	char vv[4][32], mv[7][32], up[64];
	struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
	for (;;) {
		for (int i = 0; i < 4; i++) {
			if (i == 0 && slurp("/proc/vmstat") < 0)
				buf[0] = '\0';
			field(vm[i], vv[i], sizeof vv[i]);
		}
		for (int i = 0; i < 7; i++) {
			if (i == 0 && slurp("/proc/meminfo") < 0)
				buf[0] = '\0';
			field(mi[i], mv[i], sizeof mv[i]);
		}
		if (slurp("/proc/uptime") > 0)
			sscanf(buf, "%63s", up);
		else
			snprintf(up, sizeof up, "-");
		printf("E2E-MON t=%s nr_balloon_pages=%s balloon_inflate=%s balloon_deflate=%s oom_kill=%s "
		       "MemTotal=%s MemFree=%s MemAvailable=%s Balloon=%s Mlocked=%s SwapTotal=%s SwapFree=%s\n",
		       up, vv[0], vv[1], vv[2], vv[3], mv[0], mv[1], mv[2], mv[3], mv[4], mv[5], mv[6]);
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
}
