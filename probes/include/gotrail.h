/* Shared definitions for every gotrail probe: event header, the shared maps
 * (ring buffer, per-binary facts, per-process allow-list) and helpers.
 *
 * Types whose names start with gt_ are exported to TypeScript by
 * probes/codegen/btf-to-ts.ts from the compiled object's BTF; they are the
 * single definition of every layout that crosses the kernel/user boundary.
 * Layout rules: fixed-width types, explicit padding, no packed structs
 * (the build uses -Wpadded -Werror). */
#pragma once

/* Kernel and libbpf headers are not ours to pad: -Wpadded applies to our
 * own layouts only. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#pragma clang diagnostic pop

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Event type tags: the first field of every ring-buffer record. Each probe
 * defines its own in its folder, as `enum gt_event_type_<probe>` exported
 * with GT_EXPORT_LAYOUTS; probes/codegen/btf-to-ts.ts merges every
 * gt_event_type* enum into one EventType and refuses a value used twice.
 * The same holds for gt_hit_site* and gt_paired_function*. */
enum gt_event_type {
	GT_EVENT_PROBE_HIT = 5, /* debug only: see gt_debug */
};

struct gt_event_header {
	__u16 type; /* enum gt_event_type */
	__u16 size; /* bytes of the whole record, for forward compatibility */
	__u32 tgid;
	__u32 binary_id; /* from the attach cookie; 0 for non-uprobe events */
	__u32 cpu;
	__u64 goid;
};

/* Per-binary facts shared by every probe; indexed by the binary id that
 * the attach cookie carries, so one loaded program serves every binary. */
struct gt_binary_info {
	__u32 goid_offset; /* offset of runtime.g.goid */
	__u32 flags;       /* GT_BINARY_* */
	/* the generation of the binary's links that is live (mod 256): hits of
	 * a link whose cookie carries another are skipped by gt_dispatch (a link
	 * replaced by its successor, both attached for a moment) */
	__u32 link_generation;
	__u32 reserved;
};

enum gt_binary_flags {
	GT_BINARY_VALID = 1,
	/* the binary's link set is being detached (its last process exited):
	 * its hits are ignored, so that while a new process of the same file is
	 * attached with a new link set, each site counts once, not twice */
	GT_BINARY_RELEASED = 2,
};

/* User space's per-process decision, kept in BPF so that a binary shared
 * by an included and an excluded process traces only the included one. */
struct gt_process_info {
	__u32 flags; /* GT_PROCESS_* */
	/* this process's entry of gt_process_hits, assigned by user space and
	 * kept while it traces the process; 0: none (its hits are counted in
	 * gt_probe_hits, as are those of processes without an entry) */
	__u32 hits_slot;
	/* The executable the decision was made for (s_dev in the kernel's
	 * encoding, inode; 0 when unknown): the exec hook keeps the decision when
	 * a process execs that very file, which the /proc scan may have judged
	 * before the exec tracepoint ran. */
	__u64 file_dev;
	__u64 file_ino;
};

enum gt_process_flags {
	GT_PROCESS_TRACED = 1,
	/* traced, but its outgoing requests get no traceparent header
	 * (`--no-inject-exe`; probes/inject/inject.bpf.c) */
	GT_PROCESS_NO_INJECT = 2,
};

/* Key of in-flight state: goroutines are the unit of Go concurrency, so
 * per-request state is keyed by goroutine, never by thread or stack. */
struct gt_goroutine_key {
	__u32 tgid;
	__u32 reserved;
	__u64 goid;
};

