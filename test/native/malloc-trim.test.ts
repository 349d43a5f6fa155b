// mallocTrim gives the free pages inside glibc's arenas back to the kernel:
// what start-up and attach bursts allocate and free would otherwise stay in
// the agent's RSS. Needs no root.
//
// Run: deploy/node --expose-gc --test test/native/malloc-trim.test.ts

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { mallocTrim } from '../../daemon/native/index.ts';
import { MemoryTrim } from '../../daemon/agent/memory-trim.ts';

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
    const t = new MemoryTrim({ trim: r.trim, gc: r.gc, quietMs: 1000 });
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
    const t = new MemoryTrim({ trim: () => (reductions++, { heapBytes: 1, freeBytes: 0 }), gc: slowGc, quietMs: 100, maxTimeShare: 0.01 });
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

  it('trims without a GC when none is exposed, and never throws', async () => {
    const r = recorder();
    const t = new MemoryTrim({ trim: r.trim, gc: undefined, quietMs: 10 });
    t.activity();
    await until(() => r.calls.length >= 1);
    await wait(100);
    assert.deepEqual(r.calls, ['trim']);
    const failing = new MemoryTrim({ trim: () => {
      throw new Error('no addon');
    }, gc: undefined, quietMs: 10 });
    failing.activity();
    await wait(300);
    assert.equal(failing.reductions, 0);
  });
});
