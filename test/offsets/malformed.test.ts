/**
 * Malformed input from real binaries: a seeded, time-bounded mutation loop
 * over .debug_info and .debug_abbrev, plus truncated and corrupted ELF images
 * and compression headers. Every outcome must be a result or a DwarfError —
 * never another exception, never a hang.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import test from 'node:test';
import { DwarfError, readStructFields } from '../../daemon/offsets/dwarf.ts';
import type { DwarfSections } from '../../daemon/offsets/dwarf.ts';
import { dwarfSectionsFromImage, elfSectionHeaders } from '../../daemon/offsets/dwarf.ts';
import { STD_FIELDS, probeBinary, prng, toolchains } from './helpers.ts';

/** A wanted struct that does not exist makes every run walk the whole section. */
const WANTED = [...STD_FIELDS, 'nosuch/pkg.T.x'];
const SEED = Number(process.env.OFFSETS_FUZZ_SEED ?? 0x5eed);
const MUTATIONS = Number(process.env.OFFSETS_FUZZ_MUTATIONS ?? 300);
const TIME_BOUND_MS = 90_000;
const PER_CASE_BOUND_MS = 3_000;

type Outcome = 'result' | 'DwarfError';

/** Runs `fn`; anything but a normal return or a DwarfError fails the test with `what` for replay. */
function expectControlled(what: string, fn: () => unknown): Outcome {
  const started = performance.now();
  let outcome: Outcome;
  try {
    fn();
    outcome = 'result';
  } catch (err) {
    if (!(err instanceof DwarfError)) {
      assert.fail(`${what}: threw ${(err as Error)?.name}: ${(err as Error)?.message ?? String(err)}`);
    }
    assert.match(err.message, /^malformed .+ at offset 0x[0-9a-f]+: /);
    outcome = 'DwarfError';
  }
  const ms = performance.now() - started;
  assert.ok(ms < PER_CASE_BOUND_MS, `${what}: took ${ms.toFixed(0)} ms`);
  return outcome;
}

function fuzzSections(version: string, base: DwarfSections, t: test.TestContext): void {
  const rnd = prng(SEED);
  const pick = (n: number): number => Math.floor(rnd() * n);
  const counts: Record<Outcome, number> = { result: 0, DwarfError: 0 };
  const started = performance.now();
  let done = 0;
  for (; done < MUTATIONS && performance.now() - started < TIME_BOUND_MS; done++) {
    const kind = pick(6);
    const target: 'info' | 'abbrev' = kind >= 4 ? 'abbrev' : 'info';
    const buf = Buffer.from(base[target]);
    let what: string;
    let mutated = buf;
    switch (kind) {
      case 0:
      case 4: {
        // Flip a few bytes; skewed toward the start, where the unit and DIE headers that steer parsing live.
        const n = 1 + pick(4);
        const at: number[] = [];
        for (let i = 0; i < n; i++) {
          const p = rnd() < 0.5 ? pick(Math.min(buf.length, 4096)) : pick(buf.length);
          buf[p] = buf[p]! ^ (1 + pick(255));
          at.push(p);
        }
        what = `flip ${target}@[${at.join(',')}]`;
        break;
      }
      case 1:
      case 5: {
        const len = pick(buf.length);
        mutated = buf.subarray(0, len);
        what = `truncate ${target} to ${len}`;
        break;
      }
      case 2: {
        // An absurd length or count: a large little-endian word where a length may sit.
        const p = pick(buf.length - 4);
        const v = [0xffffffff, 0xfffffff0, 0x7fffffff, 0x10000000, pick(0x100000000)][pick(5)]!;
        buf.writeUInt32LE(v >>> 0, p);
        what = `u32 0x${(v >>> 0).toString(16)} into info@${p}`;
        break;
      }
      default: {
        // A run of 0xff: ULEB128 continuation bytes with no end.
        const p = pick(buf.length - 16);
        buf.fill(0xff, p, p + 1 + pick(16));
        what = `0xff run into info@${p}`;
      }
    }
    counts[expectControlled(`${version} seed=${SEED} #${done} ${what}`, () => readStructFields({ ...base, [target]: mutated }, WANTED))]++;
  }
  t.diagnostic(`${version}: ${done} mutations in ${(performance.now() - started).toFixed(0)} ms: ${counts.result} parsed, ${counts.DwarfError} DwarfError (seed ${SEED})`);
  assert.ok(done >= Math.min(MUTATIONS, 100), `only ${done} mutations ran within ${TIME_BOUND_MS} ms`);
}

