/* gotrail-calibrate: the helper process in which the agent measures what a
 * uprobe hit costs on this host (daemon/agent/overhead.ts). It calls a
 * no-op function in a loop and reports the CPU time this thread spent, so
 * that time the scheduler gives to other processes does not count (the
 * trap and the BPF run are charged to the thread that hits the probe).
 *
 * Protocol, one line each way: the agent writes a call count N ("100000\n");
 * the helper calls gotrail_calibration_noop N times and answers with the
 * thread CPU time it took, in nanoseconds ("812345\n"). EOF ends it.
 *
 * "send N MAP_ID KEY_SIZE\n" measures what a send through the sockmap
 * costs (the socket-level traceparent injection, probes/inject/): a
 * loopback TCP connection exchanges N request/response pairs of 128 bytes
 * each way (both ends in this thread, TCP_NODELAY as Go sets it), its
 * client end in the sockhash MAP_ID (opened by id; KEY_SIZE bytes of 0xff
 * as its key, a 4-tuple no connection has) or, with MAP_ID 0, in none. The
 * answer is the thread CPU time of the N exchanges in nanoseconds, or a
 * line starting "error:". */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int exact(int fd, char *buf, size_t len, int reading)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = reading ? read(fd, buf + done, len - done) : write(fd, buf + done, len - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* A connected loopback pair: fds[0] the client end, fds[1] the server's. */
static int loopback_pair(int fds[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
	fds[0] = fds[1] = -1;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0)
		goto fail;
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	fds[1] = accept(l, NULL, NULL);
	if (fds[1] < 0)
		goto fail;
	close(l);
	setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
fail:
	if (l >= 0)
		close(l);
	if (fds[0] >= 0)
		close(fds[0]);
	return -1;
}

/* The "send" command; prints its answer. */
static void sends(long long n, unsigned map_id, unsigned key_size)
{
	char req[128], resp[128], key[256];
	int fds[2], map = -1;
	if (n <= 0 || n > 10000000LL || key_size == 0 || key_size > sizeof(key)) {
		printf("error: send count or key size out of range\n");
		return;
	}
	memset(req, 'q', sizeof(req));
	memset(resp, 'r', sizeof(resp));
	memset(key, 0xff, sizeof(key));
	if (loopback_pair(fds) < 0) {
		printf("error: loopback connection: %s\n", strerror(errno));
		return;
	}
	if (map_id) {
		union bpf_attr attr;
		memset(&attr, 0, sizeof(attr));
		attr.map_id = map_id;
		map = (int)sys_bpf(BPF_MAP_GET_FD_BY_ID, &attr);
		__u32 sock = (__u32)fds[0];
		memset(&attr, 0, sizeof(attr));
		attr.map_fd = (__u32)map;
		attr.key = (uintptr_t)key;
		attr.value = (uintptr_t)&sock;
		attr.flags = BPF_ANY;
		if (map < 0 || sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0) {
			printf("error: add the connection to map %u: %s\n", map_id, strerror(errno));
			goto out;
		}
	}
	long long t0 = thread_cpu_ns();
	for (long long i = 0; i < n; i++) {
		if (exact(fds[0], req, sizeof(req), 0) < 0 || exact(fds[1], req, sizeof(req), 1) < 0 ||
		    exact(fds[1], resp, sizeof(resp), 0) < 0 || exact(fds[0], resp, sizeof(resp), 1) < 0) {
			printf("error: exchange %lld: %s\n", i, strerror(errno));
			goto out;
		}
	}
	printf("%lld\n", thread_cpu_ns() - t0);
out:
	if (map >= 0) {
		union bpf_attr attr;
		memset(&attr, 0, sizeof(attr));
		attr.map_fd = (__u32)map;
		attr.key = (uintptr_t)key;
		sys_bpf(BPF_MAP_DELETE_ELEM, &attr);
		close(map);
	}
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	char line[128];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		long long sn;
		unsigned id, ks;
		if (sscanf(line, "send %lld %u %u", &sn, &id, &ks) == 3) {
			sends(sn, id, ks);
			continue;
		}
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
