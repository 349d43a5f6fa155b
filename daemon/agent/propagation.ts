/**
 * Cross-node context propagation without writing user memory: the
 * socket-level traceparent injection of probes/inject/inject.bpf.c (sock_ops
 * on the cgroup v2 root, sk_msg on the sockmap it fills) and its destination
 * rules, and the node-local linking switch. See docs/cross-node-propagation.md.
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { BpfObject } from '../native/index.ts';
import { BpfMaps, BpfPrograms, InjectFlags, InjectHostRule, InjectLimits, InjectOutcome, LinkFlags } from '../generated/layouts.ts';
import type { Logger } from '../util/log.ts';

/** Options of header propagation (`--no-inject-traceparent`, `--inject-allow`, `--inject-deny`, `--no-local-linking`). */
export interface PropagationOptions {
  /** Add a W3C traceparent to outgoing HTTP/1.x requests of traced processes. Default true. */
  inject?: boolean;
  /**
   * Destinations that get the header, each a CIDR (`10.0.0.0/8`, `fd00::/8`,
   * a bare address), a host name, `*.domain` (every name below domain) or
   * `*` (everything). Empty (the default): every destination not denied.
   * Host rules match the request URL's host, CIDRs the connection's peer address.
   */
  allow?: readonly string[];
  /** Destinations that never get the header, as for `allow`; deny wins over allow. Default: none. */
  deny?: readonly string[];
  /** Executables (path globs, as `--exclude-exe`) that are traced but whose requests never get the header. Default: none. */
  excludeExe?: readonly string[];
  /**
   * Link a client span to the server span of the same connection when both
   * ends are on this node. Default true; off, only a received traceparent
   * links (used to test propagation between network namespaces of one host).
   */
  localLinking?: boolean;
  /** cgroup v2 directory whose processes' connections may be injected into. Default: the host's cgroup v2 root. */
  cgroupPath?: string;
}

/** One destination rule, parsed. */
export type DestinationRule = { kind: 'cidr'; addr: Buffer; prefixLen: number } | { kind: 'host'; name: string; subdomains: boolean };

/** Parses one allow/deny entry; throws an Error naming the entry when it is neither a CIDR nor a supported host glob. */
export function parseDestination(entry: string): DestinationRule[] {
  const s = entry.trim().toLowerCase();
  if (s === '*') return [...parseDestination('0.0.0.0/0'), ...parseDestination('::/0')];
  const slash = s.indexOf('/');
  const ip = slash >= 0 ? s.slice(0, slash) : s;
  const family = isIP(ip);
  if (family) {
    const max = family === 4 ? 32 : 128;
    const len = slash >= 0 ? Number(s.slice(slash + 1)) : max;
    if (!Number.isInteger(len) || len < 0 || len > max || (slash >= 0 && s.slice(slash + 1) === '')) throw new Error(`destination "${entry}": prefix length must be 0 to ${max}`);
    const addr = Buffer.alloc(16);
    if (family === 4) {
      addr[10] = 0xff;
      addr[11] = 0xff;
      ip.split('.').forEach((o, i) => (addr[12 + i] = Number(o)));
    } else {
      const halves: string[] = ip.split('::');
      const h: string[] = halves[0] ? halves[0].split(':') : [];
      const t: string[] = halves[1] ? halves[1].split(':') : [];
      const fill: string[] = new Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0');
      const groups: string[] = halves.length > 1 ? [...h, ...fill, ...t] : h;
      if (groups.length !== 8 || groups.some((g) => g.includes('.'))) throw new Error(`destination "${entry}": IPv6 address not supported in this form`);
      groups.forEach((g, i) => addr.writeUInt16BE(parseInt(g || '0', 16), 2 * i));
    }
    return [{ kind: 'cidr', addr, prefixLen: family === 4 ? 96 + len : len }];
  }
  const subdomains = s.startsWith('*.');
  const name = subdomains ? s.slice(2) : s;
  if (!/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
    throw new Error(`destination "${entry}": expected a CIDR, a host name, *.domain or *`);
  }
  if (name.length >= InjectLimits.GT_INJECT_HOST_MAX) throw new Error(`destination "${entry}": host names of at most ${InjectLimits.GT_INJECT_HOST_MAX - 1} characters are supported`);
  return [{ kind: 'host', name, subdomains }];
}

