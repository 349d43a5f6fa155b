/* runtime: goroutine ancestry (see probes/include/ancestry.h). No span of
 * its own: it lets spans started on goroutines created while a request was
 * served join that request.
 *
 * Probed:
 *   func newproc1(fn *funcval, callergp *g, callerpc uintptr) *g            (Go 1.19)
 *   func newproc1(fn *funcval, callergp *g, callerpc uintptr, parked bool,
 *                 waitreason waitReason) *g                                  (Go 1.21+)
 *     at every RET: the new goroutine's *g in RAX, its goid assigned (and,
 *     from Go 1.21, its parentGoid: the creator's goid). One
 *     probe hit per `go` statement. newproc1 runs on the system stack (g0,
 *     whose stack never moves, but a return is probed at its RET sites as
 *     everywhere), so R14 is the M's g0 there and the creator is g0.m.curg:
 *     `go` switches to g0 with systemstack from the creating goroutine,
 *     which stays the M's curg (callergp). callergp itself (RBX at entry)
 *     is gone by the RET, and an entry probe would double the cost.
 *   newproc's systemstack closure (runtime.newproc.func1), at its direct
 *     CALL of runqput(pp *p, gp *g, next bool), which follows newproc1 in
 *     every Go release from 1.17 to 1.27: the new goroutine's *g in RBX
 *     (runqput's second argument), the rest as at newproc1's RET. The
 *     kernel emulates a probed CALL, where it single-steps a probed RET (a
 *     second trap, 16 against 0.5 µs per hit on a Firecracker VM), so this
 *     site is preferred; newproc1's RETs are probed only where the call is
 *     not found. Goroutines that newproc1 makes for coroutines (newcoro,
 *     iter.Pull, Go 1.23+) do not pass there, and inherit no origin.
 *   func goexit1()
 *     entry, on the exiting goroutine (R14): its origin is removed. */
#include "go_abi.h"
#include "ancestry.h"

struct gt_runtime_config {
	__u32 g_m;           /* runtime.g.m */
	__u32 m_curg;        /* runtime.m.curg */
	__u32 flags;         /* enum gt_runtime_flags */
	__u32 g_parent_goid; /* runtime.g.parentGoid (with GT_RUNTIME_PARENT_GOID) */
};

enum gt_runtime_flags {
	GT_RUNTIME_ENABLED = 1,
	/* newproc1 sets the new goroutine's parentGoid to its creator's goid
	 * (Go 1.21 and later; the field exists unset in older ones): the
	 * creator is read there, one read instead of three through g0's M */
	GT_RUNTIME_PARENT_GOID = 2,
};

enum gt_hit_site_runtime {
	GT_HIT_RUNTIME_NEWPROC1_RETURN = 35,
	GT_HIT_RUNTIME_GOEXIT1 = 36,
	GT_HIT_RUNTIME_NEWPROC_RUNQPUT = 37,
};

GT_EXPORT_LAYOUTS(runtime,
	struct gt_runtime_config config;
	enum gt_runtime_flags config_flags;
	enum gt_hit_site_runtime hit_site;
	struct gt_goroutine_origin origin;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_runtime_config);
} gt_runtime_config SEC(".maps");

static __always_inline int newproc_created(struct pt_regs *ctx, __u64 newg, __u32 site)
{
	/* Every `go` statement of every process of the binary lands here: the
	 * common case (a creator serving nothing) costs the process check, two
	 * array lookups, one read of user memory (three before Go 1.21) and the
	 * creator's span entry (a hash lookup; a second for its origin in a
	 * process that has stored origins). */
	__u32 tgid = gt_tgid();
	struct process_slot *slot;
	/* counted like every probe's hit, so that the overhead estimate and
	 * budget see the probe that is hit most in goroutine-heavy programs */
	if (!gt_hit_traced_slot(tgid, site, &slot))
		return 0;
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);
	struct gt_binary_info *bin = gt_binary(id);
	struct gt_runtime_config *cfg = bpf_map_lookup_elem(&gt_runtime_config, &id);
	if (!bin || !cfg || !(cfg->flags & GT_RUNTIME_ENABLED))
		return 0;
	__u64 m = 0, curg = 0;
	struct gt_goroutine_key creator = { .tgid = tgid };
	if (!newg)
		return 0;
	if (cfg->flags & GT_RUNTIME_PARENT_GOID) {
		if (go_read_ptr(newg, cfg->g_parent_goid, &creator.goid) < 0 || !creator.goid)
			return 0;
	} else if (go_read_ptr(GO_G(ctx), cfg->g_m, &m) < 0 || go_read_ptr(m, cfg->m_curg, &curg) < 0 ||
		   go_read_ptr(curg, bin->goid_offset, &creator.goid) < 0 || !creator.goid) {
		return 0;
	}
	struct gt_goroutine_origin o = {};
	struct gt_span_context *served = gt_goroutine_span(&creator);
	if (served) {
		o.span = *served;
		o.root_goid = creator.goid;
		o.generation = 1;
	} else {
		/* a process that never stored an origin has none to inherit */
		if (slot && !slot->origins_stored)
			return 0;
		struct gt_goroutine_origin *inherited = bpf_map_lookup_elem(&gt_goroutine_origins, &creator);
		if (!inherited || inherited->generation >= GT_GOROUTINE_GENERATIONS_MAX ||
		    !gt_origin_live(tgid, inherited))
			return 0;
		o = *inherited;
		o.generation++;
	}
	struct gt_goroutine_key child = { .tgid = tgid };
	if (go_read_ptr(newg, bin->goid_offset, &child.goid) < 0 || !child.goid) {
		gt_count(GT_COUNTER_READ_FAILED);
		return 0;
	}
	/* marked before the insert: a goroutine's exit that sees the insert
	 * sees the mark too (the child runs only after newproc1 returns) */
	if (slot && !slot->origins_stored)
		slot->origins_stored = 1;
	bpf_map_update_elem(&gt_goroutine_origins, &child, &o, BPF_ANY);
	gt_debug_hit(ctx, site, GT_HIT_STORED, tgid, id, child.goid);
	return 0;
}

SEC("uprobe.multi")
int gt_runtime_newproc1_return(struct pt_regs *ctx)
{
	return newproc_created(ctx, GO_ARG1(ctx), GT_HIT_RUNTIME_NEWPROC1_RETURN);
}

SEC("uprobe.multi")
int gt_runtime_newproc_runqput(struct pt_regs *ctx)
{
	return newproc_created(ctx, GO_ARG2(ctx), GT_HIT_RUNTIME_NEWPROC_RUNQPUT);
}

SEC("uprobe.multi")
int gt_runtime_goexit1(struct pt_regs *ctx)
{
	__u32 tgid = gt_tgid();
	struct process_slot *slot;
	if (!gt_hit_traced_slot(tgid, GT_HIT_RUNTIME_GOEXIT1, &slot))
		return 0;
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);
	struct gt_binary_info *bin = gt_binary(id);
	/* a process that never stored an origin has none to remove */
	if (!bin || (slot && !slot->origins_stored))
		return 0;
	struct gt_goroutine_key key = { .tgid = tgid, .goid = go_goid(ctx, bin) };
	/* most goroutines end without an origin: a lookup takes no lock, a
	 * delete locks the bucket whether or not it finds the key */
	if (bpf_map_lookup_elem(&gt_goroutine_origins, &key))
		bpf_map_delete_elem(&gt_goroutine_origins, &key);
	return 0;
}
