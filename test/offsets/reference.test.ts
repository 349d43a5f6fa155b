/**
 * The database against the reference offsets (../shared/reference/), for
 * every version the reference lists; and the committed data files against
 * what the generator would write now.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { resolveOffsets } from '../../daemon/offsets/resolve.ts';
import { mustSemver } from '../../daemon/offsets/version.ts';
import { fieldsOf } from '../../offsets-db/fields.ts';
import { referenceObservations } from '../../offsets-db/reference.ts';
import { REPO_ROOT, STD_FIELDS, referenceData, toolchains } from './helpers.ts';

test('std: the database agrees with the reference at every version the reference lists', (t) => {
  const ref = referenceData();
  if ('skip' in ref) return t.skip(ref.skip);
  const facts = referenceObservations(ref.data, 'std', STD_FIELDS);
  let checked = 0;
  for (const [field, obs] of facts) {
    for (const o of obs) {
      const r = resolveOffsets({ module: 'std', version: `go${o.version}`, fields: [field] });
      if (o.offset === null) {
        assert.match(r.missing[0]?.reason ?? '', /does not exist/, `${field} at ${o.version}: reference says absent`);
      } else {
        assert.equal(r.offsets[field], o.offset, `${field} at ${o.version}: reference ${o.offset}, database ${r.offsets[field] ?? r.missing[0]?.reason}`);
        assert.equal(r.source[field], 'db');
      }
      checked++;
    }
  }
  const fieldsInRef = [...facts.values()].filter((o) => o.length > 0).length;
  t.diagnostic(`${checked} (field, version) facts checked for ${fieldsInRef} of ${STD_FIELDS.length} fields; the others are not in the reference`);
  assert.ok(checked > 1000);
});

test('grpc: the database agrees with the reference at every version the reference lists', (t) => {
  const ref = referenceData();
  if ('skip' in ref) return t.skip(ref.skip);
  const module = 'google.golang.org/grpc';
  const fields = Object.keys(fieldsOf(module)!.fields);
  const facts = referenceObservations(ref.data, module, fields);
  let releases = 0;
  let preReleases = 0;
  let windowed = 0;
  for (const [field, obs] of facts) {
    for (const o of obs) {
      const r = resolveOffsets({ module, version: `v${o.version}`, fields: [field] });
      const got = r.offsets[field] ?? r.missing[0]?.reason;
      if (mustSemver(o.version).pre.length > 0) {
        // A pre-release (1.69.0-dev, 1.27.0-pre) resolves only if its whole window up to its release
        // agrees (README, resolution rule 5): then it must be the reference's offset; never another.
        preReleases++;
        if (o.offset === null || r.offsets[field] === undefined) {
          windowed++;
          assert.equal(r.offsets[field], undefined, `${field} at ${o.version}: reference ${o.offset}, database ${got}`);
        } else {
          assert.equal(r.offsets[field], o.offset, `${field} at ${o.version}: reference ${o.offset}, database ${got}`);
        }
        continue;
      }
      releases++;
      if (o.offset === null) {
        assert.match(r.missing[0]?.reason ?? '', /does not exist/, `${field} at ${o.version}: reference says absent, database ${got}`);
      } else {
        assert.equal(r.offsets[field], o.offset, `${field} at ${o.version}: reference ${o.offset}, database ${got}`);
        assert.equal(r.source[field], 'db');
      }
    }
  }
  t.diagnostic(`${releases} (field, release) facts equal; ${preReleases} pre-release facts never contradicted (${windowed} of them absent or not resolved by the window rule)`);
  assert.ok(releases > 2000);
});

test('the committed data files are what offsets-db/generate.ts writes (--check)', (t) => {
  const ref = referenceData();
  if ('skip' in ref) return t.skip(`${ref.skip}; the data cannot be regenerated without it`);
  // The data records which toolchains built it; elsewhere the regenerated data would differ by design.
  const recorded = [...new Set([...readFileSync(join(REPO_ROOT, 'offsets-db', 'std.json'), 'utf8').matchAll(/"dwarf:(go[^"]+)"/g)].map((m) => m[1]))].sort();
  const here = toolchains().map((tc) => tc.version).sort();
  if (recorded.join() !== here.join()) return t.skip(`data built with ${recorded.join(', ')}; this machine has ${here.join(', ')}`);
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'offsets-db', 'generate.ts'), '--check'], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, `generate.ts --check failed:\n${r.stderr}`);
});

test('the generator stops, loudly and without writing, when DWARF and the reference disagree', (t) => {
  const ref = referenceData();
  if ('skip' in ref) return t.skip(ref.skip);
  const data = structuredClone(ref.data) as Array<{ module: string; packages: Array<{ package: string; structs: Array<{ struct: string; fields: Array<{ field: string; offsets: Array<{ offset: number | null; versions: string[] }> }> }> }> }>;
  const goid = data.find((m) => m.module === 'std')!.packages.find((p) => p.package === 'runtime')!.structs.find((s) => s.struct === 'g')!.fields.find((f) => f.field === 'goid')!;
  // Claim a different offset for 1.19.8, a version built here.
  goid.offsets = goid.offsets.map((o) => ({ ...o, versions: o.versions.filter((v) => v !== '1.19.8') }));
  goid.offsets.push({ offset: 999, versions: ['1.19.8'] });
  const dir = join(REPO_ROOT, 'build', 'test', 'offsets');
  mkdirSync(dir, { recursive: true });
  const refFile = join(dir, 'reference-disagreeing.json');
  writeFileSync(refFile, JSON.stringify(data));
  const out = mkdtempSync(join(dir, 'generate-out-'));
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'offsets-db', 'generate.ts'), '--module', 'std', '--reference', refFile, '--out', out], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /DISAGREEMENT std runtime\.g\.goid at 1\.19\.8: dwarf:go1\.19\.8 says 152, reference:otel-go-instrumentation says 999/);
  assert.match(r.stderr, /nothing written/);
  assert.deepEqual(readdirSync(out), []);
});
