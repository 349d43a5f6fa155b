/* Go's internal register ABI on amd64 (Go >= 1.17): integer arguments in
 * RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11, in that order; the current
 * goroutine (g) in R14. */
#pragma once

#include "gotrail.h"

#define GO_ARG1(ctx) ((__u64)(ctx)->ax)
#define GO_ARG2(ctx) ((__u64)(ctx)->bx)
#define GO_ARG3(ctx) ((__u64)(ctx)->cx)
#define GO_ARG4(ctx) ((__u64)(ctx)->di)
#define GO_ARG5(ctx) ((__u64)(ctx)->si)
#define GO_ARG6(ctx) ((__u64)(ctx)->r8)
#define GO_ARG7(ctx) ((__u64)(ctx)->r9)
#define GO_ARG8(ctx) ((__u64)(ctx)->r10)
#define GO_ARG9(ctx) ((__u64)(ctx)->r11)
#define GO_G(ctx)    ((__u64)(ctx)->r14)

/* A Go string header: pointer and length. */
struct go_string {
	__u64 ptr;
	__s64 len;
};

/* A Go slice header. */
struct go_slice {
	__u64 ptr;
	__s64 len;
	__s64 cap;
};

static __always_inline __u64 go_goid(struct pt_regs *ctx, struct gt_binary_info *bin)
{
	__u64 goid = 0;
	__u64 g = GO_G(ctx);
	if (!g)
		return 0;
	bpf_probe_read_user(&goid, sizeof(goid), (void *)(g + bin->goid_offset));
	return goid;
}

static __always_inline int go_read_ptr(__u64 base, __u32 off, __u64 *out)
{
	*out = 0;
	if (!base)
		return -1;
	return bpf_probe_read_user(out, sizeof(*out), (void *)(base + off));
}

/* Copies a Go string field at base+off into dst (size cap, a power of two),
 * returning the string's full length (which may exceed what was copied, so
 * user space can mark truncation), or -1 when the header is unreadable. */
static __always_inline __s64 go_read_string(__u64 base, __u32 off, char *dst, __u32 cap)
{
	struct go_string s = {};
	if (!base || bpf_probe_read_user(&s, sizeof(s), (void *)(base + off)) < 0)
		return -1;
	if (s.len <= 0 || !s.ptr)
		return 0;
	__u32 n = s.len < cap ? (__u32)s.len : cap;
	n &= (cap - 1) | cap; /* keeps the verifier's bound tight */
	if (n > cap)
		n = cap;
	if (bpf_probe_read_user(dst, n, (void *)s.ptr) < 0)
		return -1;
	return s.len;
}

/* The common start of every uprobe program: is this process traced, which
 * binary fired (the attach cookie), that binary's facts and this probe's
 * config for it, and the goroutine's key. Returns the config, or 0 when the
 * event is to be ignored. */
static __always_inline void *gt_probe_enter(struct pt_regs *ctx, void *config_map,
					    struct gt_goroutine_key *key, __u32 *bin_id)
{
	__u32 tgid = gt_tgid();
	if (!gt_process_traced(tgid))
		return 0;
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);
	struct gt_binary_info *bin = gt_binary(id);
	void *cfg = bpf_map_lookup_elem(config_map, &id);
	if (!bin || !cfg)
		return 0;
	key->tgid = tgid;
	key->reserved = 0;
	key->goid = go_goid(ctx, bin);
	*bin_id = id;
	return cfg;
}
