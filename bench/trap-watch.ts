/**
 * Watches breakpoints disappear from running processes, on a worker thread
 * (the main thread awaits the detach meanwhile): reads the first byte of
 * every probed site through /proc/PID/mem (root) until none reads 0xCC
 * (int3, the breakpoint a uprobe writes) any more.
 *
 * Main thread: {@link TrapWatch}. Worker: this file run by `new Worker`.
 */
import { closeSync, openSync, readlinkSync, readSync } from 'node:fs';
import { setPriority } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';

/** Virtual addresses of probed sites in one process. */
export interface ProcessSites {
  pid: number;
  addrs: number[];
}

type Request = { sites: ProcessSites[]; gapMs: number; timeoutMs: number };
type Reply =
  | { kind: 'armed'; trapped: number; total: number }
  | { kind: 'gone'; at: bigint; lastTrapAt: bigint; passes: number }
  | { kind: 'error'; message: string };

const INT3 = 0xcc;

/**
 * One watcher thread, reused across detaches. `arm()` checks that every site
 * reads 0xCC now and starts polling; `gone` then resolves with the
 * `process.hrtime.bigint()` instant at which no breakpoint was left (`at`)
 * and that of the last read that still found one (`lastTrapAt`): the
 * breakpoints went in between (about `gapMs` wide, more when the watcher
 * waits for a CPU).
 */
export class TrapWatch {
  private readonly worker = new Worker(new URL(import.meta.url));
  private readonly replies: Reply[] = [];
  private waiter?: (r: Reply) => void;

  constructor() {
    this.worker.on('message', (r: Reply) => {
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(r);
      else this.replies.push(r);
    });
  }

  private next(): Promise<Reply> {
    const r = this.replies.shift();
    return r ? Promise.resolve(r) : new Promise((resolve) => (this.waiter = resolve));
  }

  /**
   * Starts watching `sites`; resolves once polling runs, with a promise of
   * the instant the last breakpoint was seen gone. Throws when a site does
   * not read 0xCC (not attached, or a wrong address) or the process is gone.
   */
  async arm(sites: ProcessSites[], gapMs: number, timeoutMs = 10_000): Promise<{ gone: Promise<{ at: bigint; lastTrapAt: bigint }> }> {
    this.worker.postMessage({ sites, gapMs, timeoutMs } satisfies Request);
    const r = await this.next();
    if (r.kind === 'error') throw new Error(r.message);
    if (r.kind !== 'armed') throw new Error(`trap watch: unexpected ${r.kind}`);
    if (r.trapped !== r.total) throw new Error(`trap watch: ${r.total - r.trapped} of ${r.total} sites do not read 0xCC after attach`);
    return {
      gone: this.next().then((g) => {
        if (g.kind === 'error') throw new Error(g.message);
        if (g.kind !== 'gone') throw new Error(`trap watch: unexpected ${g.kind}`);
        return { at: g.at, lastTrapAt: g.lastTrapAt };
      }),
    };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** Raises this thread's priority (nice -20, root) so that its polls keep time beside a busy load; ignored where not allowed. */
function raisePriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    setPriority(tid, -20);
  } catch {
    // unprivileged: the watch still works, with a coarser resolution under load
  }
}

/**
 * Polls cheaply: sites are read in a fixed order and each pass stops at the
 * first one still trapped (sites seen clear are dropped: nothing attaches
 * them again meanwhile), so a pass costs a read per site cleared since the
 * last one plus one. The true instant lies between the last read of a 0xCC
 * (`lastTrapAt`) and `at`.
 */
function watch(req: Request): Reply[] {
  const byte = Buffer.alloc(1);
  const fds = new Map<number, number>();
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  try {
    const sites: { fd: number; addr: number }[] = [];
    for (const p of req.sites) {
      const fd = openSync(`/proc/${p.pid}/mem`, 'r');
      fds.set(p.pid, fd);
      for (const addr of p.addrs) sites.push({ fd, addr });
    }
    const read = (s: { fd: number; addr: number }): number => (readSync(s.fd, byte, 0, 1, s.addr) === 1 ? byte[0]! : -1);
    const total = sites.length;
    const trapped = sites.filter((s) => read(s) === INT3).length;
    parentPort!.postMessage({ kind: 'armed', trapped, total } satisfies Reply);
    if (trapped !== total) return [];
    const deadline = Date.now() + req.timeoutMs;
    let passes = 0;
    let next = 0;
    let lastTrapAt = process.hrtime.bigint();
    while (next < total) {
      if (read(sites[next]!) !== INT3) {
        next++;
        continue;
      }
      lastTrapAt = process.hrtime.bigint();
      if (Date.now() > deadline) return [{ kind: 'error', message: `trap watch: ${total - next} breakpoints still there after ${req.timeoutMs} ms` }];
      passes++;
      if (req.gapMs > 0) Atomics.wait(sleeper, 0, 0, req.gapMs);
    }
    return [{ kind: 'gone', at: process.hrtime.bigint(), lastTrapAt, passes }];
  } catch (e) {
    return [{ kind: 'error', message: `trap watch: ${(e as Error).message}` }];
  } finally {
    for (const fd of fds.values()) closeSync(fd);
  }
}

if (!isMainThread && parentPort) {
  raisePriority();
  parentPort.on('message', (req: Request) => {
    for (const r of watch(req)) parentPort!.postMessage(r);
  });
}