/* Counters that user space exposes as metrics; one slot per reason. */
enum gt_counter {
	GT_COUNTER_RINGBUF_FULL = 0,
	GT_COUNTER_NO_BINARY_INFO = 1,
	GT_COUNTER_READ_FAILED = 2,
	GT_COUNTER_NO_ENTRY = 3,
	GT_COUNTER_INFLIGHT_FULL = 4,
	GT_COUNTER_PROCESS_EVENTS_FULL = 5, /* process exec/exit ring buffer full */
	/* a return without entry whose call began before its process was
	 * traced (the one expected miss; see gt_count_no_entry) */
	GT_COUNTER_NO_ENTRY_PREATTACH = 6,
	/* not a loss: a request gotrail itself sent, deliberately not traced */
	GT_COUNTER_SKIPPED_SELF = 7,
	/* not an event lost: spans not made because the incoming parent was
	 * not sampled (a W3C traceparent with the sampled flag unset) */
	GT_COUNTER_NOT_SAMPLED = 8,
	/* not an event lost: an incoming traceparent that is not used
	 * (malformed, or sent more than once); the request starts a new trace */
	GT_COUNTER_TRACEPARENT_INVALID = 9,
	/* a hit gt_dispatch could not pass on: the program its cookie names is
	 * not in gt_probe_programs (removed, or never inserted) */
	GT_COUNTER_TAIL_CALL_FAILED = 10,
	/* not an event lost: spans not made because this node's sampler
	 * (OTEL_TRACES_SAMPLER) did not sample their trace (sampling.h) */
	GT_COUNTER_NOT_SAMPLED_SAMPLER = 15,
	GT_COUNTER_MAX = 16,
};

#ifndef GT_MAX_BINARIES
#define GT_MAX_BINARIES 4096
#endif

/* 2 MiB: about 2,000 of the largest events (net/http server, ~1 KiB), i.e.
 * 200 ms of 10k spans/s while user space does not consume (a paused export
 * queue, a stalled event loop), the consumer being woken at 256 KiB. The
 * agent maps its data once (daemon/native/src/ring_buffer.cc), and all of it
 * counts in RSS from the mmap: 2 MiB; --ring-buffer-bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} gt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_binary_info);
} gt_binaries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct gt_process_info);
} gt_processes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GT_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} gt_counters SEC(".maps");

/* Probe hits per process and site (enum gt_hit_site), every process of an
 * attached binary alike, traced or not: each hit costs that process a
 * uprobe trap. User space multiplies them by the calibrated trap cost to
 * estimate each process's overhead.
 *
 * A traced process's hits go to its slot of gt_process_hits, named by its
 * gt_processes entry: the hit looks that entry up anyway, and an array slot
 * costs no second hash lookup (on the machines measured, a hash-map lookup
 * cost more than a read of the traced program's memory). Hits of a process
 * without an entry or a slot (not traced, not decided yet, more processes
 * than slots) go to gt_probe_hits, keyed {tgid, site}; user space adds the
 * two, and removes a process's keys when it exits (LRU: processes never
 * seen exiting age out). */
struct gt_hit_key {
	__u32 tgid;
	__u32 site;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gt_hit_key);
	__type(value, __u64);
} gt_probe_hits SEC(".maps");

enum gt_hit_limits {
	/* sites a slot counts (enum gt_hit_site values below this); a site at or
	 * above it is counted in gt_probe_hits */
	GT_HIT_SITES_MAX = 128,
	/* entries of gt_process_hits as built: one per traced process (slot 0 is
	 * none); user space makes the map smaller, never larger */
	GT_PROCESS_HIT_SLOTS = 1024,
};

/* One traced process's hits, by site: 1 KiB per slot, and what else a
 * hit of the process may want to know without a lookup of its own. Slot 0
 * is never assigned (it stands for none). User space zeroes a slot when it
 * assigns it. */
struct process_slot {
	__u64 hits[GT_HIT_SITES_MAX];
	/* non-zero once probes/go/runtime stored a goroutine origin for the
	 * process (ancestry.h): until then its goroutines have none to inherit
	 * or remove, and its runtime hits skip the lookup of
	 * gt_goroutine_origins (a miss costs a hash lookup; most programs
	 * start goroutines outside requests far more often than inside). Never
	 * cleared while the slot is the process's: origins removed or evicted
	 * leave it set, which costs only those lookups. A process untraced and
	 * traced again gets a zeroed slot while origins stored before may
	 * remain: they are not inherited, as if evicted, and are removed with
	 * the process's other state when it exits. */
	__u64 origins_stored;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_PROCESS_HIT_SLOTS);
	__type(key, __u32);
	__type(value, struct process_slot);
} gt_process_hits SEC(".maps");

/* Counts a hit of `site` in process `tgid`, whose slot of gt_process_hits
 * is `slot` (0: none); returns the process's slot when it counted there. */
