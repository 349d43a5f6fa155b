// The native addon against the real kernel: a real BPF object, a real Go
// binary, uprobe_multi and single-uprobe attachment, the ring buffer path,
// maps, program statistics and error shapes.
//
// Run: deploy/node --test test/native/*.test.ts   (as root)

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, before } from 'node:test';
import type * as Native from '../../daemon/native/index.ts';
import {
  Collector,
  Counter,
  GoWorker,
  blockUntil,
  decodeBatch,
  firstGap,
  readCounter,
  sleep,
  threadNames,
  buildFixtures,
  fixturesDir,
  repoRoot,
  skipReason,
  symbolFileOffset,
  u32,
  u64,
  unusedPid,
  type Fixtures,
} from './support.ts';

const skip = skipReason();
/** The nice value of each thread of this process (field 19 of /proc/self/task/TID/stat), by thread id. */
function threadNices(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      // fields after the command name, which is in parentheses and may hold spaces
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
    } catch {
      // a thread that ended meanwhile
    }
  }
  return out;
}

const native: typeof Native | undefined = skip ? undefined : await import('../../daemon/native/index.ts');

const COOKIE_WORK = 0x1122334455667788n;
const COOKIE_OTHER = 0xfedcba9876543210n;
const BPF_MAP_TYPE_RINGBUF = 27;
const BPF_NOEXIST = 1;

