/**
 * Where a process's resident memory goes, from `/proc/PID/smaps`: each
 * mapping classified by what it holds (the node binary's code and read-only
 * data, shared libraries, the addon, BPF ring buffers, glibc's malloc
 * arenas, thread stacks, JIT code, other anonymous memory such as V8's heap
 * pages). Linux only; the caller needs permission to read the process's maps.
 */
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';

/** One mapping of /proc/PID/smaps, sizes in KiB. */
export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
  rssKiB: number;
  pssKiB: number;
  anonKiB: number;
}

/** Resident memory per class, in KiB (RSS; PSS beside it for shared file pages). */
export interface MemoryBreakdown {
  rssKiB: Record<string, number>;
  pssKiB: Record<string, number>;
  /** glibc arenas besides the main one (each a 64 MiB-aligned reservation). */
  mallocArenas: number;
  /** The process's threads by name (comm), with counts. */
  threads: Record<string, number>;
  totalRssKiB: number;
}

export function readSmaps(pid: number): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'latin1').split('\n')) {
    const h = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (h) {
      cur = { start: BigInt(`0x${h[1]}`), end: BigInt(`0x${h[2]}`), perms: h[3]!, path: h[4]!, rssKiB: 0, pssKiB: 0, anonKiB: 0 };
      out.push(cur);
      continue;
    }
    const f = /^(Rss|Pss|Anonymous):\s+(\d+) kB/.exec(line);
    if (f && cur) {
      const v = Number(f[2]);
      if (f[1] === 'Rss') cur.rssKiB = v;
      else if (f[1] === 'Pss') cur.pssKiB = v;
      else cur.anonKiB = v;
    }
  }
  return out;
}

const ARENA = 64n << 20n;
const STACK_MIN = 1n << 20n;

/**
 * Classifies each mapping. Anonymous memory has no name, so its classes are
 * inferred from shape: a non-main malloc arena starts on a 64 MiB boundary
 * and, with the inaccessible rest that follows it, spans 64 MiB; a thread
 * stack is a writable mapping of at least 1 MiB right after a one-page guard;
 * executable anonymous memory is V8's generated code; the rest (V8's heap
 * pages, malloc's mmapped large blocks, buffers) is "other anonymous".
 */
export function breakdown(pid: number, nodeBinary: string): MemoryBreakdown {
  const maps = readSmaps(pid);
  const node = realpathSync(nodeBinary);
  const rss: Record<string, number> = {};
  const pss: Record<string, number> = {};
  const add = (k: string, m: Mapping): void => {
    rss[k] = (rss[k] ?? 0) + m.rssKiB;
    pss[k] = (pss[k] ?? 0) + m.pssKiB;
  };
  let arenas = 0;
  for (let i = 0; i < maps.length; i++) {
    const m = maps[i]!;
    const prev = maps[i - 1];
    const next = maps[i + 1];
    let k: string;
    if (m.path === node) k = m.perms.includes('x') ? 'node binary: code' : m.perms.includes('w') ? 'node binary: data' : 'node binary: read-only data';
    else if (m.path.includes('gotrail_native')) k = 'addon';
    else if (/libbpf|libelf|libz\./.test(m.path)) k = 'libbpf, libelf, libz';
    else if (m.path.startsWith('/')) k = m.path.endsWith('.node') || /\.so(\.|$)/.test(m.path) ? 'other shared libraries' : `other files (${basename(m.path)})`;
    else if (m.path.startsWith('anon_inode:bpf')) k = 'BPF maps (ring buffers)';
    else if (m.path === '[heap]') k = 'malloc: main arena ([heap])';
    else if (m.path === '[stack]') k = 'main thread stack';
    else if (m.path.startsWith('[')) k = m.path;
    else if (m.perms.includes('x')) k = 'JIT code (anonymous executable)';
    else if (m.perms.startsWith('rw') && m.start % ARENA === 0n && next && next.start === m.end && next.perms.startsWith('---') && next.end - m.start === ARENA) {
      k = 'malloc: thread arenas';
      arenas++;
    } else if (m.perms.startsWith('rw') && m.end - m.start >= STACK_MIN && prev && prev.end === m.start && prev.perms.startsWith('---') && prev.end - prev.start === 4096n) k = 'thread stacks';
    else if (m.perms.startsWith('---')) k = 'reserved (no access)';
    else k = 'other anonymous (V8 heap pages, large malloc blocks)';
    add(k, m);
  }
  const threads: Record<string, number> = {};
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const c = readFileSync(`/proc/${pid}/task/${t}/comm`, 'latin1').trim();
      threads[c] = (threads[c] ?? 0) + 1;
    } catch {
      // the thread ended meanwhile
    }
  }
  return { rssKiB: rss, pssKiB: pss, mallocArenas: arenas, threads, totalRssKiB: maps.reduce((s, m) => s + m.rssKiB, 0) };
}