static __always_inline struct process_slot *gt_count_hit(__u32 tgid, __u32 site, __u32 slot)
{
	if (slot && site < GT_HIT_SITES_MAX) {
		struct process_slot *h = bpf_map_lookup_elem(&gt_process_hits, &slot);
		if (h) {
			__sync_fetch_and_add(&h->hits[site], 1);
			return h;
		}
	}
	struct gt_hit_key k = { .tgid = tgid, .site = site };
	__u64 *v = bpf_map_lookup_elem(&gt_probe_hits, &k);
	if (v) {
		__sync_fetch_and_add(v, 1);
	} else {
		__u64 one = 1;
		/* two CPUs may race to create the key: the loser adds to the winner's */
		if (bpf_map_update_elem(&gt_probe_hits, &k, &one, BPF_NOEXIST) < 0) {
			v = bpf_map_lookup_elem(&gt_probe_hits, &k);
			if (v)
				__sync_fetch_and_add(v, 1);
		}
	}
	return 0;
}

static __always_inline void gt_count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&gt_counters, &which);
	if (v)
		*v += 1;
}

static __always_inline __u32 gt_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

/* Generations of gt_processes: every change of an entry is followed by a
 * bump, [0] by user space (the only writer of that slot), [1] by BPF
 * programs (the exec and exit hooks, with an atomic add). Their sum changes
 * with every change of the map. */
enum gt_processes_gen_slot {
	GT_PROCESSES_GEN_USER = 0,
	GT_PROCESSES_GEN_BPF = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} gt_processes_gen SEC(".maps");

/* For BPF writers of gt_processes: call after each update or delete. */
static __always_inline void gt_processes_changed(void)
{
	__u32 k = GT_PROCESSES_GEN_BPF;
	__u64 *g = bpf_map_lookup_elem(&gt_processes_gen, &k);
	if (g)
		__sync_fetch_and_add(g, 1);
}

/* What each CPU last learnt from gt_processes, for the process whose hits it
 * serves (usually the same one hit after hit): a probe hit then reads two
 * array slots instead of looking the process up in the hash map (on the
 * machines measured, a hash lookup was a quarter of a runtime probe's time).
 * One word, so that a program preempted on its CPU by another cannot leave
 * half of an entry: the generation sum (30 bits) << 34 | tgid (22 bits) << 12
 * | hits slot (10 bits) << 2 | traced << 1 | 1 (filled; an entry may be
 * missing: then slot and traced are 0, and so remembered too). A
 * tgid or slot too large for its bits is not remembered. The word is taken
 * only while the sum of gt_processes_gen still equals its own: a change of
 * the map between the sum's read and the lookup leaves a word that the next
 * hit finds outdated; a hit between a change and its bump sees the map as it
 * was a moment earlier, as a lookup just before the change would. The sum
 * comes back to a remembered value after 2^30 changes at the earliest. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gt_process_memo SEC(".maps");

#define GT_MEMO_TGID_BITS 22
#define GT_MEMO_GEN_MASK  ((1ULL << 30) - 1)

/* The process filter (anything not explicitly selected by user space is
 * ignored before any memory is read): whether `tgid` is traced, and its
 * slot of gt_process_hits in *slot (0: none). */
static __always_inline bool gt_process_lookup(__u32 tgid, __u32 *slot)
{
	__u32 zero = 0, one = 1;
	__u64 *gu = bpf_map_lookup_elem(&gt_processes_gen, &zero);
	__u64 *gb = bpf_map_lookup_elem(&gt_processes_gen, &one);
	__u64 *memo = bpf_map_lookup_elem(&gt_process_memo, &zero);
	__u64 gen = ((gu ? *gu : 0) + (gb ? *gb : 0)) & GT_MEMO_GEN_MASK;
	bool cacheable = memo && tgid < (1u << GT_MEMO_TGID_BITS);
	__u64 tag = gen << 34 | (__u64)tgid << 12;
	if (cacheable) {
		__u64 m = *memo;
		if ((m & ~0xfffULL) == tag && (m & 1)) {
			*slot = (__u32)(m >> 2) & (GT_PROCESS_HIT_SLOTS - 1);
			return m & 2;
		}
	}
	struct gt_process_info *p = bpf_map_lookup_elem(&gt_processes, &tgid);
	bool traced = p && (p->flags & GT_PROCESS_TRACED);
	*slot = p ? p->hits_slot : 0;
	if (cacheable && *slot < GT_PROCESS_HIT_SLOTS)
		*memo = tag | (__u64)*slot << 2 | (traced ? 2 : 0) | 1;
	return traced;
}

