/**
 * Finds Go processes through /proc. Each pid is checked once per lifetime
 * (its start time tells a reused pid from the old one); each distinct binary
 * (device + inode of /proc/PID/exe, which resolves inside the process's own
 * mount namespace) is checked for Go once.
 */
import { type BigIntStats, closeSync, constants, fstatSync, openSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { readGoVersion } from '../analysis/go-binary.ts';
import { GoBinaryError } from '../analysis/errors.ts';
import type { BinaryKey } from './attachments.ts';
import { inodeString, keyString } from './attachments.ts';
import { LruCache } from '../util/lru.ts';

export interface ProcessInfo {
  pid: number;
  startTime: string;
  exe: string;
  /**
   * Path the kernel and the analysis open: `/proc/self/fd/N` of a descriptor
   * opened on the executable when the process was first looked at, so the
   * file stays reachable when the process exits mid-attach (a short-lived
   * process). Valid until {@link releaseProcessInfo}.
   */
  exePath: string;
  /** The descriptor behind exePath; -1 once released. */
  fd: number;
  name: string;
  key: BinaryKey;
  goVersion: string;
}

export type ProbeResult =
  | { kind: 'go'; info: ProcessInfo }
  /** `unreadableElf`: the first look at a file with an ELF header that could
   * not be read (a corrupt section table…), with the reason; later looks at
   * the same file leave it out (the answer is cached). */
  | { kind: 'not-go'; unreadableElf?: { exe: string; reason: string } }
  | { kind: 'gone' }
  | { kind: 'unreadable'; reason: string };

/**
 * The fields of /proc/PID/stat after the process's name (field 3 onwards:
 * index 0 is the state); undefined once the process is gone.
 */
export function readStatFields(pid: number, procRoot = '/proc'): string[] | undefined {
  try {
    // as UTF-8: Node reads that into a string directly, where another
    // encoding reads a file of unknown size (all of /proc) into a new 16 KiB
    // buffer each time, which an idle heap frees late (one per exec on the
    // host); the fields after the name are ASCII, whatever bytes the name has
    const stat = readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/PID/stat: start time in clock ticks since boot. */
export function readStartTime(pid: number, procRoot = '/proc'): string | undefined {
  return readStatFields(pid, procRoot)?.[19];
}

/** A binary's identity from a (bigint) stat of it: inode and content. */
function binaryKeyOfStat(st: BigIntStats): BinaryKey {
  return { dev: st.dev, ino: st.ino, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, size: st.size };
}

export function listPids(procRoot = '/proc'): number[] {
  const out: number[] = [];
  for (const name of readdirSync(procRoot)) {
    const n = Number(name);
    if (Number.isInteger(n) && n > 0) out.push(n);
  }
  return out;
}

/**
 * Why the executable of a process that exited before it was looked at could
 * not be found by its exec event's path: `cwd_gone`, a relative path, and
 * neither the process nor its parent was there to resolve it against;
 * `not_found`, every place the path was tried names no file or another file
 * than the one executed (deleted, replaced, or a parent that changed
 * directory); `no_path`, the exec event carried no path.
 */
export type UnresolvedReason = 'cwd_gone' | 'not_found' | 'no_path';

export type ExitedProbeResult = ProbeResult | { kind: 'unresolved'; reason: UnresolvedReason };

/**
 * Opens `path` when it is the file `expected`. `base`: the path's directory
 * part through /proc (a cwd or root link) could be reached, whatever the
 * file turned out to be.
 */
function openMatching(path: string, expected: BinaryKey): { fd?: number; base: boolean } {
  const want = keyString(expected);
  let fd: number;
  try {
    // another file is never opened: the path may name a device whose open
    // acts (a tape rewinds) or a FIFO by now
    if (keyString(binaryKeyOfStat(statSync(path, { bigint: true }))) !== want) return { base: true };
    // without blocking: the path may have become a FIFO since the stat,
    // whose open would wait for a writer and stop the agent (the check
    // below refuses it)
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    // ENOENT also when the cwd link is gone: tell the two apart by the link
    const m = /^(.*\/\d+\/(?:cwd|root))\//.exec(path);
    let base = m === null || (e as NodeJS.ErrnoException).code !== 'ENOENT';
    if (!base) {
      try {
        statSync(m![1]!);
        base = true;
      } catch {
        /* gone with its process */
      }
    }
    return { base };
  }
  try {
    if (keyString(binaryKeyOfStat(fstatSync(fd, { bigint: true }))) === want) return { fd, base: true };
  } catch {
    /* refused below */
  }
  closeSync(fd);
  return { base: true };
}

function notGo(exe: string, unreadable: string | undefined): ProbeResult {
  return unreadable === undefined ? { kind: 'not-go' } : { kind: 'not-go', unreadableElf: { exe, reason: unreadable } };
}

export class GoProcessProbe {
  /** binary key → Go version, or null for non-Go binaries (most recent binaries only) */
  private readonly binaryCache = new LruCache<string, string | null>(8192);
  private readonly procRoot: string;

  constructor(procRoot = '/proc') {
    this.procRoot = procRoot;
  }

  /**
   * Looks at the executable of a process that exited before it could be
   * looked at, by the path its exec event gives (`filename`, the file
   * executed: see the exec hook). `expected` (the exec event's identity of
   * the file) must match exactly: whatever a path resolves to now may be
   * another file of the same name, which is never looked at.
   *
   * A relative path (`./job`, as shells and cron scripts run programs) is
   * resolved against the process's working directory while it is there,
   * else its parent's (`ppid`, 0 when unknown): the launching shell usually
   * still runs, in the directory the process inherited. The /proc cwd and
   * root links lead into the process's own mount namespace (a container's).
   * An absolute path is tried as the agent sees it, then under the
   * process's root, then its parent's.
   *
   * The result holds a descriptor like {@link probe}'s (pid 0, no start time
   * or name); `exe` is the path of the file opened as the agent sees it (an absolute path as given when it led there).
   * `unresolved`: no path led to the file executed, for `reason` (see
   * {@link UnresolvedReason}).
   */
  probeExited(pid: number, ppid: number, filename: string, expected: BinaryKey): ExitedProbeResult {
    if (filename === '') return { kind: 'unresolved', reason: 'no_path' };
    const p = this.procRoot;
    const relative = !filename.startsWith('/');
    const candidates = relative
      ? [`${p}/${pid}/cwd/${filename}`, ...(ppid > 0 ? [`${p}/${ppid}/cwd/${filename}`] : [])]
      : [filename, `${p}/${pid}/root${filename}`, ...(ppid > 0 ? [`${p}/${ppid}/root${filename}`] : [])];
    let anyBase = !relative;
    for (const path of candidates) {
      const opened = openMatching(path, expected);
      if (opened.base) anyBase = true;
      if (opened.fd === undefined) continue;
      return this.judgeFile(opened.fd, path === filename ? filename : undefined, expected);
    }
    return { kind: 'unresolved', reason: anyBase ? 'not_found' : 'cwd_gone' };
  }

  /**
   * Looks at the open descriptor `fd` of a file with identity `key`; takes
   * ownership of fd. `name`: the file's path as the agent sees it, when the
   * file was opened by it; else the name is read from the descriptor.
   */
  private judgeFile(fd: number, name: string | undefined, key: BinaryKey): ProbeResult {
    let handedOver = false;
    try {
      const exePath = `/proc/self/fd/${fd}`;
      // the name of the very file opened, as a live process's exe link gives it
      const exe = name ?? readlinkSync(exePath).replace(/ \(deleted\)$/, '');
      const { goVersion, unreadable } = this.goVersionOf(key, exePath);
      if (goVersion === null) return notGo(exe, unreadable);
      handedOver = true;
      return { kind: 'go', info: { pid: 0, startTime: '', exe, exePath, fd, name: '', key, goVersion } };
    } catch {
      return { kind: 'gone' };
    } finally {
      if (!handedOver) closeSync(fd);
    }
  }

  private goVersionOf(key: BinaryKey, path: string): { goVersion: string | null; unreadable?: string } {
    const k = keyString(key);
    const cached = this.binaryCache.get(k);
    if (cached !== undefined) return { goVersion: cached };
    let goVersion: string | null = null;
    let unreadable: string | undefined;
    try {
      goVersion = readGoVersion(path)?.goVersion ?? null;
    } catch (e) {
      // scripts run through binfmt, other architectures and files we may not
      // read are not ours; an ELF file the kernel runs but whose headers or Go
      // metadata the analysis finds damaged may be a Go program left untraced
      if (!(e instanceof GoBinaryError) || e.code === 'CORRUPT' || e.code === 'TRUNCATED') unreadable = (e as Error).message;
    }
    this.binaryCache.set(k, goVersion);
    return unreadable === undefined ? { goVersion } : { goVersion, unreadable };
  }

  /** Whether any process runs the file device:inode (`${dev}:${ino}` as stat gives them) now: one stat per process. */
  anyProcessRuns(inode: string): boolean {
    for (const pid of listPids(this.procRoot)) {
      try {
        const st = statSync(`${this.procRoot}/${pid}/exe`, { bigint: true });
        if (inodeString(st) === inode) return true;
      } catch {
        /* kernel threads, gone */
      }
    }
    return false;
  }

  /** The identity of the file a process runs now; undefined when it is gone. */
  currentKey(pid: number): BinaryKey | undefined {
    try {
      return binaryKeyOfStat(statSync(`${this.procRoot}/${pid}/exe`, { bigint: true }));
    } catch {
      return undefined;
    }
  }

  /**
   * Looks at one process. A Go process's result holds a descriptor on its
   * executable (see {@link ProcessInfo.exePath}): the caller must pass it to
   * {@link releaseProcessInfo} once the binary is attached or ignored.
   */
  probe(pid: number): ProbeResult {
    const link = `${this.procRoot}/${pid}/exe`;
    let exe: string;
    let fd: number;
    try {
      // the descriptor first: it keeps the very file the process runs,
      // whatever happens to the process or the path afterwards
      fd = openSync(link, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // kernel threads have no executable; a vanished pid is not an error
      if (code === 'ENOENT' || code === 'ESRCH') return { kind: 'gone' };
      return { kind: 'unreadable', reason: `${link}: ${(e as Error).message}` };
    }
    let handedOver = false;
    try {
      let key: BinaryKey;
      try {
        key = binaryKeyOfStat(fstatSync(fd, { bigint: true }));
        exe = readlinkSync(link).replace(/ \(deleted\)$/, '');
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ESRCH') return { kind: 'gone' };
        return { kind: 'unreadable', reason: `${link}: ${(e as Error).message}` };
      }
      const exePath = `/proc/self/fd/${fd}`;
      const startTime = readStartTime(pid, this.procRoot);
      if (startTime === undefined) return { kind: 'gone' };
      const { goVersion, unreadable } = this.goVersionOf(key, exePath);
      if (goVersion === null) return notGo(exe, unreadable);
      let name = '';
      try {
        name = readFileSync(`${this.procRoot}/${pid}/comm`, 'utf8').trim();
      } catch {
        return { kind: 'gone' };
      }
      handedOver = true;
      return { kind: 'go', info: { pid, startTime, exe, exePath, fd, name, key, goVersion } };
    } finally {
      if (!handedOver) closeSync(fd);
    }
  }
}

/** Closes the descriptor a {@link ProcessInfo} holds on its executable. Idempotent. */
export function releaseProcessInfo(info: ProcessInfo): void {
  if (info.fd < 0) return;
  try {
    closeSync(info.fd);
  } catch {
    /* already closed */
  }
  info.fd = -1;
}
