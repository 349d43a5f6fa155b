// mallocTrim gives the free pages inside glibc's arenas back to the kernel:
// what start-up and attach bursts allocate and free would otherwise stay in
// the agent's RSS; the page-out gives back the file pages (node's code) that
// the idle agent does not use. Needs no root.
//
// Run: deploy/node --expose-gc --test test/native/malloc-trim.test.ts

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mallocTrim } from '../../daemon/native/index.ts';
import { MemoryTrim, readOnlyFileMappings } from '../../daemon/agent/memory-trim.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const rssMiB = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'latin1'))![1]) / 1024;
const gc = (globalThis as { gc?: () => void }).gc;

describe('mallocTrim', () => {
  it('returns the freed pages of the arena to the kernel', { skip: gc ? false : 'needs --expose-gc' }, async () => {
    // 48 MiB in chunks under glibc's mmap threshold, so they come from the
    // arena; one live chunk above them keeps free() from shrinking the heap's top itself
    const chunks: Buffer[] = [];
    for (let i = 0; i < 48 * 1024; i++) chunks.push(Buffer.alloc(1024, 1));
    const pin = Buffer.alloc(1024, 2);
    chunks.length = 0;
    for (let i = 0; i < 3; i++) {
      gc!();
      await new Promise((r) => setTimeout(r, 50));
    }
    const before = rssMiB();
    const s = mallocTrim();
    const after = rssMiB();
    assert.equal(pin[0], 2);
    assert.ok(s.heapBytes > 0 && s.freeBytes >= 0 && s.freeBytes <= s.heapBytes, JSON.stringify(s));
    assert.ok(before - after >= 32, `RSS ${before.toFixed(1)} -> ${after.toFixed(1)} MiB after freeing 48 MiB and trimming`);
  });
});

describe('MemoryTrim', () => {
  const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  // timers run late on a busy machine: wait for the expected state rather than a fixed time
  const until = async (done: () => boolean, ms = 10_000): Promise<void> => {
    for (const end = performance.now() + ms; !done() && performance.now() < end;) await wait(20);
  };
  const recorder = (): { calls: string[]; trim: () => { heapBytes: number; freeBytes: number }; gc: () => void } => {
    const calls: string[] = [];
    return { calls, trim: () => (calls.push('trim'), { heapBytes: 1, freeBytes: 0 }), gc: () => void calls.push('gc') };
  };

  it('reduces once, a quiet time after the last activity: a GC, then the trim', async () => {
    const r = recorder();
    const t = new MemoryTrim({ trim: r.trim, gc: r.gc, quietMs: 1000, pageOut: null });
    for (let i = 0; i < 5; i++) {
      t.activity();
      await wait(50);
    }
    assert.deepEqual(r.calls, [], 'nothing while activity keeps coming');
    const lastActivity = performance.now();
    await until(() => r.calls.length >= 2);
    assert.ok(performance.now() - lastActivity >= 1000, 'not before the quiet time');
    assert.deepEqual(r.calls, ['gc', 'trim']);
    assert.equal(t.reductions, 1);
    assert.deepEqual(t.last, { heapBytes: 1, freeBytes: 0 });
    await wait(1500);
    assert.deepEqual(r.calls, ['gc', 'trim'], 'idle: no further reduction without new activity');
    t.activity();
    t.stop();
    await wait(1500);
    assert.deepEqual(r.calls, ['gc', 'trim'], 'stop() cancels a pending reduction');
  });

  it('keeps the time reductions take under maxTimeShare', async () => {
    let reductions = 0;
    // a reduction that takes 20 ms, with at most 1% of the time: the next one no sooner than 2 s after
    const slowGc = (): void => {
      const end = performance.now() + 20;
      while (performance.now() < end);
    };
    const t = new MemoryTrim({ trim: () => (reductions++, { heapBytes: 1, freeBytes: 0 }), gc: slowGc, quietMs: 100, maxTimeShare: 0.01, pageOut: null });
    t.activity();
    await until(() => reductions >= 1);
    assert.equal(reductions, 1);
    t.activity();
    await wait(900);
    assert.equal(reductions, 1, 'the second waits');
    // about 2 s after the first (later if the machine stretched the 20 ms)
    for (let i = 0; i < 100 && reductions < 2; i++) await wait(100);
    assert.equal(reductions, 2);
    t.stop();
  });

  it('tidies up after idle housekeeping: a regular full GC and the trim, once per round, leaving the reduction and page-out alone', async () => {
    const calls: string[] = [];
    const t = new MemoryTrim({
      trim: () => (calls.push('trim'), { heapBytes: 1, freeBytes: 0 }),
      gc: (o) => void calls.push(`gc:${o?.type ?? 'major'}:${o?.flavor ?? 'regular'}`),
      pageOut: () => (calls.push('pageOut'), { advised: 1, errno: 0 }),
      quietMs: 100_000, pageOutQuietMs: 200_000, tidyAfterMs: 300,
    });
    // a busy host: exec and exit events keep coming
    const first = performance.now();
    for (let i = 0; i < 5; i++) {
      t.housekeeping();
      await wait(20);
    }
    await until(() => t.tidies >= 1);
    assert.ok(performance.now() - first >= 300, 'not before tidyAfterMs');
    assert.deepEqual(calls, ['gc:major:regular', 'trim']);
    assert.equal(t.reductions, 0, 'housekeeping is not activity: no full reduction');
    // more housekeeping: another round
    t.housekeeping();
    await until(() => t.tidies >= 2);
    assert.deepEqual(calls, ['gc:major:regular', 'trim', 'gc:major:regular', 'trim']);
    await wait(600);
    assert.equal(t.tidies, 2, 'nothing without new housekeeping');
    assert.equal(t.pageOuts, 0);
    t.stop();
  });

  it('does not tidy while span traffic keeps a reduction pending: the reduction does it once quiet', async () => {
    const calls: string[] = [];
    const t = new MemoryTrim({
      trim: () => (calls.push('trim'), { heapBytes: 1, freeBytes: 0 }),
      gc: (o) => void calls.push(`gc:${o?.type ?? 'major'}:${o?.flavor ?? 'regular'}`),
      pageOut: null, quietMs: 1500, tidyAfterMs: 100,
    });
    t.activity();
    t.housekeeping();
    await until(() => t.reductions >= 1);
    assert.deepEqual(calls, ['gc:major:last-resort', 'trim']);
    assert.equal(t.tidies, 0);
    t.stop();
  });

  it('trims without a GC when none is exposed, and never throws', async () => {
    const r = recorder();
    const t = new MemoryTrim({ trim: r.trim, gc: undefined, quietMs: 10, pageOut: null });
    t.activity();
    await until(() => r.calls.length >= 1);
    await wait(100);
    assert.deepEqual(r.calls, ['trim']);
    const failing = new MemoryTrim({ trim: () => {
      throw new Error('no addon');
    }, gc: undefined, quietMs: 10, pageOut: null });
    failing.activity();
    await wait(300);
    assert.equal(failing.reductions, 0);
  });
});

