/* One uprobe_multi link per binary: every site of a binary is attached to
 * gt_dispatch in a single link, and each site's cookie names the probe
 * program to run, which gt_dispatch tail-calls from gt_probe_programs.
 *
 * Why: releasing a uprobe_multi link waits, once per link whatever its
 * number of sites, for an RCU Tasks Trace and an SRCU grace period
 * (uprobe_unregister_sync()); a binary attached as one link instead of one
 * per probe program pays that once (bench/detach-cost.ts).
 *
 * The probe programs are inserted into gt_probe_programs by user space (by
 * fd, so a program of an object loaded separately works too). The kernel
 * lets a program tail-call only programs of its own type and expected attach
 * type (__bpf_prog_map_compatible), so every one of them is loaded for
 * uprobe_multi like this one. bpf_get_attach_cookie() still answers the
 * site's cookie in the callee: it reads the run context of the link, which a
 * tail call keeps. The kernel's run-time statistics count the whole hit
 * (callee included) under gt_dispatch, and none under the callee. */
#include "gotrail.h"

#define GT_MAX_PROBE_PROGRAMS 256

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, GT_MAX_PROBE_PROGRAMS);
	__type(key, __u32);
	__type(value, __u32);
} gt_probe_programs SEC(".maps");

SEC("uprobe.multi")
int gt_dispatch(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 id = (__u32)cookie;
	/* While a binary's link is replaced (a probe shed or restored, a switch
	 * to per-process links), the new link is attached before the old one is
	 * closed: both fire for a moment, and only the live generation's hit is
	 * passed on. A binary without valid facts is left to the callee, which
	 * ignores (or counts) its hit as it would without a dispatcher. */
	struct gt_binary_info *b = bpf_map_lookup_elem(&gt_binaries, &id);
	if (b && (b->flags & GT_BINARY_VALID) &&
	    ((cookie >> GT_COOKIE_GENERATION_SHIFT) & 0xff) != (b->link_generation & 0xff))
		return 0;
	bpf_tail_call(ctx, &gt_probe_programs, (__u32)(cookie >> GT_COOKIE_PROGRAM_SHIFT));
	gt_count(GT_COUNTER_TAIL_CALL_FAILED);
	return 0;
}
