/* Process lifecycle for discovery: exec and exit of every process on the
 * node, so a new Go process is attached within milliseconds of its exec and
 * an exited one is cleaned up at once. BTF-enabled tracepoints (tp_btf) need
 * no tracefs mount.
 *
 * Process events have a ring buffer of their own, submitted with wakeups:
 * they are rare next to probe events, user space must see them at once, and
 * a flood of probe events must never push them out.
 *
 * Uprobes belong to the file (inode + offset), not to a process. The exec
 * hook therefore also checks the executable against the files user space
 * attached (gt_binary_files):
 *  - the same content (size, mtime, ctime as at attach): the process is
 *    allowed at once, so its first requests are traced without waiting for
 *    user space; user space confirms or withdraws the decision when it reads
 *    the event, which carries the command line and environment for that;
 *  - other content behind the same inode (a binary rewritten in place): the
 *    kernel has just placed the stale link set's breakpoints into the new
 *    process at the old code's offsets, which would crash it. The process is
 *    stopped (SIGSTOP) before its first instruction, and user space detaches
 *    the stale links, repairs the bytes the kernel restores from the old
 *    code, attaches anew and continues it (SIGCONT). */
#include "gotrail.h"

enum gt_process_event_limits {
	GT_PROCESS_COMM_MAX = 16,
	GT_PROCESS_FILENAME_MAX = 256, /* the path given to execve */
	GT_PROCESS_ARGS_MAX = 512,     /* command line bytes carried for known binaries */
	GT_PROCESS_ENV_MAX = 4096,     /* environment bytes carried for known binaries */
	GT_BINARY_FILES_MAX = 4096,
	GT_SIGSTOP = 19,
};

/* Identity of an executable file as the kernel sees it: s_dev in the
 * kernel's encoding (major << 20 | minor), inode number. */
struct gt_file_key {
	__u64 dev;
	__u64 ino;
};

/* The content identity recorded when user space attached the file. */
struct gt_file_info {
	__u64 size;
	__s64 mtime_sec;
	__s64 ctime_sec;
	__u32 mtime_nsec;
	__u32 ctime_nsec; /* without the kernel's multigrain "queried" bits */
	__u32 binary_id;
	__u32 flags; /* enum gt_file_flags */
};

enum gt_file_flags {
	/* processes of this file are allowed at exec, before user space decides */
	GT_FILE_ALLOW_AT_EXEC = 1,
};

enum gt_exec_flags {
	/* the executable is an attached file with the content it was attached with */
	GT_EXEC_KNOWN = 1,
	/* the executable is an attached inode whose content changed since */
	GT_EXEC_STALE = 2,
	/* the process was stopped with SIGSTOP and waits for user space */
	GT_EXEC_HELD = 4,
	/* the process was put on the allow-list at exec */
	GT_EXEC_ALLOWED = 8,
	/* args/env were copied (known or stale files only) */
	GT_EXEC_ARGS = 16,
};

struct gt_process_event {
	struct gt_event_header hdr;
	__u64 time_ns;        /* CLOCK_MONOTONIC */
	__u64 start_boottime; /* task start, ns since boot (/proc/PID/stat field 22 × 10^7) */
	__u32 ppid;
	__u32 flags; /* enum gt_exec_flags (exec events) */
	struct gt_file_key file;
	struct gt_file_info content; /* the executable's, at exec */
	__u32 args_len;              /* bytes in args (NUL-separated), 0 when not copied */
	__u32 env_len;               /* bytes in env (NUL-separated), 0 when not copied */
	__u32 env_total;             /* the environment's full size */
	__u32 reserved;
	char comm[GT_PROCESS_COMM_MAX];
	/* exec events: the path of the file executed (bprm->interp): the path
	 * execve was given, or for a script the interpreter's path from its #!
	 * line, so that it names the file whose identity is in `file`; relative
	 * when it was given so (to the process's working directory at exec) */
	char filename[GT_PROCESS_FILENAME_MAX];
};

/* Exec of an attached file: the small event plus what the selection rules
 * read from /proc, so that a process that exits before user space looks is
 * still judged by its own command line and environment. */
struct gt_process_exec_args {
	struct gt_process_event ev;
	char args[GT_PROCESS_ARGS_MAX];
	char env[GT_PROCESS_ENV_MAX];
};

/* The process events' ids in the object-wide family (see enum gt_event_type). */
enum gt_event_type_process {
	GT_EVENT_PROCESS_EXEC = 2,
	GT_EVENT_PROCESS_EXIT = 3,
};

