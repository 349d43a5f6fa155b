/**
 * Repairs the code of a process that started while stale uprobes were
 * registered on its executable's inode.
 *
 * Why this exists: uprobes belong to the file (inode + offset). When a binary
 * is rewritten in place while a link set of its old content is still
 * registered, the kernel puts breakpoints into every new mapping of the file
 * at the old offsets; when those uprobes are unregistered, it writes back the
 * byte it saved from the OLD code (one byte on x86), which is wrong for the
 * new code and crashes the program sooner or later. The exec hook stops such
 * a process before its first instruction; once the stale links are gone,
 * this puts the file's own bytes back at every stale site, so the process
 * runs exactly the code on disk.
 *
 * Needs ptrace access to the process (root or CAP_SYS_PTRACE): it writes
 * through /proc/PID/mem.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';

export interface RepairResult {
  /** sites checked (mapped in the process) */
  checked: number;
  /** bytes that differed from the file and were rewritten */
  repaired: number;
}

interface Mapping {
  start: number;
  end: number;
  offset: number;
}

/** Executable mappings of inode `ino` in the process (from /proc/PID/maps). */
function mappingsOf(pid: number, ino: bigint): Mapping[] {
  const out: Mapping[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ (\d+)/.exec(line);
    if (!m || BigInt(m[5]!) !== ino) continue;
    out.push({ start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16), offset: parseInt(m[4]!, 16) });
  }
  return out;
}

/**
 * Makes the byte at every file offset in `sites` equal, in process `pid`, to
 * the byte at that offset of `filePath` (the executable's current content).
 * Throws when the process's memory cannot be read or written.
 */
export function repairStaleSites(pid: number, ino: bigint, filePath: string, sites: Iterable<number>): RepairResult {
  const maps = mappingsOf(pid, ino);
  const file = openSync(filePath, 'r');
  const mem = openSync(`/proc/${pid}/mem`, 'r+');
  const want = Buffer.alloc(1);
  const have = Buffer.alloc(1);
  let checked = 0;
  let repaired = 0;
  try {
    for (const site of new Set(sites)) {
      if (readSync(file, want, 0, 1, site) !== 1) continue;
      for (const m of maps) {
        if (site < m.offset || site >= m.offset + (m.end - m.start)) continue;
        const addr = m.start + (site - m.offset);
        if (readSync(mem, have, 0, 1, addr) !== 1) continue;
        checked++;
        if (have[0] === want[0]) continue;
        writeSync(mem, want, 0, 1, addr);
        repaired++;
      }
    }
  } finally {
    closeSync(mem);
    closeSync(file);
  }
  return { checked, repaired };
}
