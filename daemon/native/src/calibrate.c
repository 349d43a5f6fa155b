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

/* The probed function, probed as gotrail probes a Go function: its entry on
 * an instruction the kernel's x86 uprobe emulates (a PUSH, as Go's PUSHQ BP
 * or the stack check's branch where gotrail's entry probes sit), its return
 * on the RET (gotrail_calibration_noop_ret), which the kernel single-steps
 * out of line. The two cost very differently on some hosts (measured here:
 * 0.5 against 16 µs per hit), so a call takes one hit of each. Written in
 * assembly so that the instructions are these, whatever the compiler. */
__attribute__((naked, noinline, used, visibility("default"))) void gotrail_calibration_noop(void)
{
	__asm__ volatile("push %rbp\n\t"
			 "pop %rbp\n\t"
			 ".globl gotrail_calibration_noop_ret\n"
			 "gotrail_calibration_noop_ret:\n\t"
			 "ret\n");
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
