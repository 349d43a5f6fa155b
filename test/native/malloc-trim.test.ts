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
    let chunks: Buffer[] = [];
    for (let i = 0; i < 48 * 1024; i++) chunks.push(Buffer.alloc(1024, 1));
    const pin = Buffer.alloc(1024, 2);
    chunks = [];
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
  it('trims once, after the bursts have been quiet for its quiet time', async () => {
    let calls = 0;
    const t = new MemoryTrim(() => (calls++, { heapBytes: 1, freeBytes: 0 }), 1000);
    for (let i = 0; i < 5; i++) {
      t.burst();
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(calls, 0, 'no trim while bursts keep coming');
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(calls, 1);
    assert.equal(t.trims, 1);
    assert.deepEqual(t.last, { heapBytes: 1, freeBytes: 0 });
    t.burst();
    t.stop();
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(calls, 1, 'stop() cancels a pending trim');
  });

  it('never throws when the trim fails', async () => {
    const t = new MemoryTrim(() => {
      throw new Error('no addon');
    }, 10);
    t.burst();
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(t.trims, 0);
  });
});