describe('page-out of file pages', () => {
  const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const until = async (done: () => boolean, ms = 10_000): Promise<void> => {
    for (const end = performance.now() + ms; !done() && performance.now() < end;) await wait(20);
  };

  it('follows the reduction once the quiet has lasted pageOutQuietMs, once, and waits for new activity', async () => {
    const calls: string[] = [];
    const t = new MemoryTrim({
      trim: () => (calls.push('trim'), { heapBytes: 1, freeBytes: 0 }), gc: () => void calls.push('gc'),
      pageOut: () => (calls.push('pageOut'), { advised: 3, errno: 0 }), quietMs: 200, pageOutQuietMs: 3000, firstPageOutQuietMs: 3000,
    });
    // the test's own steps between a trim and the page-out that follows get
    // 2.3 s (3000 - 200 - the 500 ms between GC and trim): room for a busy machine
    t.activity();
    const lastActivity = performance.now();
    await until(() => calls.includes('pageOut'));
    assert.ok(performance.now() - lastActivity >= 3000, 'not before its quiet time');
    assert.deepEqual(calls, ['gc', 'trim', 'pageOut']);
    assert.deepEqual(t.lastPageOut, { advised: 3, errno: 0 });
    await wait(3500);
    assert.deepEqual(calls, ['gc', 'trim', 'pageOut'], 'idle: nothing more without new activity');
    // activity between the trim and the page-out: a reduction again, and the page-out only after it
    calls.length = 0;
    t.activity();
    await until(() => calls.includes('trim'));
    t.activity();
    const again = performance.now();
    await until(() => calls.length >= 4);
    assert.deepEqual(calls, ['gc', 'trim', 'gc', 'trim'], 'activity after the trim: the next reduction comes first');
    await until(() => calls.includes('pageOut'));
    assert.ok(performance.now() - again >= 3000, 'the page-out waits its quiet time from the last activity');
    assert.deepEqual(calls, ['gc', 'trim', 'gc', 'trim', 'pageOut']);
    t.stop();
  });

  it('pages out after start-up with the first reduction, later ones after pageOutQuietMs', async () => {
    const calls: string[] = [];
    const t = new MemoryTrim({
      trim: () => (calls.push('trim'), { heapBytes: 1, freeBytes: 0 }), gc: () => void calls.push('gc'),
      pageOut: () => (calls.push('pageOut'), { advised: 1, errno: 0 }), quietMs: 200, pageOutQuietMs: 3000,
    });
    t.activity();
    await until(() => calls.includes('pageOut'));
    assert.deepEqual(calls, ['gc', 'trim', 'pageOut'], 'start-up: the page-out follows the first trim');
    calls.length = 0;
    t.activity();
    const last = performance.now();
    await until(() => calls.includes('pageOut'));
    assert.ok(performance.now() - last >= 3000, 'the next waits its quiet time from the last activity');
    assert.deepEqual(calls, ['gc', 'trim', 'pageOut']);
    t.stop();
  });

  it('pages out again once housekeeping after a page-out has been quiet for pageOutQuietMs', async () => {
    const calls: string[] = [];
    const t = new MemoryTrim({
      trim: () => (calls.push('trim'), { heapBytes: 1, freeBytes: 0 }), gc: () => void calls.push('gc'),
      pageOut: () => (calls.push('pageOut'), { advised: 1, errno: 0 }), quietMs: 100, pageOutQuietMs: 2000, tidyAfterMs: 100,
    });
    t.activity();
    await until(() => t.pageOuts >= 1);
    calls.length = 0;
    // exec events for a while: one tidy-up per round, no page-out while they keep coming
    const end = performance.now() + 3000;
    let lastHousekeeping = 0;
    while (performance.now() < end) {
      lastHousekeeping = performance.now();
      t.housekeeping();
      await wait(50);
    }
    assert.equal(t.pageOuts, 1, 'not while housekeeping goes on');
    assert.ok(t.tidies >= 2, `tidies ${t.tidies}`);
    await until(() => t.pageOuts >= 2);
    // (a timer fires up to 1 ms early: Node rounds its time down to whole ms)
    assert.ok(performance.now() - lastHousekeeping >= 2000 - 2, 'after the housekeeping\'s quiet');
    assert.deepEqual(calls.slice(-1), ['pageOut']);
    assert.equal(t.reductions, 1, 'housekeeping runs no full reduction');
    await wait(2500);
    assert.equal(t.pageOuts, 2, 'once');
    t.stop();
  });

  it('reclaims the resident pages of the node executable when no other process maps them', () => {
    // a private copy of node (flushed to disk: the kernel reclaims only clean
    // file pages), so that no other process shares its pages
    const dir = mkdtempSync(join(tmpdir(), 'gotrail-pageout-'));
    try {
      const node = join(dir, 'node');
      copyFileSync(process.execPath, node);
      const fd = openSync(node, 'r');
      fsyncSync(fd);
      closeSync(fd);
      chmodSync(node, 0o755);
      const script = `
        import { readFileSync } from 'node:fs';
        import { pageOutFileMappings } from ${JSON.stringify(pathToFileURL(join(repoRoot, 'daemon/agent/memory-trim.ts')).href)};
        const nodeRss = () => { let kib = 0, on = false;
          for (const l of readFileSync('/proc/self/smaps', 'latin1').split('\\n')) {
            if (/^[0-9a-f]+-/.test(l)) on = l.endsWith(${JSON.stringify(node)});
            else if (on && l.startsWith('Rss:')) kib += Number(l.split(/\\s+/)[1]);
          }
          return kib / 1024; };
        const before = nodeRss();
        const r = pageOutFileMappings();
        const after = nodeRss();
        process.stdout.write(JSON.stringify({ before, after, r }));`;
      const out = JSON.parse(execFileSync(node, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as { before: number; after: number; r: { advised: number; errno: number } };
      assert.equal(out.r.errno, 0, `madvise refused: ${JSON.stringify(out)}`);
      assert.ok(out.r.advised > 0);
      assert.ok(out.before >= 10, `node's resident pages before: ${out.before.toFixed(1)} MiB`);
      assert.ok(out.after <= out.before / 2, `node's resident pages ${out.before.toFixed(1)} -> ${out.after.toFixed(1)} MiB`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads only read-only file mappings', () => {
    const maps = [
      '00400000-0074d000 r--p 00000000 08:01 12 /usr/bin/node',
      '0074d000-03081000 r-xp 0034d000 08:01 12 /usr/bin/node',
      '06b87000-06bae000 rw-p 06786000 08:01 12 /usr/bin/node',
      '7f0000000000-7f0000200000 rw-s 00000000 00:0f 99 anon_inode:bpf-map',
      '7f0000200000-7f0000300000 rw-p 00000000 00:00 0 ',
      '7f0000300000-7f0000301000 r--p 00000000 08:01 13 /tmp/x (deleted)',
      '7f0000400000-7f0000401000 ---p 00000000 08:01 14 /usr/lib/libc.so.6',
      '7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]',
    ].join('\n');
    assert.deepEqual(readOnlyFileMappings(maps), [0x400000, 0x34d000, 0x74d000, 0x3081000 - 0x74d000]);
  });
});
