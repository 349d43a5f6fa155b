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

/* The probed function, with one instruction of each kind the kernel's x86
 * uprobe code treats apart: its entry is a PUSH, which the kernel emulates
 * (as Go's PUSHQ BP, a branch or a direct CALL where gotrail probes), its
 * RET (gotrail_calibration_noop_ret) one it single-steps out of line, a
 * second trap (as at gotrail's return sites). The two cost very differently
 * on some hosts (measured on a Firecracker VM: 0.5 against 16 µs per hit),
 * so the agent probes each alone and prices a probe site by its kind.
 * Written in assembly so that the instructions are these, whatever the
 * compiler. */
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
