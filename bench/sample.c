/*
 * sample: CPU and memory of running processes over a wall-clock window.
 *
 * Usage: sample SECONDS LABEL=PID [LABEL=PID ...]
 *
 * CPU is read from each process's CPU-time clock (clock_getcpuclockid: the
 * kernel's sum_exec_runtime of every thread, including threads that exited
 * during the window), exact to the nanosecond, unlike utime+stime in
 * /proc/PID/stat (USER_HZ = 100 ticks). Wake-ups are the voluntary context
 * switches of all live threads (/proc/PID/task/TID/status), memory is VmRSS,
 * RssAnon and RssFile from /proc/PID/status at the start and the end.
 *
 * The working set: at the start it writes 1 to /proc/PID/clear_refs (clears
 * the accessed bits of the process's pages; nothing else changes) and at the
 * end reads Referenced from /proc/PID/smaps_rollup, i.e. the memory the
 * process touched during the window (code and data): what a memory-starved
 * guest must keep resident, or fault back in, for every idle tick.
 *
 * Prints `key value` lines, per LABEL:
 *   LABEL.cpu_ns             CPU over the window
 *   LABEL.wall_ns            length of the window
 *   LABEL.cpu_us_per_s       µs of CPU per wall second
 *   LABEL.wakeups_per_s      voluntary context switches per second (all threads)
 *   LABEL.threads            threads at the end
 *   LABEL.{vmrss,rssanon,rssfile}_kib_{start,end}
 *   LABEL.touched_kib        Referenced at the end (pages touched in the window)
 *   LABEL.vmlck_kib          VmLck at the end: the size of its locked mappings
 *                            (with MCL_ONFAULT, not how much of them is resident)
 *   LABEL.locked_kib         Σ Rss of its mappings flagged `lo` in
 *                            /proc/PID/smaps at the end: the resident pages it
 *                            keeps locked, which count in the guest's Mlocked
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAXP 8

struct proc {
	const char *label;
	pid_t pid;
	clockid_t clock;
	uint64_t cpu0, cpu1, wall0, wall1;
	unsigned long long vcs0, vcs1;
	long rss[2], anon[2], file[2], touched, vmlck, locked;
	int threads;
};

static uint64_t ns(clockid_t clock, int *ok)
{
	struct timespec ts;
	if (clock_gettime(clock, &ts) != 0) {
		if (ok)
			*ok = 0;
		return 0;
	}
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The value of "Key:" in a /proc status file, or -1. */
static long long status_field(const char *path, const char *key)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[512];
	size_t len = strlen(key);
	long long value = -1;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, key, len) == 0 && line[len] == ':') {
			value = strtoll(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return value;
}

/* Σ voluntary context switches over live threads; *threads gets their number. */
static unsigned long long voluntary(pid_t pid, int *threads)
{
	char dir[64], path[384];
	snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	unsigned long long sum = 0;
	int n = 0;
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "%s/%s/status", dir, e->d_name);
		long long v = status_field(path, "voluntary_ctxt_switches");
		if (v >= 0) {
			sum += (unsigned long long)v;
			n++;
		}
	}
	closedir(d);
	if (threads)
		*threads = n;
	return sum;
}

static void memory(struct proc *p, int i)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/status", (int)p->pid);
	p->rss[i] = (long)status_field(path, "VmRSS");
	p->anon[i] = (long)status_field(path, "RssAnon");
	p->file[i] = (long)status_field(path, "RssFile");
}

/* Σ Rss of the mappings whose VmFlags include "lo" (VM_LOCKED), or -1. */
static long locked_rss(pid_t pid)
{
	char path[64], line[1024];
	snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long sum = 0, rss = 0;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "Rss:", 4) == 0)
			rss = strtol(line + 4, NULL, 10);
		else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " lo"))
			sum += rss;
	}
	fclose(f);
	return sum;
}

