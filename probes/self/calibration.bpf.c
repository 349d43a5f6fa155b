/* A program that does nothing. Attached to a no-op function of a helper
 * process (daemon/native/src/calibrate.c), it lets the agent measure what a
 * uprobe hit costs on this host without any work of gotrail's (the trap,
 * the kernel's uprobe dispatch and an empty BPF run); `npm run bench`
 * attaches it at the agent's own sites to measure the kernel's floor. */
#include "gotrail.h"

SEC("uprobe.multi")
int gt_calibration_empty(struct pt_regs *ctx)
{
	return 0;
}
