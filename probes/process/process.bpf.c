/* Process lifecycle for discovery: exec and exit of every process on the
 * node, so a new Go process is attached within milliseconds of its exec and
 * an exited one is cleaned up at once. BTF-enabled tracepoints (tp_btf) need
 * no tracefs mount. */
#include "gotrail.h"

enum gt_process_event_limits {
	GT_PROCESS_COMM_MAX = 16,
};

struct gt_process_event {
	struct gt_event_header hdr;
	__u64 time_ns;
	__u32 ppid;
	__u32 reserved;
	char comm[GT_PROCESS_COMM_MAX];
};

GT_EXPORT_LAYOUTS(process,
	struct gt_process_event event;
	enum gt_process_event_limits limits;
);

static __always_inline void emit(__u16 type, struct task_struct *task)
{
	struct gt_process_event *ev = bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0);
	if (!ev) {
		gt_count(GT_COUNTER_RINGBUF_FULL);
		return;
	}
	__u32 tgid = BPF_CORE_READ(task, tgid);
	gt_fill_header(&ev->hdr, type, sizeof(*ev), tgid, 0, 0);
	ev->time_ns = bpf_ktime_get_ns();
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->reserved = 0;
	bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), task->comm);
	gt_submit(ev);
}

/* A new program image: whatever user space decided for the old image no
 * longer holds, so the process leaves the allow-list until it is re-judged. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(gt_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	bpf_map_delete_elem(&gt_processes, &tgid);
	emit(GT_EVENT_PROCESS_EXEC, p);
	return 0;
}

/* Fires for every thread; only the thread-group leader's exit ends the
 * process (Go programs exit through exit_group, which takes all threads). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(gt_process_exit, struct task_struct *p)
{
	__u32 pid = BPF_CORE_READ(p, pid);
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (pid != tgid)
		return 0;
	/* only processes user space tracks are worth an event */
	if (!bpf_map_lookup_elem(&gt_processes, &tgid))
		return 0;
	bpf_map_delete_elem(&gt_processes, &tgid);
	emit(GT_EVENT_PROCESS_EXIT, p);
	return 0;
}
