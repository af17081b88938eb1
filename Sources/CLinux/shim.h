/* Linux interfaces Swift's Glibc module does not export. */
#include <sys/signalfd.h>
#include <malloc.h>

/* perf_event_open has no libc wrapper, and Swift cannot call the variadic
   syscall() or ioctl(): one call site each (Core/PerfEvent.swift). */
#include <linux/perf_event.h>
#include <asm/unistd.h>
/* Declared here rather than by including <unistd.h> and <sys/ioctl.h>: this
   module would then own glibc's declarations, and files that import only
   Glibc would lose them (_SC_PAGESIZE). */
extern long syscall(long number, ...);
extern int ioctl(int fd, unsigned long request, ...);

static inline int balloonctl_perf_event_open(struct perf_event_attr *attr, int pid, int cpu,
                                             int group_fd, unsigned long flags) {
  return (int)syscall(__NR_perf_event_open, attr, pid, cpu, group_fd, flags);
}

static inline int balloonctl_perf_event_enable(int fd) {
  return ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
}

/* The ring's head is written by the kernel, the tail by us (the order
   perf_event_mmap_page documents in linux/perf_event.h). */
static inline unsigned long long balloonctl_load_acquire_u64(const unsigned long long *p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void balloonctl_store_release_u64(unsigned long long *p, unsigned long long v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