/* A probe hit's start: counts it, and answers whether the process is traced
 * (one look at the process serves both). */
static __always_inline bool gt_hit_traced(__u32 tgid, __u32 site)
{
	__u32 slot;
	bool traced = gt_process_lookup(tgid, &slot);
	gt_count_hit(tgid, site, slot);
	return traced;
}

/* As gt_hit_traced; *slot is the process's slot of gt_process_hits, or 0
 * when it has none (then nothing is known of it without lookups). */
static __always_inline bool gt_hit_traced_slot(__u32 tgid, __u32 site, struct process_slot **slot)
{
	__u32 n;
	bool traced = gt_process_lookup(tgid, &n);
	*slot = gt_count_hit(tgid, site, n);
	return traced;
}

static __always_inline struct gt_binary_info *gt_binary(__u32 id)
{
	struct gt_binary_info *b = bpf_map_lookup_elem(&gt_binaries, &id);
	if (b && (b->flags & GT_BINARY_RELEASED))
		return 0;
	if (!b || !(b->flags & GT_BINARY_VALID)) {
		gt_count(GT_COUNTER_NO_BINARY_INFO);
		return 0;
	}
	return b;
}

static __always_inline void gt_fill_header(struct gt_event_header *h, __u16 type, __u16 size, __u32 tgid,
					   __u32 binary_id, __u64 goid)
{
	h->type = type;
	h->size = size;
	h->tgid = tgid;
	h->binary_id = binary_id;
	h->cpu = bpf_get_smp_processor_id();
	h->goid = goid;
}

/* How gt_events wakes its consumer, shared with user space (an mmapped
 * array of one entry, written by the consumer's poll thread).
 *
 * A wakeup per event raised the cost of a probe hit by half, so probes
 * submit without one while the consumer drains on a short timer. An idle
 * consumer stops its timer instead of polling an empty ring: it raises
 * consumer_sleeping, and the next event wakes it (one wakeup per idle
 * period, not per event). wake_bytes (0: never) wakes a running consumer
 * early when that much data waits, so that a burst cannot fill the ring
 * between two of its timer ticks.
 *
 * woken: a producer that forces a wakeup raises it, and no producer forces
 * another while it is up; the consumer lowers it when it leaves its idle
 * sleep and after each drain that emptied the ring. Without it every
 * submit past wake_bytes forced a wakeup until the consumer drained (a
 * seventh of a server return's time at high rates), also while the
 * consumer waited on JavaScript and could not drain. A record that a
 * raised flag left without a wakeup is not stranded: the wakeup that
 * raised it is still to be seen by the consumer or was followed by a
 * drain, which the consumer's timer repeats (it never sleeps on a ring
 * that is not empty, and lowers the flag before it looks). */
struct gt_rb_control {
	__u32 consumer_sleeping;
	__u32 wake_bytes;
	__u32 woken;
	__u32 reserved;
	/* wakeups forced (by either rule), for the consumer's statistics */
	__u64 forced_wakeups;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct gt_rb_control);
} gt_rb_control SEC(".maps");

/* The wakeup flag for a record about to be submitted to gt_events. Read
 * after the record's reserve, so that a consumer going to sleep either sees
 * the reserved record or is seen sleeping (user space covers the remaining
 * store-buffer window by checking once more one timer tick later). Two
 * producers may both see woken down and both wake: harmless. */