GT_EXPORT_LAYOUTS(process,
	enum gt_event_type_process event_type;
	struct gt_process_event event;
	struct gt_process_exec_args exec_args;
	struct gt_file_key file_key;
	struct gt_file_info file_info;
	enum gt_process_event_limits limits;
	enum gt_file_flags file_flags;
	enum gt_exec_flags exec_flags;
);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* 2 MiB: an exec of a known binary carries its command line and
	 * environment (~4.7 KiB), so ~440 of them fit while the consumer thread
	 * waits for a core on a busy node (1 MiB overflowed in bursts of
	 * short-lived processes there). The agent maps its data once, and the
	 * kernel puts every page into that mapping at mmap, so each MiB here is
	 * a MiB of the agent's RSS from the start. */
	__uint(max_entries, 2 * 1024 * 1024);
} gt_process_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_BINARY_FILES_MAX);
	__type(key, struct gt_file_key);
	__type(value, struct gt_file_info);
} gt_binary_files SEC(".maps");

/* inode timestamp layouts of older kernels, for CO-RE */
struct inode___ts64 {
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct inode___ts66 {
	struct timespec64 i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___ts67 {
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

/* nanoseconds below 10^9 fit in 30 bits; the bits above carry the kernel's
 * multigrain timestamp flags */
#define GT_NSEC_MASK 0x3fffffffU

static __always_inline void read_file_identity(struct file *f, struct gt_file_key *k, struct gt_file_info *c)
{
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	k->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	k->ino = BPF_CORE_READ(inode, i_ino);
	c->size = BPF_CORE_READ(inode, i_size);
	if (bpf_core_field_exists(inode->i_mtime_sec)) {
		c->mtime_sec = BPF_CORE_READ(inode, i_mtime_sec);
		c->mtime_nsec = BPF_CORE_READ(inode, i_mtime_nsec);
		c->ctime_sec = BPF_CORE_READ(inode, i_ctime_sec);
		c->ctime_nsec = BPF_CORE_READ(inode, i_ctime_nsec);
	} else if (bpf_core_field_exists(((struct inode___ts67 *)inode)->__i_mtime)) {
		struct inode___ts67 *i = (void *)inode;
		c->mtime_sec = BPF_CORE_READ(i, __i_mtime.tv_sec);
		c->mtime_nsec = BPF_CORE_READ(i, __i_mtime.tv_nsec);
		c->ctime_sec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		c->ctime_nsec = BPF_CORE_READ(i, __i_ctime.tv_nsec);
	} else if (bpf_core_field_exists(((struct inode___ts66 *)inode)->__i_ctime)) {
		struct inode___ts66 *i = (void *)inode;
		c->mtime_sec = BPF_CORE_READ(i, i_mtime.tv_sec);
		c->mtime_nsec = BPF_CORE_READ(i, i_mtime.tv_nsec);
		c->ctime_sec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		c->ctime_nsec = BPF_CORE_READ(i, __i_ctime.tv_nsec);
	} else {
		struct inode___ts64 *i = (void *)inode;
		c->mtime_sec = BPF_CORE_READ(i, i_mtime.tv_sec);
		c->mtime_nsec = BPF_CORE_READ(i, i_mtime.tv_nsec);
		c->ctime_sec = BPF_CORE_READ(i, i_ctime.tv_sec);
		c->ctime_nsec = BPF_CORE_READ(i, i_ctime.tv_nsec);
	}
	c->mtime_nsec &= GT_NSEC_MASK;
	c->ctime_nsec &= GT_NSEC_MASK;
	c->binary_id = 0;
	c->flags = 0;
}

static __always_inline bool same_content(const struct gt_file_info *a, const struct gt_file_info *b)
{
	return a->size == b->size && a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec &&
	       a->ctime_sec == b->ctime_sec && a->ctime_nsec == b->ctime_nsec;
}

static __always_inline void fill_event(struct gt_process_event *ev, __u16 type, __u16 size,
				       struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	gt_fill_header(&ev->hdr, type, size, tgid, 0, 0);
	ev->time_ns = bpf_ktime_get_ns();
	ev->start_boottime = BPF_CORE_READ(task, group_leader, start_boottime);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->flags = 0;
	ev->args_len = 0;
	ev->env_len = 0;
	ev->env_total = 0;
	ev->reserved = 0;
	__builtin_memset(&ev->file, 0, sizeof(ev->file));
	__builtin_memset(&ev->content, 0, sizeof(ev->content));
	bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), task->comm);
	ev->filename[0] = 0;
}

/* Copies [start, end) of the new image's memory (argv or envp strings, laid
 * out by the kernel on the new stack) into dst; returns the bytes copied. */
static __always_inline __u32 copy_user_area(char *dst, __u32 cap, __u64 start, __u64 end)
{
	if (end <= start)
		return 0;
	__u64 n = end - start;
	if (n > cap)
		n = cap;
	__u32 len = (__u32)n;
	asm volatile("" : "+r"(len));
	if (len == 0 || len > cap)
		return 0;
	if (bpf_probe_read_user(dst, len, (void *)start) < 0)
		return 0;
	return len;
}

/* A new program image: whatever user space decided for the old image no
 * longer holds, so the process leaves the allow-list until it is re-judged
 * (or is allowed again at once, as a process of a known file). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(gt_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	struct gt_file_key key = {};
	struct gt_file_info now = {};
	read_file_identity(BPF_CORE_READ(bprm, file), &key, &now);
	struct gt_process_info *judged = bpf_map_lookup_elem(&gt_processes, &tgid);
	/* the hit counter slot stays with a decision that is kept (user space
	 * assigned it, and frees it only when it stops tracing the process) */
	__u32 hits_slot = 0;
	if (judged && !(judged->file_dev == key.dev && judged->file_ino == key.ino)) {
		bpf_map_delete_elem(&gt_processes, &tgid);
		gt_processes_changed();
	} else if (judged)
		hits_slot = judged->hits_slot;
	struct gt_file_info *known = bpf_map_lookup_elem(&gt_binary_files, &key);
	if (!known) {
		struct gt_process_event *ev = bpf_ringbuf_reserve(&gt_process_events, sizeof(*ev), 0);
		if (!ev) {
			gt_count(GT_COUNTER_PROCESS_EVENTS_FULL);
			return 0;
		}
		fill_event(ev, GT_EVENT_PROCESS_EXEC, sizeof(*ev), p);
		ev->file = key;
		ev->content = now;
		bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), BPF_CORE_READ(bprm, interp));
		bpf_ringbuf_submit(ev, 0);
		return 0;
	}

	__u32 flags = GT_EXEC_ARGS;
	if (same_content(known, &now)) {
		flags |= GT_EXEC_KNOWN;
		now.binary_id = known->binary_id;
		if (known->flags & GT_FILE_ALLOW_AT_EXEC) {
			struct gt_process_info pi = { .flags = GT_PROCESS_TRACED,
						      .hits_slot = hits_slot,
						      .file_dev = key.dev,
						      .file_ino = key.ino };
			if (bpf_map_update_elem(&gt_processes, &tgid, &pi, BPF_ANY) == 0)
				flags |= GT_EXEC_ALLOWED;
			gt_processes_changed();
		}
	} else {
		flags |= GT_EXEC_STALE;
		if (bpf_send_signal(GT_SIGSTOP) == 0)
			flags |= GT_EXEC_HELD;
	}

	struct gt_process_exec_args *ev = bpf_ringbuf_reserve(&gt_process_events, sizeof(*ev), 0);
	if (!ev) {
		/* user space must learn of a held process: without the event it
		 * would stay stopped, so it is not held */
		if (flags & GT_EXEC_HELD)
			bpf_send_signal(18 /* SIGCONT */);
		if (flags & GT_EXEC_ALLOWED) {
			bpf_map_delete_elem(&gt_processes, &tgid);
			gt_processes_changed();
		}
		gt_count(GT_COUNTER_PROCESS_EVENTS_FULL);
		return 0;
	}
	fill_event(&ev->ev, GT_EVENT_PROCESS_EXEC, sizeof(*ev), p);
	ev->ev.flags = flags;
	ev->ev.file = key;
	ev->ev.content = now;
	bpf_probe_read_kernel_str(ev->ev.filename, sizeof(ev->ev.filename), BPF_CORE_READ(bprm, interp));
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	__u64 arg_start = BPF_CORE_READ(mm, arg_start), arg_end = BPF_CORE_READ(mm, arg_end);
	__u64 env_start = BPF_CORE_READ(mm, env_start), env_end = BPF_CORE_READ(mm, env_end);
	ev->ev.args_len = copy_user_area(ev->args, GT_PROCESS_ARGS_MAX, arg_start, arg_end);
	ev->ev.env_len = copy_user_area(ev->env, GT_PROCESS_ENV_MAX, env_start, env_end);
	ev->ev.env_total = env_end > env_start ? (__u32)(env_end - env_start) : 0;
	bpf_ringbuf_submit(ev, 0);
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
	gt_processes_changed();
	struct gt_process_event *ev = bpf_ringbuf_reserve(&gt_process_events, sizeof(*ev), 0);
	if (!ev) {
		gt_count(GT_COUNTER_PROCESS_EVENTS_FULL);
		return 0;
	}
	fill_event(ev, GT_EVENT_PROCESS_EXIT, sizeof(*ev), p);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
