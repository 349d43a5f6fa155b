/**
 * google.golang.org/grpc offsets (offsets-db/google.golang.org/grpc.json)
 * against binaries built here: three grpc versions × every Go toolchain ×
 * with and without DWARF. With DWARF, the TypeScript reader must agree with
 * Go's debug/dwarf and with the database, and resolution must take the
 * binary's own offsets; stripped, resolution must answer every field from
 * the database with the same offsets. The grpc versions: v1.50.1 (built by
 * the generator), v1.64.1 (only in the reference: the database's offsets there
 * are the reference's, checked here by DWARF for the first time) and v1.85.0
 * (the newest release; it needs Go 1.26, so go1.19 cannot build it).
 *
 * Then the resolution rules on the real grpc data: versions newer than the
 * newest known one, pre-releases and pseudo-versions.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { openGoBinary } from '../../daemon/analysis/go-binary.ts';
import { loadDwarfSections, readStructFields } from '../../daemon/offsets/dwarf.ts';
import { resolveOffsets } from '../../daemon/offsets/resolve.ts';
import type { ResolveResult } from '../../daemon/offsets/resolve.ts';
import { fieldsOf } from '../../offsets-db/fields.ts';
import type { GoToolchain } from '../../offsets-db/go-build.ts';
import { goGenerator, moduleProbeBinary, toolchains } from './helpers.ts';

const GRPC = 'google.golang.org/grpc';
const spec = fieldsOf(GRPC)!;
const FIELDS = Object.keys(spec.fields);
const TEST_VERSIONS = ['1.50.1', '1.64.1', '1.85.0'];
const T = `${GRPC}/internal/transport`;

const sorted = (a: string[]): string[] => [...a].sort();

/** Offsets read from the unstripped build: the truth the stripped build's resolution is held to. */
const truth = new Map<string, Map<string, number>>();

function dwarfTruth(version: string, tc: GoToolchain): Map<string, number> {
  const key = `${version}/${tc.version}`;
  let offsets = truth.get(key);
  if (offsets === undefined) {
    const b = moduleProbeBinary(spec, version, tc, false);
    if ('skip' in b) throw new Error(b.skip);
    offsets = readStructFields(loadDwarfSections(b.binary)!, FIELDS).offsets;
    truth.set(key, offsets);
  }
  return offsets;
}

