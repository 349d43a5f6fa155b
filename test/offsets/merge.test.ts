/** How facts become ranges (offsets-db/merge.ts), and the data file format. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { validateOffsetsFile } from '../../daemon/offsets/schema.ts';
import { formatOffsetsFile } from '../../offsets-db/generate.ts';
import { buildHistory } from '../../offsets-db/merge.ts';
import type { Observation } from '../../offsets-db/merge.ts';
import { REPO_ROOT } from './helpers.ts';

const R = 'reference:otel-go-instrumentation';
const ref = (version: string, offset: number | null): Observation => ({ version, offset, source: R });
const dw = (version: string, offset: number | null): Observation => ({ version, offset, source: `dwarf:go${version}` });

test('std: a fact covers its minor line; lines without facts are unknown; DWARF names its line', () => {
  const { history, disagreements } = buildHistory([
    ref('1.19.0', 152), ref('1.19.1', 152), dw('1.19.1', 152), ref('1.19.2', 152),
    ref('1.20.0', 152), ref('1.20.5', 152),
    dw('1.23.5', 160),
    dw('1.24.2', 160),
  ]);
  assert.deepEqual(disagreements, []);
  assert.deepEqual(history, {
    verifiedUpTo: '1.24.2',
    ranges: [
      { since: '1.19.0', offset: 152, source: 'dwarf:go1.19.1' },
      { since: '1.20.0', offset: 152, source: R },
      { since: '1.21.0', unknown: true },
      { since: '1.23.0', offset: 160, source: 'dwarf:go1.23.5' },
      { since: '1.24.0', offset: 160, source: 'dwarf:go1.24.2' },
    ],
  });
});

test('std: a change inside a minor line leaves the versions between the two facts unknown', () => {
  const { history } = buildHistory([ref('1.27.0', 128), dw('1.27.3', 136)]);
  assert.deepEqual(history.ranges, [
    { since: '1.27.0', offset: 128, source: R },
    { since: '1.27.1', unknown: true },
    { since: '1.27.3', offset: 136, source: 'dwarf:go1.27.3' },
  ]);
  const adjacent = buildHistory([ref('1.27.0', 128), dw('1.27.1', 136)]).history;
  assert.deepEqual(adjacent.ranges.map((r) => r.since), ['1.27.0', '1.27.1']);
});

test('absent fields are null ranges', () => {
  const { history } = buildHistory([ref('1.21.0', null), ref('1.22.0', 248), dw('1.23.0', 264)]);
  assert.deepEqual(history.ranges, [
    { since: '1.21.0', offset: null, source: R },
    { since: '1.22.0', offset: 248, source: R },
    { since: '1.23.0', offset: 264, source: 'dwarf:go1.23.0' },
  ]);
});

test('sources that disagree about one version are reported; the DWARF fact is kept', () => {
  const { history, disagreements } = buildHistory([ref('1.26.0', 120), dw('1.26.0', 128)]);
  assert.deepEqual(disagreements, [{ version: '1.26.0', facts: [{ source: R, offset: 120 }, { source: 'dwarf:go1.26.0', offset: 128 }] }]);
  assert.deepEqual(history.ranges, [{ since: '1.26.0', offset: 128, source: 'dwarf:go1.26.0' }]);
});

test('modules: a fact covers only its version; published versions without facts are unknown', () => {
  const { history } = buildHistory(
    [ref('1.0.0', 8), ref('1.1.0', 8), ref('1.1.1', 8), { version: '1.3.0', offset: 16, source: 'dwarf:go1.26.8' }],
    { policy: 'listed-versions', versions: ['0.9.0', '1.0.0', '1.0.1', '1.1.0', '1.1.1', '1.2.0', '1.3.0', '1.4.0'] },
  );
  assert.deepEqual(history, {
    verifiedUpTo: '1.3.0',
    ranges: [
      { since: '1.0.0', offset: 8, source: R },
      { since: '1.0.1', unknown: true },
      { since: '1.1.0', offset: 8, source: R },
      { since: '1.2.0', unknown: true },
      { since: '1.3.0', offset: 16, source: 'dwarf:go1.26.8' },
    ],
  });
});

test('the committed std.json is valid and round-trips through the formatter', () => {
  const text = readFileSync(join(REPO_ROOT, 'offsets-db', 'std.json'), 'utf8');
  const db = validateOffsetsFile(JSON.parse(text), 'std.json');
  assert.equal(db.module, 'std');
  assert.equal(formatOffsetsFile(db), text);
});

test('the committed grpc.json is valid and round-trips through the formatter', () => {
  const text = readFileSync(join(REPO_ROOT, 'offsets-db', 'google.golang.org', 'grpc.json'), 'utf8');
  const db = validateOffsetsFile(JSON.parse(text), 'google.golang.org/grpc.json');
  assert.equal(db.module, 'google.golang.org/grpc');
  assert.equal(formatOffsetsFile(db), text);
});

test('the validator rejects out-of-order ranges, bad offsets and missing sources', () => {
  const base = { module: 'std', fields: { 'a.B.c': { verifiedUpTo: '1.27.3', ranges: [{ since: '1.19.0', offset: 1, source: R }] } } };
  assert.doesNotThrow(() => validateOffsetsFile(base, 't'));
  const bad = (ranges: unknown[], upTo = '1.27.3'): unknown => ({ module: 'std', fields: { 'a.B.c': { verifiedUpTo: upTo, ranges } } });
  assert.throws(() => validateOffsetsFile(bad([{ since: '1.20.0', offset: 1, source: R }, { since: '1.19.0', offset: 2, source: R }]), 't'), /increasing order/);
  assert.throws(() => validateOffsetsFile(bad([{ since: '1.19.0', offset: -1, source: R }]), 't'), /bad offset/);
  assert.throws(() => validateOffsetsFile(bad([{ since: '1.19.0', offset: 1 }]), 't'), /without "source"/);
  assert.throws(() => validateOffsetsFile(bad([{ since: 'go1.19', offset: 1, source: R }]), 't'), /valid "since"/);
  assert.throws(() => validateOffsetsFile(bad([{ since: '1.19.0', offset: 1, source: R }], '1.18.0'), 't'), /verifiedUpTo older/);
});
