/**
 * Finds Go processes through /proc. Each pid is checked once per lifetime
 * (its start time tells a reused pid from the old one); each distinct binary
 * (device + inode of /proc/PID/exe, which resolves inside the process's own
 * mount namespace) is checked for Go once.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { readGoVersion } from '../analysis/go-binary.ts';
import type { BinaryKey } from './attachments.ts';
import { keyString } from './attachments.ts';
import { LruCache } from '../util/lru.ts';

export interface ProcessInfo {
  pid: number;
  startTime: string;
  exe: string;
  /** path the kernel and the analysis can open, valid while the process lives */
  exePath: string;
  name: string;
  key: BinaryKey;
  goVersion: string;
}

export type ProbeResult =
  | { kind: 'go'; info: ProcessInfo }
  | { kind: 'not-go' }
  | { kind: 'gone' }
  | { kind: 'unreadable'; reason: string };

/** Field 22 of /proc/PID/stat: start time in clock ticks since boot. */
export function readStartTime(pid: number, procRoot = '/proc'): string | undefined {
  try {
    const stat = readFileSync(`${procRoot}/${pid}/stat`, 'latin1');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

export function listPids(procRoot = '/proc'): number[] {
  const out: number[] = [];
  for (const name of readdirSync(procRoot)) {
    const n = Number(name);
    if (Number.isInteger(n) && n > 0) out.push(n);
  }
  return out;
}

export class GoProcessProbe {
  /** binary key → Go version, or null for non-Go binaries (most recent binaries only) */
  private readonly binaryCache = new LruCache<string, string | null>(8192);
  private readonly procRoot: string;

  constructor(procRoot = '/proc') {
    this.procRoot = procRoot;
  }

  probe(pid: number): ProbeResult {
    const exePath = `${this.procRoot}/${pid}/exe`;
    let exe: string;
    let key: BinaryKey;
    try {
      exe = readlinkSync(exePath).replace(/ \(deleted\)$/, '');
      const st = statSync(exePath, { bigint: true });
      key = { dev: st.dev, ino: st.ino, mtimeNs: st.mtimeNs, size: st.size };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // kernel threads have no executable; a vanished pid is not an error
      if (code === 'ENOENT' || code === 'ESRCH') return { kind: 'gone' };
      return { kind: 'unreadable', reason: `${exePath}: ${(e as Error).message}` };
    }
    const startTime = readStartTime(pid, this.procRoot);
    if (startTime === undefined) return { kind: 'gone' };
    const k = keyString(key);
    let cached = this.binaryCache.get(k);
    if (cached === undefined) {
      try {
        cached = readGoVersion(exePath)?.goVersion ?? null;
      } catch {
        cached = null; // non-ELF (scripts run through binfmt), truncated: not ours
      }
      // a process that exited mid-read says nothing about its binary
      if (readStartTime(pid, this.procRoot) !== startTime) return { kind: 'gone' };
      this.binaryCache.set(k, cached);
    }
    const goVersion: string | null = cached;
    if (goVersion === null) return { kind: 'not-go' };
    let name = '';
    try {
      name = readFileSync(`${this.procRoot}/${pid}/comm`, 'utf8').trim();
    } catch {
      return { kind: 'gone' };
    }
    return { kind: 'go', info: { pid, startTime, exe, exePath, name, key, goVersion } };
  }
}