/** Asserts a thrown NativeError with the given code, returning it. */
function expectError(fn: () => unknown, code: string, operation: RegExp): Native.NativeError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Error, 'expected an Error to be thrown');
  assert.ok(native!.isNativeError(caught), `not a NativeError: ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.operation, operation);
  assert.match(caught.message, new RegExp(`^${escape(caught.operation)}: .+ \\(errno ${caught.errno}\\)`));
  return caught;
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function runChild(args: string[], opts: { prefix?: string[]; nodeFlags?: string[]; reuseBatches?: boolean } = {}) {
  const node = process.execPath;
  const cmd = [...(opts.prefix ?? []), node, ...(opts.nodeFlags ?? []), join(fixturesDir, 'child.ts'), ...args];
  const env = { ...process.env, GOTRAIL_TEST_REUSE_BATCHES: opts.reuseBatches ? '1' : '0' };
  return spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 20_000, env });
}

describe('native addon', { skip, timeout: 120_000 }, () => {
  let fx: Fixtures;
  let workOffset: number;
  let otherOffset: number;
  const { BpfObject, kernelFeatures, enableStats } = native ?? ({} as typeof Native);

  before(() => {
    fx = buildFixtures();
    workOffset = symbolFileOffset(fx.worker, 'main.Work');
    otherOffset = symbolFileOffset(fx.worker, 'main.Other');
  });

  it('reports kernel features', () => {
    const f = kernelFeatures();
    assert.equal(typeof f.uprobeMulti, 'boolean');
    assert.equal(typeof f.probeWriteUser, 'boolean');
    assert.ok(['none', 'integrity', 'confidentiality', 'unknown'].includes(f.lockdown));
    if (f.lockdown === 'integrity' || f.lockdown === 'confidentiality') assert.equal(f.probeWriteUser, false);
    // as root, without securityfs too, the level is inferred from the verifier
    if (process.getuid?.() === 0) assert.equal(f.lockdown === 'none', f.probeWriteUser);
  });

  it('enableStats turns on run-time statistics', () => {
    assert.equal(enableStats(), true);
    assert.equal(enableStats(), true);
    assert.equal(kernelFeatures().bpfStatsEnabled, true);
  });

  it('open errors name the operation and errno', () => {
    expectError(() => new BpfObject('/nonexistent/x.bpf.o'), 'ENOENT', /^open BPF object \/nonexistent\/x\.bpf\.o$/);
    expectError(() => new BpfObject(fx.object, { autoload: ['no_such_prog'] }), 'ENOENT', /^open BPF object /);
    expectError(() => new BpfObject(fx.object, { mapMaxEntries: { nope: 8 } }), 'ENOENT', /resize map nope$/);
  });

  it('load errors carry the verifier log', () => {
    const o = new BpfObject(fx.badObject);
    try {
      const err = expectError(() => o.load(), 'EACCES', /^load BPF object .*bad_fixture\.bpf\.o$/);
      assert.match(err.log ?? '', /invalid mem access|R0 .*null/i, err.message);
      assert.ok(err.message.includes(err.log ?? '\0'), 'message includes the log');
    } finally {
      o.close();
    }
  });

  it('autoload loads only the named programs; mapMaxEntries resizes', () => {
    const o = new BpfObject(fx.badObject, { autoload: ['good'], mapMaxEntries: { slots: 16 } });
    try {
      assert.deepEqual(o.programNames().sort(), ['good', 'refused']);
      assert.equal(o.mapInfo('slots').maxEntries, 16);
      o.load();
      assert.equal(o.loaded, true);
      assert.deepEqual(o.programStats().map((p) => p.name), ['good']);
      o.mapUpdate('slots', u32(1), u64(2n));
      assert.equal(o.mapCount('slots'), 1);
    } finally {
      o.close();
    }
  });

  it('shareMapsFrom: a second object uses a loaded object\'s maps of the same name', () => {
    const a = new BpfObject(fx.badObject, { autoload: ['good'] });
    const unloaded = new BpfObject(fx.badObject, { autoload: ['good'] });
    try {
      expectError(() => new BpfObject(fx.badObject, { shareMapsFrom: {} as Native.BpfObject }), 'EINVAL', /share maps$/);
      expectError(() => new BpfObject(fx.badObject, { shareMapsFrom: unloaded }), 'EBADF', /share maps$/);
      a.load();
      const b = new BpfObject(fx.badObject, { autoload: ['good'], shareMapsFrom: a });
      try {
        b.load();
        b.mapUpdate('slots', u32(3), u64(42n));
        assert.equal(a.mapLookup('slots', u32(3))?.readBigUInt64LE(), 42n, 'one map');
      } finally {
        b.close();
      }
      assert.equal(a.mapLookup('slots', u32(3))?.readBigUInt64LE(), 42n, 'still there once the sharer closed');
    } finally {
      a.close();
      unloaded.close();
    }
  });

  it('maps: update, lookup, delete, keys, count', () => {
    const o = new BpfObject(fx.object);
    try {
      assert.deepEqual(o.mapInfo('events'), { type: BPF_MAP_TYPE_RINGBUF, keySize: 0, valueSize: 0, maxEntries: 256 * 1024 });
      expectError(() => o.mapUpdate('kv', u32(1), u64(1n)), 'EBADF', /^update map kv$/);
      o.load();
      assert.equal(o.mapCount('kv'), 0);
      for (let i = 1; i <= 5; i++) o.mapUpdate('kv', u32(i), u64(BigInt(i * 100)));
      assert.equal(o.mapCount('kv'), 5);
      assert.equal(o.mapLookup('kv', u32(3))?.readBigUInt64LE(), 300n);
      assert.equal(o.mapLookup('kv', u32(42)), null);
      const keys = o.mapKeys('kv').map((k) => k.readUInt32LE()).sort();
      assert.deepEqual(keys, [1, 2, 3, 4, 5]);
      assert.equal(o.mapKeys('kv', 2).length, 2);
      assert.equal(o.mapDelete('kv', u32(3)), true);
      assert.equal(o.mapDelete('kv', u32(3)), false);
      assert.equal(o.mapCount('kv'), 4);
      expectError(() => o.mapUpdate('kv', u32(1), u64(9n), BPF_NOEXIST), 'EEXIST', /^update map kv$/);
      expectError(() => o.mapUpdate('kv', Buffer.alloc(8), u64(9n)), 'EINVAL', /^update map kv$/);
      expectError(() => o.mapLookup('nope', u32(1)), 'ENOENT', /^lookup in map nope$/);
      // Per-CPU maps exchange one 8-byte slot per possible CPU.
      const perCpu = o.mapLookup('percpu', u32(0));
      assert.ok(perCpu !== null && perCpu.length % 8 === 0 && perCpu.length >= 8);
      const values = Buffer.alloc(perCpu.length);
      for (let i = 0; i < values.length / 8; i++) values.writeUInt32LE(i + 1, i * 8);
      o.mapUpdate('percpu', u32(1), values);
      assert.deepEqual(o.mapLookup('percpu', u32(1)), values);
      assert.equal(o.mapCount('counters'), 10);
    } finally {
      o.close();
    }
  });

  /**
   * The whole uprobe path for one attach mode: N hits give exactly N records
   * with the site's cookie and the worker's tgid; detach stops them; a second
   * link with two sites reports per-site cookies.
   */
  async function exerciseUprobes(openOpts: Native.OpenOptions, attachOpts: Native.UprobeAttachOptions, kind: Native.LinkKind) {
    const N = 100;
    enableStats();
    const o = new BpfObject(fx.object, openOpts);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const c = new Collector();
      o.startRingBuffer('events', c.onBatch, { intervalMs: 2 });
      const h1 = o.attachUprobes('on_work', fx.worker, [workOffset], [COOKIE_WORK], attachOpts);
      assert.deepEqual(o.linkSets(), [{ handle: h1, program: 'on_work', target: fx.worker, kind, sites: 1 }]);

      await worker.run(N);
      await c.waitFor(N);
      assert.equal(c.records.length, N);
      for (const r of c.records) {
        assert.equal(r.cookie, COOKIE_WORK);
        assert.equal(r.tgid, worker.pid);
      }
      assert.deepEqual(c.records.map((r) => r.seq), Array.from({ length: N }, (_, i) => BigInt(i)));
      const stats = o.programStats().find((p) => p.name === 'on_work');
      assert.equal(stats?.runCount, BigInt(N));
      assert.ok((stats?.runTimeNs ?? 0n) > 0n);

      o.detach(h1);
      assert.deepEqual(o.linkSets(), []);
      await worker.run(N);
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(c.records.length, N, 'no records after detach');

      // the same without blocking the event loop: gone from linkSets() at
      // once, released on a pool thread, unknown handles refused up front
      const ha = o.attachUprobes('on_work', fx.worker, [workOffset], [COOKIE_WORK], attachOpts);
      await worker.run(1);
      await c.waitFor(N + 1);
      assert.equal(c.records.length, N + 1);
      expectError(() => o.detachAsync([ha, 999_999]), 'ENOENT', /^detach link set 999999$/);
      assert.equal(o.linkSets().length, 1, 'an unknown handle detaches nothing');
      const pending = o.detachAsync([ha]);
      assert.deepEqual(o.linkSets(), []);
      await pending;
      await worker.run(N);
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(c.records.length, N + 1, 'no records after detachAsync');
      c.records.splice(N);

      // one closing thread for several links (what one link's close costs,
      // measured by bench/detach-cost.ts): every one of them goes
      const hs = [workOffset, otherOffset, workOffset].map((off) => o.attachUprobes('on_work', fx.worker, [off], [COOKIE_WORK], attachOpts));
      expectError(() => o.detachAsync(hs, { threads: 0 }), 'EINVAL', /^detach$/);
      expectError(() => o.detachAsync(hs, { threads: 1025 }), 'EINVAL', /^detach$/);
      assert.equal(o.linkSets().length, 3, 'a bad option detaches nothing');
      assert.deepEqual(await o.detachAsync(hs, { threads: 1 }), { reniced: false });
      assert.deepEqual(o.linkSets(), []);
      await worker.run(N);
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(c.records.length, N, 'no records after detachAsync with one thread');

      // closing threads at a nice value of their own (root may lower it):
      // every link goes, and every thread of this process keeps its own
      const niceHs = [workOffset, otherOffset].map((off) => o.attachUprobes('on_work', fx.worker, [off], [COOKIE_WORK], attachOpts));
      expectError(() => o.detachAsync(niceHs, { nice: -21 }), 'EINVAL', /^detach$/);
      expectError(() => o.detachAsync(niceHs, { nice: 20 }), 'EINVAL', /^detach$/);
      assert.equal(o.linkSets().length, 2, 'a bad nice detaches nothing');
      const ownNice = threadNices().get(process.pid);
      assert.deepEqual(await o.detachAsync(niceHs, { nice: -20 }), { reniced: true });
      assert.deepEqual(o.linkSets(), []);
      assert.deepEqual([...threadNices()].filter(([, n]) => n !== ownNice), [], 'the pool thread is given its nice value back');
      await worker.run(N);
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(c.records.length, N, 'no records after detachAsync at nice -20');

      const h2 = o.attachUprobes('on_work', fx.worker, [workOffset, otherOffset], [COOKIE_WORK, COOKIE_OTHER], attachOpts);
      assert.equal(o.linkSets()[0]?.sites, 2);
      assert.notEqual(h2, h1);
      await worker.run(10);
      await o.stopRingBuffer(); // drains what is left
      const second = c.records.slice(N);
      assert.equal(second.filter((r) => r.cookie === COOKIE_WORK).length, 10);
      assert.equal(second.filter((r) => r.cookie === COOKIE_OTHER).length, 1);
      assert.equal(second.length, 11);

      const rs = o.ringBufferStats();
      // + 1: the record of the detachAsync round, taken out of c.records above
      assert.equal(rs.records, BigInt(N + 12));
      assert.equal(rs.bytes, BigInt((N + 12) * 24));
      assert.equal(rs.batches, BigInt(c.batchSizes.length));
      assert.equal(rs.droppedRecords, 0n);
    } finally {
      await worker.stop();
      o.close();
    }
  }

  it('uprobe_multi: one link per call, exact records and cookies', async (t) => {
    if (!kernelFeatures().uprobeMulti) return t.skip('kernel has no uprobe_multi links');
    const o = new BpfObject(fx.object);
    assert.equal(o.uprobeMulti, true);
    o.close();
    await exerciseUprobes({}, {}, 'uprobe_multi');
  });

  it('single uprobes when the object is opened with uprobeMulti: false', async () => {
    await exerciseUprobes({ uprobeMulti: false }, { forceSingle: true }, 'uprobe');
  });

  it('SEC("uprobe") programs attach as single uprobes; forceSingle needs a single-mode object', async (t) => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const c = new Collector();
      o.startRingBuffer('events', c.onBatch);
      const h = o.attachUprobes('on_work_single', fx.worker, [workOffset], [5n], { pid: worker.pid });
      assert.equal(o.linkSets()[0]?.kind, 'uprobe');
      await worker.run(20);
      await o.stopRingBuffer();
      assert.equal(c.records.length, 20);
      assert.ok(c.records.every((r) => r.cookie === 5n && r.tgid === worker.pid));
      o.detach(h);
      if (!o.uprobeMulti) return t.skip('object is not in uprobe_multi mode');
      expectError(
        () => o.attachUprobes('on_work', fx.worker, [workOffset], [1n], { forceSingle: true }),
        'EINVAL',
        /^attach uprobes prog on_work to /,
      );
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('detachAsync where the nice value may not be lowered (no CAP_SYS_NICE): the links go at the caller\'s priority', () => {
    // a child process of root without CAP_SYS_NICE and with RLIMIT_NICE 0, which allows no lowering
    const script = `
      const { BpfObject } = await import(${JSON.stringify(join(repoRoot, 'daemon', 'native', 'index.ts'))});
      const o = new BpfObject(${JSON.stringify(fx.object)});
      o.load();
      const h = o.attachUprobes('on_work', ${JSON.stringify(fx.worker)}, [${workOffset}], [1n]);
      const r = await o.detachAsync([h], { nice: -20 });
      console.log(JSON.stringify({ ...r, linkSets: o.linkSets().length }));
      o.close();`;
    const r = spawnSync('prlimit', ['--nice=0', '--', 'setpriv', '--bounding-set=-sys_nice', '--inh-caps=-sys_nice', '--', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { reniced: false, linkSets: 0 });
  });

  it('attach errors: missing binary, unknown program, gone process, unknown handle', () => {
    for (const opts of [{}, { uprobeMulti: false }] as Native.OpenOptions[]) {
      if (opts.uprobeMulti !== false && !kernelFeatures().uprobeMulti) continue;
      const o = new BpfObject(fx.object, opts);
      try {
        o.load();
        const kind = o.uprobeMulti ? 'uprobe_multi' : 'uprobe';
        const err = expectError(
          () => o.attachUprobes('on_work', '/nonexistent/bin', [0x1000, 0x2000], [1n, 2n]),
          'ENOENT',
          new RegExp(`^attach ${kind} prog on_work to /nonexistent/bin `),
        );
        if (kind === 'uprobe_multi') assert.match(err.operation, /\(2 sites\)$/);
        expectError(() => o.attachUprobes('no_such_prog', fx.worker, [workOffset], [1n]), 'ENOENT', /no_such_prog/);
        if (o.uprobeMulti) {
          expectError(
            () => o.attachUprobes('on_work', fx.worker, [workOffset], [1n], { pid: unusedPid() }),
            'ESRCH',
            /^attach uprobe_multi prog on_work to .* \(1 site\)$/,
          );
        }
        expectError(() => o.attachUprobes('on_work', fx.worker, [workOffset], [1n, 2n]), 'EINVAL', /^attach uprobes/);
        expectError(() => o.attachUprobes('on_exec', fx.worker, [workOffset], [1n]), 'EINVAL', /^attach uprobes/);
        expectError(() => o.detach(12345), 'ENOENT', /^detach link set 12345$/);
        assert.deepEqual(o.linkSets(), []);
      } finally {
        o.close();
      }
    }
  });

  it('ring buffer: batches are framed, 8-byte aligned and bounded by maxBatchBytes', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const c = new Collector();
      const sizes: number[] = [];
      o.startRingBuffer('events', (b, s) => {
        sizes.push(b.length);
        assert.equal(typeof s.batches, 'bigint');
        c.onBatch(b);
      }, { maxBatchBytes: 64, intervalMs: 1 });
      o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
      await worker.run(30);
      await c.waitFor(30);
      await o.stopRingBuffer();
      assert.equal(c.records.length, 30);
      // 24-byte records frame to 32 bytes: at most two per 64-byte batch.
      assert.ok(sizes.every((s) => s <= 64 && s % 32 === 0), sizes.join(','));
      assert.ok(sizes.length >= 15);
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('ring buffer wrap: records split across the end of the ring arrive whole and in order', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const got: Buffer[] = [];
      o.startRingBuffer('odd', (b) => {
        for (const r of decodeBatch(b)) got.push(Buffer.from(r));
      }, { intervalMs: 1 });
      o.attachUprobes('on_odd', fx.worker, [workOffset], [1n]);
      // 56 framed bytes a record: 60 fit into the 4096-byte ring, and each
      // round is taken out before the next, so none is lost; 40 rounds pass
      // the ring's end 32 times, each time inside a record.
      const ROUND = 60;
      const ROUNDS = 40;
      for (let i = 1; i <= ROUNDS; i++) {
        await worker.run(ROUND);
        const deadline = Date.now() + 5_000;
        while (got.length < i * ROUND && Date.now() < deadline) await sleep(2);
      }
      await o.stopRingBuffer();
      assert.equal(readCounter(o, Counter.fullOdd), 0n);
      assert.equal(got.length, ROUND * ROUNDS);
      assert.ok((ROUND * ROUNDS * 56) / 4096 >= 32);
      for (const [n, r] of got.entries()) {
        assert.equal(r.length, 44);
        assert.equal(r.readUInt32LE(0), n, 'in order');
        for (let i = 0; i < 40; i++) assert.equal(r[4 + i], (n + i) & 0xff, `record ${n}, byte ${4 + i}`);
      }
    } finally {
      await worker.stop();
      o.close();
    }
  });

  /** Attaches on_work, and on_side at main.Other with `sideCookie` (odd: NO_WAKEUP). */
  function attachBoth(o: Native.BpfObject, sideCookie: bigint): void {
    o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
    o.attachUprobes('on_side', fx.worker, [otherOffset], [sideCookie]);
  }

  it('ring buffer backpressure: a consumer blocked during a flood loses nothing that left the kernel', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const N = 40_000; // 5x what the 256 KiB ring holds
      const maxQueuedBatches = 2;
      const c = new Collector();
      let first = true;
      let maxQueued = 0;
      o.startRingBuffer('events', (batch, stats) => {
        maxQueued = Math.max(maxQueued, stats.queuedBatches);
        c.onBatch(batch);
        if (!first) return;
        first = false;
        // The whole flood runs while the event loop is blocked here.
        worker.send(N);
        blockUntil(() => readCounter(o, Counter.hitsEvents) === BigInt(N + 1), 'the flood');
      }, { maxQueuedBatches, maxBatchBytes: 4096, intervalMs: 1 });
      o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
      worker.send(1);
      await worker.done();
      await worker.done(60_000);
      const full = readCounter(o, Counter.fullEvents);
      assert.ok(full > 0n, 'the flood overflowed the kernel ring buffer while JS was blocked');
      await c.waitFor(N + 1 - Number(full), 30_000);
      await o.stopRingBuffer();

      const s = o.ringBufferStats('events');
      assert.equal(BigInt(c.records.length) + full, BigInt(N + 1), 'produced == delivered + BPF-side overflow');
      assert.equal(firstGap(c.records.map((r) => r.seq)), -1, 'every record that left the kernel arrived, in order');
      assert.equal(s.droppedRecords, 0n);
      assert.equal(s.droppedBatches, 0n);
      assert.equal(s.records, BigInt(c.records.length));
      assert.ok(s.stalls > 0n, 'the poll thread waited for JS');
      assert.ok(maxQueued <= maxQueuedBatches, `queued ${maxQueued} > ${maxQueuedBatches}`);
      assert.equal(s.queuedBatches, 0);
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('ring buffer reuseBatches: a few buffers carry every batch, none is written while onBatch reads it, nothing is lost', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const N = 20_000;
      const maxQueuedBatches = 2;
      const c = new Collector();
      const buffers = new Set<ArrayBufferLike>();
      let changed = 0;
      let blocked = 0;
      let calls = 0;
      o.startRingBuffer('events', (batch) => {
        buffers.add(batch.buffer);
        const atEntry = Buffer.from(batch);
        c.onBatch(batch);
        // Some callbacks hold on while the worker keeps producing: the
        // poll thread fills every other slot meanwhile (it stalls once
        // maxQueuedBatches are out), and must not touch this one.
        if (calls++ % 2 === 0 && blocked < 20) {
          blocked++;
          const stalls = o.ringBufferStats('events').stalls;
          blockUntil(() => o.ringBufferStats('events').stalls > stalls || readCounter(o, Counter.hitsEvents) >= BigInt(N), 'the poll thread to fill the other slots');
        }
        if (!batch.equals(atEntry)) changed++;
      }, { reuseBatches: true, maxQueuedBatches, maxBatchBytes: 4096, intervalMs: 1 });
      o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
      worker.send(N);
      await worker.done(60_000);
      const full = readCounter(o, Counter.fullEvents);
      await c.waitFor(N - Number(full), 30_000);
      await o.stopRingBuffer();
      const s = o.ringBufferStats('events');
      assert.equal(changed, 0, 'a batch changed while onBatch read it');
      assert.ok(blocked > 0);
      assert.equal(BigInt(c.records.length) + full, BigInt(N), 'produced == delivered + BPF-side overflow');
      assert.equal(firstGap(c.records.map((r) => r.seq)), -1, 'every record that left the kernel arrived, in order');
      assert.equal(s.droppedRecords, 0n);
      assert.ok(c.batchSizes.length > 50, `only ${c.batchSizes.length} batches`);
      // the batch being filled, one sealed and waiting, and those out to JS
      assert.ok(buffers.size <= maxQueuedBatches + 2, `${buffers.size} buffers for ${c.batchSizes.length} batches`);
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('ring buffer pause: nothing is delivered while paused, what fitted arrives after resume', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const c = new Collector();
      o.startRingBuffer('events', c.onBatch, { intervalMs: 2 });
      o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
      await worker.run(10);
      await c.waitFor(10);
      assert.equal(c.records.length, 10);

      assert.equal(o.pauseRingBuffer('events', true), true);
      const N = 20_000; // more than the ring holds
      await worker.run(N);
      await sleep(100); // 50 intervals
      assert.equal(c.records.length, 10, 'nothing delivered while paused');
      const full = readCounter(o, Counter.fullEvents);
      assert.ok(full > 0n, 'records that did not fit are counted by the BPF side');

      assert.equal(o.pauseRingBuffer('events', false), true);
      const expected = 10 + N - Number(full);
      await c.waitFor(expected);
      assert.equal(c.records.length, expected, 'everything that fitted arrives after resume');
      await o.stopRingBuffer();
      assert.equal(c.records.length, expected);
      assert.equal(firstGap(c.records.map((r) => r.seq)), -1);
      assert.equal(o.ringBufferStats('events').droppedRecords, 0n);
      assert.equal(o.pauseRingBuffer('events', true), false, 'nothing to pause after stop');
      assert.equal(o.pauseRingBuffer('side', true), false, 'nothing to pause on a map that never ran');
      expectError(() => o.pauseRingBuffer('events', 1 as unknown as boolean), 'EINVAL', /^pause ring buffer events$/);
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('two ring buffers at once: one flooded and paused, the other still delivers', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const events = new Collector();
      const side = new Collector();
      assert.deepEqual(threadNames(/^gotrail-rb/), []);
      o.startRingBuffer('events', events.onBatch, { intervalMs: 2 });
      o.startRingBuffer('side', side.onBatch, { intervalMs: 2 });
      const threads = threadNames(/^gotrail-rb/);
      assert.equal(threads.length, 2, threads.join(','));
      assert.ok(threads.every((t) => /^gotrail-rb-\d+$/.test(t)) && threads[0] !== threads[1], threads.join(','));
      expectError(() => o.startRingBuffer('side', () => {}), 'EBUSY', /^start ring buffer side$/);
      attachBoth(o, 2n);

      assert.equal(o.pauseRingBuffer('events', true), true);
      const N = 5_000;
      for (let k = 1; k <= 3; k++) {
        await worker.run(N);
        await side.waitFor(k);
        assert.equal(side.records.length, k, `side record ${k} delivered while events is paused`);
      }
      assert.equal(events.records.length, 0);
      const full = readCounter(o, Counter.fullEvents);
      assert.ok(full > 0n, 'events overflowed');
      assert.deepEqual(side.records.map((r) => [r.cookie, r.seq]), [[2n, 0n], [2n, 1n], [2n, 2n]]);
      assert.equal(o.ringBufferStats('side').records, 3n);
      assert.equal(o.ringBufferStats('events').records, 0n);

      await o.stopRingBuffer('side'); // only that one
      assert.equal(threadNames(/^gotrail-rb/).length, 1);
      assert.equal(o.pauseRingBuffer('events', false), true);
      const expected = 3 * N - Number(full);
      await events.waitFor(expected);
      await o.stopRingBuffer();
      assert.deepEqual(threadNames(/^gotrail-rb/), []);
      assert.equal(events.records.length, expected);
      assert.equal(firstGap(events.records.map((r) => r.seq)), -1);
      const se = o.ringBufferStats('events');
      const ss = o.ringBufferStats('side');
      const all = o.ringBufferStats();
      assert.equal(se.records, BigInt(expected));
      assert.equal(ss.records, 3n);
      assert.equal(all.records, se.records + ss.records);
      assert.equal(all.batches, se.batches + ss.batches);
      assert.equal(all.droppedRecords, 0n);
      expectError(() => o.ringBufferStats('nope'), 'ENOENT', /^read ring buffer stats nope$/);
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('wakeup mode delivers a record submitted with a wakeup at once, and NO_WAKEUP records on the timer', async () => {
    const INTERVAL = 10_000;
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const c = new Collector();
      // Control: timer mode does not look at the ring before its tick...
      o.startRingBuffer('side', c.onBatch, { intervalMs: INTERVAL });
      const h = o.attachUprobes('on_side', fx.worker, [otherOffset], [0n]);
      await worker.run(0); // main.Other once: one record, submitted with a wakeup
      await sleep(300);
      assert.equal(c.records.length, 0, 'timer mode waits for its tick');
      await o.stopRingBuffer('side'); // ...and stop drains it at once
      assert.equal(c.records.length, 1);

      o.startRingBuffer('side', c.onBatch, { intervalMs: INTERVAL, wakeup: true });
      await sleep(50); // the poll thread is asleep
      const latencies: number[] = [];
      for (let i = 2; i <= 4; i++) {
        const t0 = performance.now();
        worker.send(0);
        await c.waitFor(i, 5_000);
        latencies.push(performance.now() - t0);
        assert.equal(c.records.length, i);
        await worker.done();
      }
      assert.ok(latencies.every((ms) => ms < 1_000), `latencies ${latencies.map((ms) => ms.toFixed(1)).join(', ')} ms, interval ${INTERVAL} ms`);
      await o.stopRingBuffer('side');

      // NO_WAKEUP records in wakeup mode: seen on the timer.
      o.detach(h);
      o.attachUprobes('on_side', fx.worker, [otherOffset], [1n]);
      o.startRingBuffer('side', c.onBatch, { intervalMs: 100, wakeup: true });
      await worker.run(0);
      await c.waitFor(5, 5_000);
      assert.equal(c.records.length, 5);
      assert.equal(c.records[4]?.cookie, 1n);
      await o.stopRingBuffer();
      assert.deepEqual(c.records.map((r) => r.seq), [0n, 1n, 2n, 3n, 4n]);
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('consumeRingBufferNow hands over what the ring holds without waiting for the tick', async () => {
    const INTERVAL = 10_000;
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    try {
      o.load();
      const c = new Collector();
      assert.equal(o.consumeRingBufferNow('side'), false, 'nothing runs on that map yet');
      o.startRingBuffer('side', c.onBatch, { intervalMs: INTERVAL });
      o.attachUprobes('on_side', fx.worker, [otherOffset], [0n]);
      await worker.run(0);
      await sleep(300);
      assert.equal(c.records.length, 0, 'timer mode waits for its tick');
      const t0 = performance.now();
      assert.equal(o.consumeRingBufferNow('side'), true);
      await c.waitFor(1, 5_000);
      assert.ok(performance.now() - t0 < 5_000);
      assert.equal(c.records.length, 1);
      // and again, from the wait that follows a hand-off
      await worker.run(0);
      assert.equal(o.consumeRingBufferNow('side'), true);
      await c.waitFor(2, 5_000);
      await o.stopRingBuffer();
      assert.equal(c.records.length, 2);
      assert.equal(o.consumeRingBufferNow('side'), false, 'nothing runs after stop');
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('stop resolves with a full queue, and while paused, delivering what the ring held', async () => {
    const o = new BpfObject(fx.object);
    const worker = new GoWorker(fx.worker);
    const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
      Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what} did not resolve within ${ms} ms`)))]);
    try {
      o.load();
      const N = 20_000;
      const c = new Collector();
      let stopped: Promise<void> | undefined;
      o.startRingBuffer('events', (batch) => {
        c.onBatch(batch);
        if (stopped !== undefined) return;
        worker.send(N);
        blockUntil(() => readCounter(o, Counter.hitsEvents) === BigInt(N + 1), 'the flood');
        blockUntil(() => o.ringBufferStats('events').stalls > 0n, 'the poll thread to wait for JS');
        stopped = o.stopRingBuffer(); // the poll thread holds a full batch and the queue is full
      }, { maxQueuedBatches: 1, maxBatchBytes: 4096, intervalMs: 1 });
      o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
      await worker.run(1);
      await worker.done(60_000);
      assert.ok(stopped !== undefined, 'the flood was sent from the first batch');
      await within(stopped, 20_000, 'stopRingBuffer() with a full queue');
      let full = readCounter(o, Counter.fullEvents);
      assert.ok(full > 0n);
      assert.equal(BigInt(c.records.length) + full, BigInt(N + 1), 'stop delivered everything the ring held');
      assert.equal(firstGap(c.records.map((r) => r.seq)), -1);
      assert.equal(o.ringBufferStats('events').droppedRecords, 0n);

      // Paused with a full ring: stop still drains it.
      const d = new Collector();
      o.startRingBuffer('events', d.onBatch, { maxQueuedBatches: 1, maxBatchBytes: 4096, intervalMs: 1 });
      o.pauseRingBuffer('events', true);
      const before = readCounter(o, Counter.fullEvents);
      await worker.run(N);
      full = readCounter(o, Counter.fullEvents) - before;
      assert.ok(full > 0n);
      await within(o.stopRingBuffer('events'), 20_000, 'stopRingBuffer() while paused');
      assert.equal(BigInt(d.records.length) + full, BigInt(N));
      assert.equal(d.records[0]?.seq, BigInt(c.records.length));
    } finally {
      await worker.stop();
      o.close();
    }
  });

  it('process exit while the poll thread waits for JS exits cleanly', () => {
    for (const reuseBatches of [false, true]) {
      for (const mode of ['exit-with-full-queue', 'worker-exit-with-full-queue']) {
        const r = runChild([mode, fx.object, fx.worker, String(workOffset)], { reuseBatches });
        const what = `${mode}${reuseBatches ? ' (reuseBatches)' : ''}`;
        assert.equal(r.signal, null, `${what}: hung or crashed: ${r.stderr}`);
        assert.equal(r.status, 0, `${what}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /exiting with a stalled poll thread/, what);
      }
    }
  });

  it('ring buffer lifecycle: one per map, stop resolves, restart works', async () => {
    const o = new BpfObject(fx.object);
    try {
      await o.stopRingBuffer(); // nothing running: resolves at once
      expectError(() => o.startRingBuffer('events', () => {}), 'EBADF', /^start ring buffer events$/);
      o.load();
      expectError(() => o.startRingBuffer('kv', () => {}), 'EINVAL', /^start ring buffer kv$/);
      expectError(() => o.startRingBuffer('nope', () => {}), 'ENOENT', /^start ring buffer nope$/);
      o.startRingBuffer('events', () => {});
      expectError(() => o.startRingBuffer('events', () => {}), 'EBUSY', /^start ring buffer events$/);
      const stops = [o.stopRingBuffer(), o.stopRingBuffer()];
      await Promise.all(stops);
      o.startRingBuffer('events', () => {});
      o.close(); // stops it too
      await o.stopRingBuffer();
      assert.equal(o.ringBufferStats().droppedBatches, 0n);
    } finally {
      o.close();
    }
  });

  it('close() is idempotent; later calls throw EBADF', async () => {
    const o = new BpfObject(fx.object);
    o.load();
    o.attachUprobes('on_work', fx.worker, [workOffset], [1n]);
    o.close();
    o.close();
    assert.equal(o.closed, true);
    assert.deepEqual(o.linkSets(), []);
    expectError(() => o.programNames(), 'EBADF', /^list programs$/);
    expectError(() => o.mapCount('kv'), 'EBADF', /^count entries of map kv$/);
    await o.stopRingBuffer();
  });

  it('raw_tp and tp_btf programs attach without tracefs', () => {
    const o = new BpfObject(fx.object);
    try {
      o.load();
      o.attachTracepoint('on_exec_raw', '', 'sched_process_exec');
      o.attachTracepoint('on_exec_btf', '', 'sched_process_exec');
      expectError(() => o.attachTracepoint('on_exec_btf', '', 'sched_process_fork'), 'EINVAL', /^attach BTF tracepoint/);
      expectError(() => o.attachTracepoint('on_work', 'sched', 'sched_process_exec'), 'EINVAL', /^attach tracepoint/);
      spawnSync('/bin/true');
      assert.ok((o.mapLookup('counters', u32(2))?.readBigUInt64LE() ?? 0n) >= 1n);
      assert.ok((o.mapLookup('counters', u32(3))?.readBigUInt64LE() ?? 0n) >= 1n);
      assert.deepEqual(o.linkSets().map((l) => l.kind), ['tracepoint', 'tracepoint']);
    } finally {
      o.close();
    }
  });

  it('classic tracepoints attach where tracefs is mounted', (t) => {
    // tracefs is mounted in a private mount namespace of the child only, so
    // the host is left as it was.
    if (spawnSync('sh', ['-c', 'command -v unshare'], { stdio: 'ignore' }).status !== 0) {
      return t.skip('unshare(1) not available');
    }
    const r = runChild(['tracepoint', fx.object], {
      prefix: ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
        'mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; exec "$@"', 'sh'],
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { hits: string; links: Native.LinkSetInfo[] };
    assert.ok(BigInt(out.hits) >= 1n, r.stdout);
    assert.equal(out.links[0]?.target, 'sched:sched_process_exec');
  });

  it('process.exit() with a running ring buffer exits cleanly', () => {
    for (const reuseBatches of [false, true]) {
      const r = runChild(['exit-with-ring', fx.object], { reuseBatches });
      assert.equal(r.signal, null, r.stderr);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /exiting/);
    }
  });

  it('an exception thrown by onBatch surfaces as an uncaught exception', () => {
    for (const reuseBatches of [false, true]) {
      const r = runChild(['throw-in-callback', fx.object, fx.worker, String(workOffset)], { reuseBatches });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /uncaught: boom from onBatch/);
    }
  });

  it('garbage collection of an object with a running ring buffer stops it', () => {
    for (const reuseBatches of [false, true]) {
      const r = runChild(['gc', fx.object], { nodeFlags: ['--expose-gc'], reuseBatches });
      assert.equal(r.signal, null, `hung or crashed: ${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /exit 0/);
    }
  });
});