static void clear_refs(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
	FILE *f = fopen(path, "we");
	if (!f || fputs("1", f) < 0 || fclose(f) != 0)
		fprintf(stderr, "sample: %s: %s (working set not measured)\n", path, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: sample SECONDS LABEL=PID [LABEL=PID ...]\n");
		return 2;
	}
	double seconds = atof(argv[1]);
	int n = argc - 2;
	if (seconds <= 0 || n > MAXP) {
		fprintf(stderr, "sample: need SECONDS > 0 and at most %d processes\n", MAXP);
		return 2;
	}
	struct proc procs[MAXP];
	memset(procs, 0, sizeof procs);
	for (int i = 0; i < n; i++) {
		char *eq = strchr(argv[i + 2], '=');
		if (!eq) {
			fprintf(stderr, "sample: '%s' is not LABEL=PID\n", argv[i + 2]);
			return 2;
		}
		*eq = '\0';
		procs[i].label = argv[i + 2];
		procs[i].pid = (pid_t)atoi(eq + 1);
		if (clock_getcpuclockid(procs[i].pid, &procs[i].clock) != 0) {
			fprintf(stderr, "sample: no CPU clock for pid %d (%s)\n", (int)procs[i].pid, procs[i].label);
			return 1;
		}
	}
	for (int i = 0; i < n; i++) {
		int ok = 1;
		memory(&procs[i], 0);
		clear_refs(procs[i].pid);
		procs[i].vcs0 = voluntary(procs[i].pid, NULL);
		procs[i].wall0 = ns(CLOCK_MONOTONIC, NULL);
		procs[i].cpu0 = ns(procs[i].clock, &ok);
		if (!ok) {
			fprintf(stderr, "sample: %s (pid %d) is gone\n", procs[i].label, (int)procs[i].pid);
			return 1;
		}
	}
	struct timespec sleep = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
	while (nanosleep(&sleep, &sleep) != 0 && errno == EINTR) {
	}
	for (int i = 0; i < n; i++) {
		int ok = 1;
		procs[i].cpu1 = ns(procs[i].clock, &ok);
		procs[i].wall1 = ns(CLOCK_MONOTONIC, NULL);
		if (!ok) {
			fprintf(stderr, "sample: %s (pid %d) exited during the window\n", procs[i].label,
				(int)procs[i].pid);
			return 1;
		}
		procs[i].vcs1 = voluntary(procs[i].pid, &procs[i].threads);
		memory(&procs[i], 1);
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)procs[i].pid);
		procs[i].touched = (long)status_field(path, "Referenced");
		snprintf(path, sizeof path, "/proc/%d/status", (int)procs[i].pid);
		procs[i].vmlck = (long)status_field(path, "VmLck");
		procs[i].locked = locked_rss(procs[i].pid);
	}
	for (int i = 0; i < n; i++) {
		struct proc *p = &procs[i];
		double wall = (double)(p->wall1 - p->wall0), cpu = (double)(p->cpu1 - p->cpu0);
		printf("%s.cpu_ns %.0f\n", p->label, cpu);
		printf("%s.wall_ns %.0f\n", p->label, wall);
		printf("%s.cpu_us_per_s %.2f\n", p->label, cpu / 1e3 / (wall / 1e9));
		printf("%s.wakeups_per_s %.2f\n", p->label, (double)(p->vcs1 - p->vcs0) / (wall / 1e9));
		printf("%s.threads %d\n", p->label, p->threads);
		printf("%s.vmrss_kib_start %ld\n%s.vmrss_kib_end %ld\n", p->label, p->rss[0], p->label, p->rss[1]);
		printf("%s.rssanon_kib_start %ld\n%s.rssanon_kib_end %ld\n", p->label, p->anon[0], p->label, p->anon[1]);
		printf("%s.rssfile_kib_start %ld\n%s.rssfile_kib_end %ld\n", p->label, p->file[0], p->label, p->file[1]);
		printf("%s.touched_kib %ld\n", p->label, p->touched);
		printf("%s.vmlck_kib %ld\n%s.locked_kib %ld\n", p->label, p->vmlck, p->label, p->locked);
	}
	return 0;
}