static __always_inline __u64 gt_wake_flag(void)
{
	__u32 zero = 0;
	struct gt_rb_control *c = bpf_map_lookup_elem(&gt_rb_control, &zero);
	if (!c || c->woken)
		return BPF_RB_NO_WAKEUP;
	if (c->consumer_sleeping ||
	    (c->wake_bytes && bpf_ringbuf_query(&gt_events, BPF_RB_AVAIL_DATA) >= c->wake_bytes)) {
		c->woken = 1;
		__sync_fetch_and_add(&c->forced_wakeups, 1);
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void gt_submit(void *ev)
{
	bpf_ringbuf_submit(ev, gt_wake_flag());
}

/* Debug switches, off by default: one slot, GT_DEBUG_* bits, set by user
 * space (`gotrail run --debug-probe-hits FILE`). Off, a probe hit pays one
 * array lookup. */
enum gt_debug_flags {
	GT_DEBUG_PROBE_HITS = 1,
};

/* An attach cookie is the binary id (low 32 bits) and these flags, shifted
 * by GT_COOKIE_FLAGS_SHIFT; for sites of a gt_dispatch link, also the link's
 * generation (8 bits at GT_COOKIE_GENERATION_SHIFT) and the index of the
 * probe program in gt_probe_programs (16 bits at GT_COOKIE_PROGRAM_SHIFT).
 * GT_COOKIE_AT_STACK_CHECK: the site is an entry's
 * stack-check branch (`JBE morestack`), probed because the kernel emulates
 * a branch where it single-steps the `SUB RSP` after it (Go before 1.21): a
 * hit whose branch will be taken is skipped, as the function is entered
 * again once the stack has grown. */
enum gt_cookie_flags {
	GT_COOKIE_AT_STACK_CHECK = 1,
	GT_COOKIE_FLAGS_SHIFT = 32,
	GT_COOKIE_GENERATION_SHIFT = 40,
	GT_COOKIE_PROGRAM_SHIFT = 48,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gt_debug SEC(".maps");

/* What a probe hit did with the goroutine's in-flight state. */
enum gt_hit_outcome {
	GT_HIT_UNTRACED = 1,     /* process not (or no longer) allowed: ignored */
	GT_HIT_NO_BINARY = 2,    /* the cookie's binary id has no facts: ignored */
	GT_HIT_DISABLED = 3,     /* the probe is not enabled for this binary */
	GT_HIT_STORED = 4,       /* an entry: in-flight state stored */
	GT_HIT_STORE_FAILED = 5, /* an entry whose state could not be stored */
	GT_HIT_FOUND = 6,        /* state found (a return: request ended) */
	GT_HIT_NOT_FOUND = 7,    /* no state for this goroutine */
};

/* One probe hit, recorded only while GT_DEBUG_PROBE_HITS is set: enough to
 * pair every return with its entry offline (program, process, goroutine,
 * link set via the cookie, time, CPU, instruction). */
struct gt_probe_hit_event {
	struct gt_event_header hdr; /* binary_id: the attach cookie */
	__u64 time_ns;              /* CLOCK_MONOTONIC */
	__u64 ip;                   /* instruction probed (process address) */
	__u64 sp;
	__u64 g;       /* R14 */
	__u32 site;    /* which program: a probe's enum gt_hit_site_<probe> */
	__u32 outcome; /* enum gt_hit_outcome */
};

static __always_inline bool gt_debug_hits(void)
{
	__u32 zero = 0;
	__u32 *f = bpf_map_lookup_elem(&gt_debug, &zero);
	return f && (*f & GT_DEBUG_PROBE_HITS);
}

static __always_inline void gt_debug_hit(struct pt_regs *ctx, __u32 site, __u32 outcome, __u32 tgid,
					 __u32 binary_id, __u64 goid)
{
	if (!gt_debug_hits())
		return;
	struct gt_probe_hit_event *ev = bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0);
	if (!ev) {
		gt_count(GT_COUNTER_RINGBUF_FULL);
		return;
	}
	gt_fill_header(&ev->hdr, GT_EVENT_PROBE_HIT, sizeof(*ev), tgid, binary_id, goid);
	ev->time_ns = bpf_ktime_get_ns();
	ev->ip = ctx->ip;
	ev->sp = ctx->sp;
	ev->g = ctx->r14;
	ev->site = site;
	ev->outcome = outcome;
	gt_submit(ev);
}

/* Puts a probe's exported layouts into the object's BTF (clang emits BTF
 * only for types reachable from globals), so that the TypeScript decoders
 * can be generated from the compiled object. The map is one entry, never
 * used at run time. Usage: GT_EXPORT_LAYOUTS(name, struct x a; enum y b;) */
#define GT_EXPORT_LAYOUTS(name, fields)                                                     \
	_Pragma("clang diagnostic push")                                                    \
		_Pragma("clang diagnostic ignored \"-Wpadded\"") struct gt_layouts_##name { \
		fields                                                                      \
	};                                                                                  \
	_Pragma("clang diagnostic pop") struct {                                            \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                           \
		__uint(max_entries, 1);                                                     \
		__type(key, __u32);                                                         \
		__type(value, struct gt_layouts_##name);                                    \
	} gt_layouts_##name SEC(".maps")

GT_EXPORT_LAYOUTS(common,
	struct gt_event_header header;
	struct gt_binary_info binary;
	struct gt_process_info process;
	struct gt_goroutine_key goroutine;
	struct gt_hit_key hit_key;
	enum gt_hit_limits hit_limits;
	enum gt_processes_gen_slot processes_gen_slot;
	enum gt_event_type event_type;
	enum gt_binary_flags binary_flags;
	enum gt_process_flags process_flags;
	enum gt_counter counter;
	struct gt_probe_hit_event probe_hit;
	enum gt_debug_flags debug_flags;
	enum gt_hit_outcome hit_outcome;
	enum gt_cookie_flags cookie_flags;
);

/* Goroutines that entered a paired function since their process was traced
 * (key: the goroutine, `reserved` = the function's id: each probe's enum
 * gt_paired_function_<probe> names the functions whose entries and returns
 * it pairs). It tells the
 * one expected return without entry — a call already running when the
 * process was traced, or when its links were attached — from every other:
 * a goroutine that entered since then has its mark, so its return can only
 * miss its entry if something lost it. Marks are written at a goroutine's
 * first entry (later entries find it with a lookup) and removed with the
 * process's other state when it exits. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gt_goroutine_key);
	__type(value, __u32);
} gt_goroutines_entered SEC(".maps");

/* Values of gt_goroutines_entered. */
enum gt_entered_mark {
	GT_ENTERED = 1,
	/* the loss of its last call was counted already: its state was refused
	 * by a full in-flight map (GT_COUNTER_INFLIGHT_FULL), or removed by
	 * user space's sweep of calls past their age (inflight_expired); the
	 * return that finds no entry is no second loss */
	GT_ENTERED_COUNTED = 2,
};

/* Marks the goroutine of `key` as having entered `fn` while traced. */
static __always_inline void gt_mark_entered(const struct gt_goroutine_key *key, __u32 fn)
{
	struct gt_goroutine_key k = *key;
	__u32 one = GT_ENTERED;
	k.reserved = fn;
	__u32 *v = bpf_map_lookup_elem(&gt_goroutines_entered, &k);
	if (!v)
		bpf_map_update_elem(&gt_goroutines_entered, &k, &one, BPF_ANY);
	else if (*v != GT_ENTERED)
		*v = GT_ENTERED;
}

/* The in-flight state of `fn`'s call on `key`'s goroutine could not be
 * stored (the map is full: in-flight maps are plain hash maps, which refuse
 * rather than evict another call's state): the span is lost, counted here,
 * once; its return, which will find no entry, is not counted again. Called
 * after gt_mark_entered. */
static __always_inline void gt_count_inflight_full(const struct gt_goroutine_key *key, __u32 fn)
{
	struct gt_goroutine_key k = *key;
	__u32 counted = GT_ENTERED_COUNTED;
	k.reserved = fn;
	gt_count(GT_COUNTER_INFLIGHT_FULL);
	/* in place: an LRU map's update takes a new element, and may push out another mark */
	__u32 *v = bpf_map_lookup_elem(&gt_goroutines_entered, &k);
	if (v)
		*v = GT_ENTERED_COUNTED;
	else
		bpf_map_update_elem(&gt_goroutines_entered, &k, &counted, BPF_ANY);
}

/* Counts a return of `fn` that found no entry: as NO_ENTRY_PREATTACH when
 * its goroutine never entered `fn` while traced, i.e. the call began before
 * (its goroutine is marked now: a second miss is not one); else NO_ENTRY. */
static __always_inline void gt_count_no_entry(const struct gt_goroutine_key *key, __u32 fn)
{
	struct gt_goroutine_key k = *key;
	__u32 one = 1;
	k.reserved = fn;
	__u32 *v = bpf_map_lookup_elem(&gt_goroutines_entered, &k);
	if (v) {
		if (*v == GT_ENTERED_COUNTED)
			*v = GT_ENTERED; /* counted as inflight_full at its entry */
		else
			gt_count(GT_COUNTER_NO_ENTRY);
		return;
	}
	gt_count(GT_COUNTER_NO_ENTRY_PREATTACH);
	bpf_map_update_elem(&gt_goroutines_entered, &k, &one, BPF_ANY);
}

/* W3C trace context of one span, made in BPF so that spans started later on
 * the same goroutine (outgoing calls) can name it as their parent. */
struct gt_span_context {
	__u8 trace_id[16];
	__u8 span_id[8];
	__u8 parent_span_id[8]; /* meaningful with GT_SPAN_HAS_PARENT */
	__u32 flags;            /* enum gt_span_flags */
	__u32 reserved;
};

enum gt_span_flags {
	GT_SPAN_SAMPLED = 1,
	GT_SPAN_HAS_PARENT = 2,
	GT_SPAN_PARENT_REMOTE = 4, /* the parent came from another process */
	/* the sampled flag is this node's sampler's decision (sampling.h), not
	 * an incoming parent's; children inherit it with the decision */
	GT_SPAN_SAMPLER_DECIDED = 128,
	/* only in gt_goroutine_spans: the span has ended, its entry is kept in
	 * place for the goroutine's next one (see gt_goroutine_span) */
	GT_SPAN_ENDED = 256,
};

GT_EXPORT_LAYOUTS(span,
	struct gt_span_context context;
	enum gt_span_flags flags;
);

/* Span and trace ids: SplitMix64 (Steele, Lea and Flood, "Fast splittable
 * pseudorandom number generators", OOPSLA 2014; Java's SplittableRandom),
 * one stream per CPU. A stream is a counter stepped by an odd constant (the
 * golden gamma) and each value passed through a 64-bit mixing function that
 * is a bijection: a stream repeats no output within 2^64 steps, and its
 * outputs pass BigCrush. Each CPU's counter starts at a value of
 * bpf_get_prandom_u32 (the kernel generator the ids came from before, 64
 * bits of it): two CPUs' streams, like two nodes', meet only if their
 * starts lie within as many steps of each other as ids were made (for a
 * pair of streams of 2^33 ids each, a chance of 2^-30). The counter is advanced with one atomic fetch-and-add, so two
 * programs on one CPU (one preempting the other) never share a value.
 *
 * W3C Trace Context asks for random ids (Level 2: at least the trace id's
 * 7 rightmost bytes, which the ratio sampler reads) and not all zero; this
 * is as random as the kernel's bpf_get_prandom_u32, which is no
 * cryptographic generator either, at one map lookup and one atomic add per
 * span instead of up to six helper calls. Zero, which the mix gives for
 * counter value 0 alone, is replaced. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gt_id_state SEC(".maps");

#define GT_ID_GAMMA 0x9e3779b97f4a7c15ULL

static __always_inline __u64 gt_id_mix(__u64 z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return z ? z : GT_ID_GAMMA;
}

/* Takes n consecutive values of this CPU's stream: returns the counter
 * before them (the values are mix(c + GAMMA), ..., mix(c + n * GAMMA)). */
static __always_inline __u64 gt_id_take(__u32 n)
{
	__u32 zero = 0;
	__u64 *s = bpf_map_lookup_elem(&gt_id_state, &zero);
	if (!s) /* never: a one-slot array */
		return (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();
	/* a CPU's first id seeds its stream; two programs racing to seed add
	 * both seeds, as random as one */
	if (!*s)
		__sync_fetch_and_add(s, (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32());
	return __sync_fetch_and_add(s, n * GT_ID_GAMMA);
}

/* A new span id (8 bytes). */
static __always_inline void gt_new_span_id(__u8 *out)
{
	__u64 v = gt_id_mix(gt_id_take(1) + GT_ID_GAMMA);
	__builtin_memcpy(out, &v, 8);
}

/* A new trace id (16 bytes) and span id (8 bytes). */
static __always_inline void gt_new_trace_and_span_id(__u8 *trace_id, __u8 *span_id)
{
	__u64 c = gt_id_take(3);
	__u64 a = gt_id_mix(c + GT_ID_GAMMA), b = gt_id_mix(c + 2 * GT_ID_GAMMA),
	      v = gt_id_mix(c + 3 * GT_ID_GAMMA);
	__builtin_memcpy(trace_id, &a, 8);
	__builtin_memcpy(trace_id + 8, &b, 8);
	__builtin_memcpy(span_id, &v, 8);
}

/* gt_new_root and the sampler's decision */
#include "sampling.h"

/* A child of `parent` (same trace), with a new span id. */
static __always_inline void gt_new_child(struct gt_span_context *c, const struct gt_span_context *parent)
{
	__builtin_memcpy(c->trace_id, parent->trace_id, 16);
	__builtin_memcpy(c->parent_span_id, parent->span_id, 8);
	gt_new_span_id(c->span_id);
	c->flags = GT_SPAN_HAS_PARENT | (parent->flags & (GT_SPAN_SAMPLED | GT_SPAN_SAMPLER_DECIDED));
}

static __always_inline int gt_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* the spec allows lower-case hex only */
}

/* Parses 2*n hex characters into n bytes; returns the OR of the bytes (0:
 * all zero) or -1 when a character is not lower-case hex. */
static __always_inline int gt_parse_hex(const char *s, __u8 *out, int n)
{
	__u8 any = 0;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (i >= n)
			break;
		int hi = gt_hex(s[2 * i]), lo = gt_hex(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (__u8)(hi << 4 | lo);
		any |= out[i];
	}
	return any;
}

/* Parses a traceparent value of `len` characters (optional whitespace
 * already trimmed; at least 55 readable at s) into a child context of the
 * remote span, per W3C Trace Context: "<version>-<trace-id>-<parent-id>-
 * <flags>", lower-case hex only; version ff and all-zero ids are invalid;
 * version 00 is exactly 55 characters, a higher version may carry more after
 * a '-'. False when invalid (the context is then left to be overwritten). */
static __always_inline bool gt_parse_traceparent(const char *s, __s64 len, struct gt_span_context *c)
{
	__u8 ver = 0, flags = 0;
	if (len < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	if (gt_parse_hex(s, &ver, 1) < 0 || ver == 0xff)
		return false;
	if (ver == 0 ? len != 55 : (len > 55 && s[55] != '-'))
		return false;
	if (gt_parse_hex(s + 3, c->trace_id, 16) <= 0 || gt_parse_hex(s + 36, c->parent_span_id, 8) <= 0)
		return false;
	if (gt_parse_hex(s + 53, &flags, 1) < 0)
		return false;
	gt_new_span_id(c->span_id);
	c->flags = GT_SPAN_HAS_PARENT | GT_SPAN_PARENT_REMOTE | ((flags & 1) ? GT_SPAN_SAMPLED : 0);
	gt_sample_remote_parent(c);
	return true;
}

/* The span a goroutine is serving right now (set by server probes at entry,
 * removed at return): what an outgoing call on the same goroutine becomes a
 * child of. Shared by every probe, so a gRPC server span can parent an HTTP
 * client span. A probe may instead mark the entry GT_SPAN_ENDED at the
 * return and overwrite it in place at the goroutine's next entry (the
 * net/http server, for a keep-alive connection's goroutine: an LRU map's
 * insert and delete cost more than the rest of the probe's own work): read
 * it with gt_goroutine_span, which takes an ended span for none. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_span_context);
} gt_goroutine_spans SEC(".maps");

/* The span goroutine `key` serves right now, or 0 when none is. */
static __always_inline struct gt_span_context *gt_goroutine_span(const struct gt_goroutine_key *key)
{
	struct gt_span_context *s = bpf_map_lookup_elem(&gt_goroutine_spans, key);
	return s && !(s->flags & GT_SPAN_ENDED) ? s : 0;
}