for (const version of TEST_VERSIONS) {
  for (const tc of toolchains()) {
    test(`grpc v${version}, ${tc.version}, with DWARF: TS reader = Go debug/dwarf = offsets DB, and resolution takes DWARF`, (t) => {
      const b = moduleProbeBinary(spec, version, tc, false);
      if ('skip' in b) return t.skip(b.skip);
      t.diagnostic(`${b.built ? 'built' : 'cached'} in ${b.seconds.toFixed(1)} s`);

      const bin = openGoBinary(b.binary);
      let moduleVersion: string | undefined;
      try {
        assert.equal(bin.goVersion, tc.version);
        assert.ok(bin.hasDwarf && !bin.stripped);
        moduleVersion = bin.moduleVersion(GRPC);
      } finally {
        bin.close();
      }
      assert.equal(moduleVersion, `v${version}`, 'the binary links the grpc version asked for');

      const sections = loadDwarfSections(b.binary);
      assert.ok(sections, 'binary has DWARF');
      const started = performance.now();
      const ts = readStructFields(sections, FIELDS);
      t.diagnostic(`.debug_info ${sections.info.length} bytes, ${ts.offsets.size} of ${FIELDS.length} fields read in ${(performance.now() - started).toFixed(1)} ms`);

      const go = goGenerator(b.binary, FIELDS);
      assert.deepEqual(Object.fromEntries(ts.offsets), go.offsets);
      assert.deepEqual(sorted(ts.absent), sorted(go.absent));
      assert.deepEqual(sorted(ts.structNotFound), sorted(go.structNotFound));
      truth.set(`${version}/${tc.version}`, ts.offsets);

      const db = resolveOffsets({ module: GRPC, version: moduleVersion, fields: FIELDS });
      assert.deepEqual(db.unverified, []);
      for (const field of FIELDS) {
        const off = ts.offsets.get(field);
        if (off !== undefined) {
          assert.equal(db.offsets[field], off, `${field}: DWARF ${off}, database ${db.offsets[field] ?? db.missing.find((m) => m.field === field)?.reason}`);
          assert.equal(db.source[field], 'db');
        } else {
          // Not in this build: the database must not claim an offset. Where the generator built this
          // version it knows the field does not exist; elsewhere the reference may not list it.
          const why = db.missing.find((m) => m.field === field)?.reason ?? `database says ${db.offsets[field]}`;
          assert.equal(db.offsets[field], undefined, `${field} is not in the DWARF of v${version}: ${why}`);
          assert.match(why, spec.versions!.includes(version) ? /does not exist/ : /does not exist|nothing known/);
        }
      }

      const withDwarf = resolveOffsets({ module: GRPC, version: moduleVersion, fields: FIELDS }, { dwarf: ts.offsets });
      assert.deepEqual(withDwarf.offsets, Object.fromEntries(ts.offsets));
      for (const field of ts.offsets.keys()) assert.equal(withDwarf.source[field], 'dwarf');
    });

    test(`grpc v${version}, ${tc.version}, stripped: no DWARF, every field from the database with the DWARF offsets`, (t) => {
      const b = moduleProbeBinary(spec, version, tc, true);
      if ('skip' in b) return t.skip(b.skip);
      t.diagnostic(`${b.built ? 'built' : 'cached'} in ${b.seconds.toFixed(1)} s`);
      assert.equal(loadDwarfSections(b.binary), null);
      const bin = openGoBinary(b.binary);
      let moduleVersion: string | undefined;
      try {
        assert.ok(bin.stripped && !bin.hasDwarf);
        moduleVersion = bin.moduleVersion(GRPC);
      } finally {
        bin.close();
      }
      assert.equal(moduleVersion, `v${version}`);

      const expected = dwarfTruth(version, tc);
      const r = resolveOffsets({ module: GRPC, version: moduleVersion, fields: FIELDS });
      assert.deepEqual(r.offsets, Object.fromEntries(expected));
      for (const field of expected.keys()) assert.equal(r.source[field], 'db');
      assert.deepEqual(r.unverified, []);
      assert.deepEqual(sorted(r.missing.map((m) => m.field)), sorted(FIELDS.filter((f) => !expected.has(f))));
    });

    test(`grpc v${version}, ${tc.version}, stripped: the Go type metadata gives the DWARF offsets, or the field is listed unreachable`, (t) => {
      const b = moduleProbeBinary(spec, version, tc, true);
      if ('skip' in b) return t.skip(b.skip);
      const expected = dwarfTruth(version, tc);
      const bin = openGoBinary(b.binary);
      let types: ReturnType<ReturnType<typeof bin.goTypes>['fieldOffsets']>;
      try {
        types = bin.goTypes().fieldOffsets(FIELDS);
      } finally {
        bin.close();
      }
      for (const [f, off] of types.offsets) assert.equal(off, expected.get(f), `${f}: types ${off}, DWARF ${expected.get(f)}`);
      const unreachable = [...expected.keys()].filter((f) => !types.offsets.has(f));
      // A field the type metadata has must be one DWARF has: the two never disagree on existence.
      for (const f of types.absent) assert.equal(expected.has(f), false, `${f} absent from its struct's descriptor but in DWARF`);
      console.log(`# grpc v${version} ${tc.version}: ${types.offsets.size} of ${expected.size} fields from type metadata; unreachable: ${unreachable.map((f) => f.replace(`${GRPC}/`, '')).join(', ') || 'none'}`);
    });
  }
}

function field(r: ResolveResult, f: string): { offset?: number; source?: string; unverified: boolean; reason?: string } {
  return { offset: r.offsets[f], source: r.source[f], unverified: r.unverified.includes(f), reason: r.missing.find((m) => m.field === f)?.reason };
}

