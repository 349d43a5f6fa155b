/* gotrail-calibrate: the helper process in which the agent measures what a
 * uprobe hit costs on this host (daemon/agent/overhead.ts). It calls a
 * no-op function in a loop and reports the CPU time this thread spent, so
 * that time the scheduler gives to other processes does not count (the
 * trap and the BPF run are charged to the thread that hits the probe).
 *
 * Protocol, one line each way: the agent writes a call count N ("100000\n");
 * the helper calls gotrail_calibration_noop N times and answers with the
 * thread CPU time it took, in nanoseconds ("812345\n"). EOF ends it. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The probed function: kept out of line, kept in .symtab, and doing nothing
 * the compiler could remove the call for. */
__attribute__((noinline, used, visibility("default"))) void gotrail_calibration_noop(void)
{
	__asm__ volatile("" ::: "memory");
}

static long long thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(void)
{
	char line[64];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		long long n = atoll(line);
		if (n <= 0 || n > 100000000LL) {
			printf("error: call count out of range\n");
			continue;
		}
		long long t0 = thread_cpu_ns();
		for (long long i = 0; i < n; i++)
			gotrail_calibration_noop();
		printf("%lld\n", thread_cpu_ns() - t0);
	}
	return 0;
}
