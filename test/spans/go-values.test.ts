/**
 * Strings read in place from probe events: a repeated value is the same
 * string (and derived value) again, a changed one is read anew, non-ASCII
 * bytes are never matched by code unit, and an empty first value has its
 * derived value too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RepeatedString, splitHostPort, stringAt } from '../../daemon/spans/go-values.ts';

function field(s: string, size = 32): Buffer {
  const b = Buffer.alloc(size);
  b.write(s, 'utf8');
  return b;
}

test('stringAt: the Go length, cut at the field size, empty for a length of 0 or less', () => {
  const b = field('hello world', 8);
  assert.equal(stringAt(b, 0, 8, 5), 'hello');
  assert.equal(stringAt(b, 0, 8, 11), 'hello wo');
  assert.equal(stringAt(b, 0, 8, 0), '');
  assert.equal(stringAt(b, 0, 8, -1), '');
});

test('RepeatedString: same bytes give the same string and derived value; other bytes are read anew', () => {
  let derived = 0;
  const r = new RepeatedString((s) => {
    derived++;
    return splitHostPort(s);
  });
  // an empty first value: its derived value is there without a read
  assert.equal(r.read(field(''), 0, 32, 0), '');
  assert.deepEqual(r.derived, { host: '', port: undefined });
  const a = r.read(field('127.0.0.1:8080'), 0, 32, 14);
  assert.equal(a, '127.0.0.1:8080');
  assert.deepEqual(r.derived, { host: '127.0.0.1', port: 8080 });
  const calls = derived;
  assert.equal(r.read(field('127.0.0.1:8080'), 0, 32, 14), a);
  assert.equal(derived, calls, 'a repeated value is not derived again');
  assert.equal(r.read(field('127.0.0.1:8081'), 0, 32, 14), '127.0.0.1:8081');
  assert.deepEqual(r.derived, { host: '127.0.0.1', port: 8081 });
  // same length, non-ASCII: never taken for the previous string
  const u1 = r.read(field('é:1'), 0, 32, 4);
  assert.equal(u1, 'é:1');
  assert.equal(r.read(field('è:1'), 0, 32, 4), 'è:1');
  assert.equal(r.read(field(''), 0, 32, 0), '');
  assert.deepEqual(r.derived, { host: '', port: undefined });
});

test('RepeatedString: values that alternate (peers over several connections) are each read once, and never mixed up', () => {
  let derived = 0;
  const r = new RepeatedString((s) => {
    derived++;
    return splitHostPort(s);
  });
  const peers = Array.from({ length: 32 }, (_, i) => `10.0.${i % 3}.7:${51000 + i * 37}`);
  for (const p of peers) r.read(field(p), 0, 32, p.length);
  const calls = derived;
  for (let round = 0; round < 3; round++) {
    for (const p of peers) {
      const s = r.read(field(p), 0, 32, p.length);
      assert.equal(s, p);
      assert.deepEqual(r.derived, splitHostPort(p), `derived value of ${p}`);
    }
  }
  assert.ok(derived - calls < 24, `most alternating values are not read again (${derived - calls} of ${3 * 32} were)`);
  // same length and last bytes as a kept value, other bytes: read anew
  r.read(field('10.0.0.7:51000'), 0, 32, 14);
  assert.equal(r.read(field('10.9.0.7:51000'), 0, 32, 14), '10.9.0.7:51000');
  assert.deepEqual(r.derived, { host: '10.9.0.7', port: 51000 });
  // a kept non-ASCII value is never taken for other bytes of its length
  r.read(field('é:1'), 0, 32, 4);
  r.read(field('x:22'), 0, 32, 4);
  assert.equal(r.read(field('è:1'), 0, 32, 4), 'è:1');
});

test('MonotonicClock: re-measuring the offset does not move it by a measurement\'s jitter', async () => {
  const { MonotonicClock } = await import('../../daemon/spans/clock.ts');
  const clock = new MonotonicClock();
  const stamp = 123_456_789_000n;
  const first = clock.toUnixNano(stamp);
  for (let i = 0; i < 50; i++) {
    clock.resample();
    assert.equal(clock.toUnixNano(stamp), first, `after ${i + 1} re-measurements`);
  }
  // and the offset is the wall clock's, to within the step
  const wall = BigInt(Date.now()) * 1_000_000n;
  const now = clock.toUnixNano(process.hrtime.bigint());
  assert.ok(now - wall < 3_000_000n && wall - now < 3_000_000n, `${now} vs ${wall}`);
});

test('MonotonicClock: copyUnixNano writes the stamp toUnixNano gives, carries and wrap-around included', async () => {
  const { MonotonicClock } = await import('../../daemon/spans/clock.ts');
  const clock = new MonotonicClock();
  const from = Buffer.alloc(16);
  const to = Buffer.alloc(24);
  for (const stamp of [0n, 1n, 0xffff_ffffn, 0x1_0000_0000n, 0x1_ffff_ffffn, 123_456_789_000n, process.hrtime.bigint(), 0xffff_ffff_ffff_ffffn, 0x8000_0000_0000_0000n]) {
    from.writeBigUInt64LE(stamp, 4);
    clock.copyUnixNano(from, 4, to, 8);
    assert.equal(to.readBigUInt64LE(8), BigInt.asUintN(64, clock.toUnixNano(stamp)), `stamp ${stamp}`);
  }
});
