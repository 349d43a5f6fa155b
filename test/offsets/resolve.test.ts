/**
 * Resolution rules (offsets-db/README.md, "Resolution rules") on a small
 * hand-written database, then on the real one.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { resolveOffsets } from '../../daemon/offsets/resolve.ts';
import type { ResolveResult } from '../../daemon/offsets/resolve.ts';
import type { OffsetsFile } from '../../daemon/offsets/schema.ts';
import { STD_FIELDS } from './helpers.ts';

const D = 'dwarf:go1.19.8';
const R = 'reference:otel-go-instrumentation';

const std: OffsetsFile = {
  module: 'std',
  fields: {
    'p.S.stable': {
      verifiedUpTo: '1.27.3',
      ranges: [
        { since: '1.19.0', offset: 8, source: D },
        { since: '1.23.0', offset: 16, source: R },
        { since: '1.25.0', offset: 24, source: R },
        { since: '1.26.0', offset: 24, source: 'dwarf:go1.26.8' },
      ],
    },
    'p.S.changed': {
      verifiedUpTo: '1.27.3',
      ranges: [
        { since: '1.19.0', offset: 120, source: D },
        { since: '1.27.0', offset: 128, source: 'dwarf:go1.27.3' },
      ],
    },
    'p.S.added': {
      verifiedUpTo: '1.27.3',
      ranges: [
        { since: '1.19.0', offset: null, source: R },
        { since: '1.23.0', offset: 232, source: R },
      ],
    },
    'p.S.removed': {
      verifiedUpTo: '1.27.3',
      ranges: [
        { since: '1.19.0', offset: 40, source: R },
        { since: '1.26.0', offset: null, source: R },
      ],
    },
    'p.S.gap': {
      verifiedUpTo: '1.27.3',
      ranges: [
        { since: '1.19.0', offset: 80, source: D },
        { since: '1.20.0', unknown: true },
        { since: '1.26.0', offset: 80, source: 'dwarf:go1.26.8' },
      ],
    },
  },
};

const one = (version: string, field: string, opts: { dwarf?: Map<string, number>; db?: OffsetsFile | null } = {}): ResolveResult =>
  resolveOffsets({ module: opts.db?.module ?? 'std', version, fields: [field] }, { db: opts.db === undefined ? std : opts.db, ...(opts.dwarf ? { dwarf: opts.dwarf } : {}) });

function resolved(r: ResolveResult, field: string, offset: number, source: string, unverified: boolean): void {
  assert.deepEqual(r.missing, []);
  assert.equal(r.offsets[field], offset);
  assert.equal(r.source[field], source);
  assert.equal(r.unverified.includes(field), unverified);
}

function missing(r: ResolveResult, field: string, re: RegExp): void {
  assert.equal(r.offsets[field], undefined);
  assert.equal(r.missing.length, 1);
  assert.equal(r.missing[0]!.field, field);
  assert.match(r.missing[0]!.reason, re);
}

test('exact version and inside a range resolve from the database', () => {
  resolved(one('go1.23.0', 'p.S.stable'), 'p.S.stable', 16, 'db', false);
  resolved(one('go1.24.7', 'p.S.stable'), 'p.S.stable', 16, 'db', false);
  resolved(one('go1.19.3', 'p.S.stable'), 'p.S.stable', 8, 'db', false);
  resolved(one('go1.27.3', 'p.S.changed'), 'p.S.changed', 128, 'db', false);
  resolved(one('go1.27.1', 'p.S.changed'), 'p.S.changed', 128, 'db', false);
});

test('go1.22 means 1.22.0; GOEXPERIMENT suffixes are ignored', () => {
  resolved(one('go1.22', 'p.S.stable'), 'p.S.stable', 8, 'db', false);
  resolved(one('go1.23.1 X:nocoverageredesign', 'p.S.stable'), 'p.S.stable', 16, 'db', false);
});

test('newer than verifiedUpTo and stable over the last 3 minor lines: carried forward, unverified', () => {
  resolved(one('go1.30.1', 'p.S.stable'), 'p.S.stable', 24, 'db-extrapolated', true);
});

test('a standard-library patch release newer than verifiedUpTo resolves as its minor line (README: a fact covers its whole minor line)', () => {
  resolved(one('go1.27.4', 'p.S.stable'), 'p.S.stable', 24, 'db', false);
  // Changed at 1.27.0: the offset of the 1.27 line, not a refusal.
  resolved(one('go1.27.4', 'p.S.changed'), 'p.S.changed', 128, 'db', false);
  resolved(one('go1.27.12', 'p.S.changed'), 'p.S.changed', 128, 'db', false);
  resolved(one('go1.27rc1', 'p.S.changed'), 'p.S.changed', 128, 'db', true);
  // The next minor line is not covered by it.
  missing(one('go1.28.0', 'p.S.changed'), 'p.S.changed', /not stable over the last 3 minor releases/);
});

test('DWARF, then type metadata, then the database; disagreements are reported, the first source wins', () => {
  const r = resolveOffsets(
    { module: 'std', version: 'go1.27.3', fields: ['p.S.stable', 'p.S.changed', 'p.S.gap'] },
    { db: std, dwarf: new Map([['p.S.stable', 24]]), types: new Map([['p.S.stable', 24], ['p.S.changed', 136], ['p.S.gap', 80]]) },
  );
  assert.deepEqual(r.source, { 'p.S.stable': 'dwarf', 'p.S.changed': 'types', 'p.S.gap': 'types' });
  assert.deepEqual(r.offsets, { 'p.S.stable': 24, 'p.S.changed': 136, 'p.S.gap': 80 });
  assert.deepEqual(r.disagreements, [{ field: 'p.S.changed', offsets: { types: 136, db: 128 }, chosen: 'types' }]);
  const d = resolveOffsets({ module: 'std', version: 'go1.27.3', fields: ['p.S.stable'] }, { db: std, dwarf: new Map([['p.S.stable', 16]]), types: new Map([['p.S.stable', 24]]) });
  assert.deepEqual(d.disagreements, [{ field: 'p.S.stable', offsets: { dwarf: 16, types: 24, db: 24 }, chosen: 'dwarf' }]);
  assert.equal(d.offsets['p.S.stable'], 16);
});

test('one source only: the others are ignored, and what it lacks is missing', () => {
  const opts = { db: std, dwarf: new Map([['p.S.stable', 16]]), types: new Map([['p.S.changed', 136]]) };
  const req = { module: 'std', version: 'go1.30.1', fields: ['p.S.stable', 'p.S.changed'] };
  const t = resolveOffsets(req, { ...opts, only: 'types' });
  assert.deepEqual(t.offsets, { 'p.S.changed': 136 });
  assert.match(t.missing[0]!.reason, /not in the type metadata; resolving from types only/);
  const w = resolveOffsets(req, { ...opts, only: 'dwarf' });
  assert.deepEqual(w.offsets, { 'p.S.stable': 16 });
  const b = resolveOffsets(req, { ...opts, only: 'db' });
  assert.deepEqual(b.source, { 'p.S.stable': 'db-extrapolated' });
  assert.deepEqual(b.disagreements, []);
});

test('newer than verifiedUpTo and changed within the last 3 minor lines: missing, with the reason', () => {
  const r = one('go1.30.1', 'p.S.changed');
  missing(r, 'p.S.changed', /^no offset for p\.S\.changed at go1\.30\.1 \(known up to 1\.27\.3; not stable over the last 3 minor releases \(1\.25\.0–1\.27\.3\): the offset changes at 1\.27\.0 \(120 → 128\)\)$/);
  // An unknown range inside the last three lines is not "stable" either.
  missing(one('go1.28.0', 'p.S.gap'), 'p.S.gap', /known up to 1\.27\.3; not stable .*nothing known from 1\.20\.0 until 1\.26\.0/);
});

test('a field that does not exist at that version is missing', () => {
  missing(one('go1.21.4', 'p.S.added'), 'p.S.added', /^no offset for p\.S\.added at go1\.21\.4 \(known up to 1\.27\.3; the field does not exist from 1\.19\.0 until 1\.23\.0\)$/);
  resolved(one('go1.23.0', 'p.S.added'), 'p.S.added', 232, 'db', false);
  missing(one('go1.26.2', 'p.S.removed'), 'p.S.removed', /the field does not exist from 1\.26\.0 through 1\.27\.3/);
  missing(one('go1.29.0', 'p.S.removed'), 'p.S.removed', /not stable over the last 3 minor releases/);
});

test('versions in an unknown range or before the data are missing', () => {
  missing(one('go1.22.3', 'p.S.gap'), 'p.S.gap', /nothing known from 1\.20\.0 until 1\.26\.0/);
  resolved(one('go1.26.0', 'p.S.gap'), 'p.S.gap', 80, 'db', false);
  missing(one('go1.18.10', 'p.S.stable'), 'p.S.stable', /older than the data \(from 1\.19\.0\)/);
});

test('Go pre-releases resolve as their X.Y.0 release, unverified', () => {
  resolved(one('go1.21rc2', 'p.S.stable'), 'p.S.stable', 8, 'db', true);
  resolved(one('go1.23rc1', 'p.S.stable'), 'p.S.stable', 16, 'db', true);
  resolved(one('go1.28rc1', 'p.S.stable'), 'p.S.stable', 24, 'db-extrapolated', true);
});

test('development and unparseable Go versions are missing (unless DWARF has the field)', () => {
  missing(one('devel go1.24-abcdef0123 Mon Jan 1 2024', 'p.S.stable'), 'p.S.stable', /development toolchain/);
  missing(one('banana', 'p.S.stable'), 'p.S.stable', /unrecognised Go version "banana"/);
  resolved(one('devel go1.24-abcdef0123', 'p.S.stable', { dwarf: new Map([['p.S.stable', 99]]) }), 'p.S.stable', 99, 'dwarf', false);
});

test('DWARF wins over the database, field by field', () => {
  const r = resolveOffsets(
    { module: 'std', version: 'go1.30.1', fields: ['p.S.changed', 'p.S.stable'] },
    { db: std, dwarf: new Map([['p.S.changed', 136]]) },
  );
  assert.deepEqual(r.offsets, { 'p.S.changed': 136, 'p.S.stable': 24 });
  assert.deepEqual(r.source, { 'p.S.changed': 'dwarf', 'p.S.stable': 'db-extrapolated' });
  assert.deepEqual(r.unverified, ['p.S.stable']);
});

test('unknown fields and modules without data are missing with a reason', () => {
  missing(one('go1.26.1', 'p.S.nope'), 'p.S.nope', /field not in the offsets database of std/);
  missing(resolveOffsets({ module: 'example.com/none', version: 'v1.0.0', fields: ['example.com/none.T.f'] }), 'example.com/none.T.f', /no offsets database for module example\.com\/none/);
  missing(resolveOffsets({ module: '../../etc/passwd', version: 'v1.0.0', fields: ['x.T.f'] }), 'x.T.f', /invalid module path/);
});

const mod: OffsetsFile = {
  module: 'example.com/m',
  fields: {
    'example.com/m.T.f': {
      verifiedUpTo: '1.62.1',
      ranges: [
        { since: '1.58.0', offset: 8, source: R },
        { since: '1.60.0', offset: 16, source: R },
        { since: '1.61.0', offset: 16, source: 'dwarf:go1.26.8' },
        { since: '1.62.0', offset: 24, source: R },
      ],
    },
    'example.com/m.T.g': {
      verifiedUpTo: '1.62.1',
      ranges: [{ since: '1.50.0', offset: 8, source: R }],
    },
  },
};

test('module releases and pre-releases', () => {
  resolved(one('v1.59.3', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', 8, 'db', false);
  resolved(one('1.61.2', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', 16, 'db', false);
  // A pre-release sits between the previous release and its own: both must agree.
  resolved(one('v1.61.0-rc.1', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', 16, 'db', false);
  missing(one('v1.60.0-rc.1', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', /the offset changes at 1\.60\.0 \(8 → 16\)/);
  missing(one('v1.63.0', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', /not stable over the last 3 minor releases/);
  resolved(one('v1.70.0', 'example.com/m.T.g', { db: mod }), 'example.com/m.T.g', 8, 'db-extrapolated', true);
});

test('pseudo-versions resolve only when the field is constant from their base through the next minor release', () => {
  // Base v1.60.0; the commit may carry anything up to v1.61.0: 16 throughout.
  resolved(one('v1.60.1-0.20240101120000-abcdefabcdef', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', 16, 'db', false);
  // Base v1.61.0; v1.62.0 changed the field, so the commit's layout is unknown.
  missing(one('v1.61.1-0.20240301120000-abcdefabcdef', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', /the offset changes at 1\.62\.0 \(16 → 24\)/);
  // Base v1.62.1 (= verifiedUpTo): the window runs past the data, so the extrapolation rule decides.
  missing(one('v1.62.2-0.20250101120000-abcdefabcdef', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', /not stable over the last 3 minor releases/);
  resolved(one('v1.62.2-0.20250101120000-abcdefabcdef', 'example.com/m.T.g', { db: mod }), 'example.com/m.T.g', 8, 'db-extrapolated', true);
  // Pre-release base (vX.Y.Z-pre.0.timestamp-rev): the same window, from the pre-release through the next minor.
  resolved(one('v1.60.1-rc.1.0.20240201120000-abcdefabcdef', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', 16, 'db', false);
  missing(one('v1.61.0-rc.1.0.20240201120000-abcdefabcdef', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', /the offset changes at 1\.62\.0/);
  // No tag before the commit: ordered by time against the data, which starts later.
  missing(one('v0.0.0-20200101120000-abcdefabcdef', 'example.com/m.T.f', { db: mod }), 'example.com/m.T.f', /major version 0 differs|older than the data/);
});

test('untagged pseudo-versions order by commit time against pseudo-version entries', () => {
  const untagged: OffsetsFile = {
    module: 'example.com/u',
    fields: {
      'example.com/u.T.f': {
        verifiedUpTo: '0.0.0-20230601000000-bbbbbbbbbbbb',
        ranges: [
          { since: '0.0.0-20230101000000-aaaaaaaaaaaa', offset: 8, source: R },
          { since: '0.0.0-20230601000000-bbbbbbbbbbbb', offset: 16, source: R },
        ],
      },
    },
  };
  resolved(one('v0.0.0-20230301000000-cccccccccccc', 'example.com/u.T.f', { db: untagged }), 'example.com/u.T.f', 8, 'db', true);
  resolved(one('v0.0.0-20230601000000-bbbbbbbbbbbb', 'example.com/u.T.f', { db: untagged }), 'example.com/u.T.f', 16, 'db', true);
  missing(one('v0.0.0-20221201000000-dddddddddddd', 'example.com/u.T.f', { db: untagged }), 'example.com/u.T.f', /older than the data/);
});

test('the real database: what is carried forward to a future Go, and what is not', () => {
  const r = resolveOffsets({ module: 'std', version: 'go1.30.1', fields: STD_FIELDS });
  const missingFields = r.missing.map((m) => m.field).sort();
  // Changed in 1.27: not stable over 1.25–1.27.
  assert.ok(missingFields.includes('net/http.response.status'));
  // Gone in 1.27 (HTTP/2 moved to net/http/internal/http2): not carried forward either.
  assert.ok(missingFields.includes('net/http.http2responseWriterState.status'));
  assert.match(
    r.missing.find((m) => m.field === 'net/http.response.status')!.reason,
    /^no offset for net\/http\.response\.status at go1\.30\.1 \(known up to 1\.27\.3; not stable over the last 3 minor releases \(1\.25\.0–1\.27\.3\): the offset changes at 1\.27\.0 \(120 → 128\)\)$/,
  );
  assert.equal(r.offsets['runtime.g.goid'], 152);
  assert.equal(r.source['runtime.g.goid'], 'db-extrapolated');
  assert.ok(r.unverified.includes('runtime.g.goid'));
  for (const f of Object.keys(r.offsets)) assert.equal(r.source[f], 'db-extrapolated');
  assert.deepEqual([...r.unverified].sort(), Object.keys(r.offsets).sort());

  // runtime.g.goid moved to 160 for Go 1.23–1.24 and back.
  assert.equal(resolveOffsets({ module: 'std', version: 'go1.23.4', fields: ['runtime.g.goid'] }).offsets['runtime.g.goid'], 160);
  assert.equal(resolveOffsets({ module: 'std', version: 'go1.25.0', fields: ['runtime.g.goid'] }).offsets['runtime.g.goid'], 152);
});