/** The cgroup v2 mount point (the root of the unified hierarchy) in `mountinfo`; undefined when none is mounted. */
export function cgroup2Root(mountinfo = '/proc/self/mountinfo'): string | undefined {
  for (const line of readFileSync(mountinfo, 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    if (line.slice(sep + 3).split(' ')[0] === 'cgroup2') return line.split(' ')[4];
  }
  return undefined;
}

/**
 * The host's cgroup v2 root, as this process can open it: the host's init
 * (pid 1, with hostPID) sees the whole hierarchy, where a container's own
 * mount shows only its cgroup namespace; its root directory is reached
 * through /proc/1/root. Falls back to this process's own view when pid 1's
 * root cannot be opened.
 */
export function hostCgroup2Root(): string | undefined {
  try {
    const m = cgroup2Root('/proc/1/mountinfo');
    // readable mountinfo does not mean an openable root (pid 1 may be of
    // another user namespace): the directory must be there for us
    if (m && statSync(`/proc/1/root${m}`).isDirectory()) return `/proc/1/root${m}`;
  } catch {
    /* no access to pid 1: this process's view */
  }
  return cgroup2Root();
}

/** What `inspect`, /status and the metrics say about injection. */
export interface PropagationStatus {
  /** on: header injection attached; off: turned off by configuration; unavailable: the kernel refused (see reason) */
  injection: 'on' | 'off' | 'unavailable';
  reason?: string;
  cgroup?: string;
  localLinking: boolean;
  allow: readonly string[];
  deny: readonly string[];
}

const OUTCOME_NAMES: ReadonlyArray<[number, string]> = Object.entries(InjectOutcome)
  .filter(([k]) => k !== 'GT_INJECT_OUT_MAX')
  .map(([k, v]) => [v, k.replace('GT_INJECT_OUT_', '').toLowerCase()]);

/** Sets up propagation on a loaded object; never throws (a refusal is logged and reported). */
export class HeaderPropagation {
  readonly status: PropagationStatus;
  private readonly obj: BpfObject;

  /** `refused`: why the kernel refused the injection programs at load, if it did. */
  constructor(obj: BpfObject, opts: PropagationOptions, log: Logger, refused?: string) {
    this.obj = obj;
    const localLinking = opts.localLinking ?? true;
    this.status = { injection: 'off', localLinking, allow: opts.allow ?? [], deny: opts.deny ?? [] };
    const u32 = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n >>> 0);
      return b;
    };
    obj.mapUpdate(BpfMaps.gt_link_flags, u32(0), u32(localLinking ? 0 : LinkFlags.GT_LINK_LOCAL_OFF));
    if (!(opts.inject ?? true)) return;
    const allow = (opts.allow ?? []).flatMap(parseDestination);
    const deny = (opts.deny ?? []).flatMap(parseDestination);
    const hosts = new Map<string, number>();
    const put = (rules: DestinationRule[], map: string, exact: number, sub: number): void => {
      for (const r of rules) {
        if (r.kind === 'cidr') {
          const k = Buffer.alloc(20);
          k.writeUInt32LE(r.prefixLen);
          r.addr.copy(k, 4);
          obj.mapUpdate(map, k, u32(1));
        } else {
          hosts.set(r.name, (hosts.get(r.name) ?? 0) | (r.subdomains ? sub : exact));
        }
      }
    };
    put(allow, BpfMaps.gt_inject_allow_cidrs, InjectHostRule.GT_INJECT_HOST_ALLOW, InjectHostRule.GT_INJECT_HOST_ALLOW_SUBDOMAINS);
    put(deny, BpfMaps.gt_inject_deny_cidrs, InjectHostRule.GT_INJECT_HOST_DENY, InjectHostRule.GT_INJECT_HOST_DENY_SUBDOMAINS);
    for (const [name, bits] of hosts) {
      const k = Buffer.alloc(InjectLimits.GT_INJECT_HOST_MAX);
      k.write(name, 'latin1');
      obj.mapUpdate(BpfMaps.gt_inject_hosts, k, u32(bits));
    }
    // the rules hold whichever method injects (the socket-level one, or
    // bpf_probe_write_user where the kernel allows it): set before either
    const ruleFlags = (allow.length ? InjectFlags.GT_INJECT_ALLOW_LIST : 0) | (hosts.size ? InjectFlags.GT_INJECT_HOST_RULES : 0) |
      (deny.some((r) => r.kind === 'cidr') ? InjectFlags.GT_INJECT_DENY_CIDRS : 0);
    const ruleSettings = Buffer.alloc(8);
    ruleSettings.writeUInt32LE(ruleFlags);
    obj.mapUpdate(BpfMaps.gt_inject_settings, u32(0), ruleSettings);
    const cgroup = opts.cgroupPath ?? hostCgroup2Root();
    this.status.cgroup = cgroup;
    try {
      if (refused) throw new Error(refused);
      if (!cgroup) throw new Error('no cgroup v2 hierarchy is mounted');
      // the sk_msg program first: a connection entering the sockmap is then
      // handled from its first send
      obj.attachSocket(BpfPrograms.gt_inject_msg, BpfMaps.gt_inject_socks);
      obj.attachSocket(BpfPrograms.gt_inject_sockops, cgroup);
    } catch (e) {
      this.status.injection = 'unavailable';
      this.status.reason = (e as Error).message.split('\n')[0];
      log.warn('traceparent injection unavailable: traces break at calls to other nodes', { reason: this.status.reason });
      return;
    }
    const flags = InjectFlags.GT_INJECT_ENABLED | ruleFlags;
    const settings = Buffer.alloc(8);
    settings.writeUInt32LE(flags);
    obj.mapUpdate(BpfMaps.gt_inject_settings, u32(0), settings);
    this.status.injection = 'on';
  }

  /** Injection outcomes since start, by name (injected, marked, denied, not_in_sockmap, …). */
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [idx, name] of OUTCOME_NAMES) {
      const v = this.obj.mapLookup(BpfMaps.gt_inject_counters, Buffer.from(new Uint32Array([idx]).buffer));
      let sum = 0n;
      if (v) for (let o = 0; o + 8 <= v.length; o += 8) sum += v.readBigUInt64LE(o);
      out[name] = Number(sum);
    }
    return out;
  }
}