for (const tc of toolchains()) {
  test(`${tc.version}: mutated .debug_info/.debug_abbrev give a result or a DwarfError, never a crash or a hang`, (t) => {
    const image = readFileSync(probeBinary(tc));
    const base = dwarfSectionsFromImage(image);
    assert.ok(base);
    fuzzSections(tc.version, base, t);
  });
}

test('truncated and corrupted ELF images and compression headers give null, sections or a DwarfError', (t) => {
  const tc = toolchains().at(-1)!;
  const image = readFileSync(probeBinary(tc));
  const headers = elfSectionHeaders(image);
  const info = headers.find((h) => h.name === '.debug_info')!;
  const is64 = image[4] === 2;
  const shoff = Number(image.readBigUInt64LE(0x28));
  const rnd = prng(SEED ^ 0xe1f);
  const pick = (n: number): number => Math.floor(rnd() * n);
  const counts = { ok: 0, DwarfError: 0 };
  const tally = (o: Outcome): void => {
    counts[o === 'result' ? 'ok' : 'DwarfError']++;
  };

  // Truncations, including inside the header, the section table and the compressed data.
  for (const len of [0, 3, 16, 51, 63, 64, info.offset + 10, info.offset + info.size - 1, shoff + 10, image.length - 1]) {
    tally(expectControlled(`truncate image to ${len}`, () => dwarfSectionsFromImage(image.subarray(0, len))));
  }
  assert.ok(is64);

  // Targeted corruptions: ELF header fields, section headers, the Elf64_Chdr of .debug_info, the zlib stream.
  const regions: Array<[string, number, number]> = [
    ['ELF header', 0, 64],
    ['section headers', shoff, Math.min(headers.length * 64, image.length - shoff)],
    ['.debug_info compression header', info.offset, 24],
    ['.debug_info zlib stream', info.offset + 24, Math.min(64, info.size - 24)],
  ];
  for (const [name, start, size] of regions) {
    for (let i = 0; i < 60; i++) {
      const copy = Buffer.from(image);
      const p = start + pick(size);
      copy[p] = copy[p]! ^ (1 + pick(255));
      tally(expectControlled(`flip ${name} byte @${p}`, () => {
        const s = dwarfSectionsFromImage(copy);
        if (s !== null) readStructFields(s, WANTED);
      }));
    }
  }

  // A compression header that claims an absurd size is refused before any allocation.
  const huge = Buffer.from(image);
  huge.writeBigUInt64LE(1n << 40n, info.offset + 8);
  assert.throws(() => dwarfSectionsFromImage(huge), (e: unknown) => e instanceof DwarfError && e.section === '.debug_info' && /exceeds/.test(e.message));
  // A size that disagrees with the stream is caught after inflating.
  const short = Buffer.from(image);
  short.writeBigUInt64LE(BigInt(1000), info.offset + 8);
  assert.throws(() => dwarfSectionsFromImage(short), (e: unknown) => e instanceof DwarfError && e.section === '.debug_info');
  // Not an ELF file at all.
  assert.throws(() => dwarfSectionsFromImage(Buffer.from('#!/bin/sh\necho hello, this is not ELF at all......................................\n')), (e: unknown) => e instanceof DwarfError && /bad magic/.test(e.message));
  t.diagnostic(`ELF-level cases: ${counts.ok} loaded, ${counts.DwarfError} DwarfError`);
});