test('grpc newer than the newest version known: carried forward where the last three minor lines agree, else missing', () => {
  const r = resolveOffsets({ module: GRPC, version: 'v1.87.2', fields: FIELDS });
  // Unchanged from v1.84.0 through v1.86.0-dev.
  assert.deepEqual(field(r, `${GRPC}.ClientConn.target`), { offset: 24, source: 'db-extrapolated', unverified: true, reason: undefined });
  assert.deepEqual(field(r, `${T}.Stream.method`), { offset: 16, source: 'db-extrapolated', unverified: true, reason: undefined });
  assert.deepEqual(field(r, `${T}.clientHeaders.hf`), { offset: 8, source: 'db-extrapolated', unverified: true, reason: undefined });
  // v1.85.0 added http2Client.throttleTimeout on its release branch; the main branch (v1.86.0-dev) has not.
  assert.equal(
    field(r, `${T}.http2Client.nextID`).reason,
    `no offset for ${T}.http2Client.nextID at v1.87.2 (known up to 1.86.0-dev; not stable over the last 3 minor releases (1.84.0–1.86.0-dev): the offset changes at 1.85.0 (432 → 440))`,
  );
  // headerFrame is gone: nothing to carry forward.
  assert.match(field(r, `${T}.headerFrame.hf`).reason ?? '', /known up to 1\.86\.0-dev; not stable over the last 3 minor releases .*the field does not exist from/);
  assert.deepEqual(sorted(r.missing.map((m) => m.field)), sorted([`${T}.http2Client.nextID`, `${T}.headerFrame.hf`, `${T}.headerFrame.streamID`]));
  for (const f of Object.keys(r.offsets)) assert.equal(r.source[f], 'db-extrapolated');

  // A new major version is never extrapolated to.
  const v2 = resolveOffsets({ module: GRPC, version: 'v2.0.0', fields: [`${GRPC}.ClientConn.target`] });
  assert.match(v2.missing[0]?.reason ?? '', /major version 2 differs from the data's 1/);
});

test('grpc pseudo-versions: one offset from the base through the next minor release, else missing', () => {
  // A commit after v1.60.1 (base), so anything up to v1.61.0: these fields did not change there.
  const after = resolveOffsets({ module: GRPC, version: 'v1.60.2-0.20240110093000-0123456789ab', fields: FIELDS });
  assert.deepEqual(field(after, `${T}.Stream.method`), { offset: 80, source: 'db', unverified: false, reason: undefined });
  assert.deepEqual(field(after, `${T}.http2Client.nextID`), { offset: 404, source: 'db', unverified: false, reason: undefined });
  assert.deepEqual(field(after, `${T}.http2Server.peer`), { offset: 56, source: 'db', unverified: false, reason: undefined });
  assert.match(field(after, `${T}.ServerStream.Stream`).reason ?? '', /the field does not exist from/);

  // A main-branch commit after the v1.69.0-dev tag may or may not carry v1.69.0's new Stream layout.
  const main = resolveOffsets({ module: GRPC, version: 'v1.69.0-dev.0.20241001120000-0123456789ab', fields: FIELDS });
  assert.equal(
    field(main, `${T}.Stream.method`).reason,
    `no offset for ${T}.Stream.method at v1.69.0-dev.0.20241001120000-0123456789ab (known up to 1.86.0-dev; the offset changes at 1.69.0 (88 → 24))`,
  );
  assert.deepEqual(field(main, `${GRPC}.ClientConn.target`), { offset: 24, source: 'db', unverified: false, reason: undefined });

  // A commit after the newest version known: the known part and the extrapolation rule must both hold.
  const past = resolveOffsets({ module: GRPC, version: 'v1.86.0-dev.0.20261101120000-0123456789ab', fields: FIELDS });
  assert.deepEqual(field(past, `${T}.Stream.id`), { offset: 108, source: 'db-extrapolated', unverified: true, reason: undefined });
  assert.match(field(past, `${T}.http2Client.nextID`).reason ?? '', /not stable over the last 3 minor releases/);
});

test('grpc pre-releases not in the data: the window up to their release must agree', () => {
  // v1.85.0-rc.1 sorts after v1.85.0-dev (main branch, 432) and before v1.85.0 (440).
  const rc = resolveOffsets({ module: GRPC, version: 'v1.85.0-rc.1', fields: FIELDS });
  assert.match(field(rc, `${T}.http2Client.nextID`).reason ?? '', /the offset changes at 1\.85\.0 \(432 → 440\)/);
  assert.deepEqual(field(rc, `${T}.Stream.method`), { offset: 16, source: 'db', unverified: false, reason: undefined });
});
