/**
 * The offsets database holds exactly the fields the probes declare (plus the
 * goroutine id and the fields kept for a coming probe, each with its reason):
 * a field a probe reads but the data lacks would leave stripped binaries
 * untraced; a field no probe reads is data nobody checks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { MODULE_FIELDS, moduleFields, modulesWithoutSpec } from '../../offsets-db/fields.ts';
import { GOID_FIELD } from '../../daemon/agent/binary-plan.ts';
import { probes } from '../../daemon/probes/registry.ts';
import { fieldModule, type ProbeDescriptor } from '../../daemon/probes/types.ts';
import { REPO_ROOT } from './helpers.ts';

const DB_DIR = join(REPO_ROOT, 'offsets-db');

/** Every data file under offsets-db/ (not the recorded version lists), by module. */
function dataFiles(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) {
        if (name !== 'generator' && name !== 'node_modules') walk(p);
      } else if (name.endsWith('.json') && !name.endsWith('.versions.json')) {
        const data = JSON.parse(readFileSync(p, 'utf8')) as { module: string; fields: Record<string, unknown> };
        assert.equal(`${data.module}.json`, relative(DB_DIR, p), `${relative(DB_DIR, p)} names module ${data.module}`);
        out.set(data.module, new Set(Object.keys(data.fields)));
      }
    }
  };
  walk(DB_DIR);
  return out;
}

test('every field a probe reads is in the database, and the database holds no field nobody reads', () => {
  const files = dataFiles();
  assert.deepEqual([...files.keys()].sort(), MODULE_FIELDS.map((m) => m.module).sort(), 'one data file per module of offsets-db/fields.ts');
  for (const spec of MODULE_FIELDS) {
    const held = files.get(spec.module)!;
    const wanted = new Set(Object.keys(spec.fields));
    const lacking = [...wanted].filter((f) => !held.has(f));
    const unread = [...held].filter((f) => !wanted.has(f));
    assert.deepEqual(lacking, [], `${spec.module}.json lacks fields a probe reads (${lacking.map((f) => `${f}: ${spec.fields[f]}`).join('; ')}): run deploy/node offsets-db/generate.ts`);
    assert.deepEqual(unread, [], `${spec.module}.json holds fields no probe declares: ${unread.join(', ')} — regenerate it (deploy/node offsets-db/generate.ts), or list them under "kept" in offsets-db/fields.ts with the coming probe that needs them`);
  }
});

test('every probe reads fields of a module the database has', () => {
  assert.deepEqual(modulesWithoutSpec(), [], 'add the module to offsets-db/fields.ts (imports, keep, versions) and generate its data');
  const std = MODULE_FIELDS.find((m) => m.module === 'std')!;
  assert.ok(GOID_FIELD in std.fields, 'the goroutine id every probe needs');
  for (const p of probes) {
    for (const [field, f] of Object.entries(p.fields)) {
      const spec = MODULE_FIELDS.find((m) => m.module === fieldModule(p, field))!;
      assert.ok(field in spec.fields, `${p.id}: ${field}`);
      assert.match(spec.fields[field]!, new RegExp(`${p.id} probe: `), `${field} names ${p.id} as a reader`);
      assert.ok(f.reads.length > 0, `${p.id}: ${field} says what it is read for`);
      if (f.optional !== undefined) assert.ok(f.optional.length > 0, `${p.id}: optional ${field} says what is lost without it`);
    }
  }
  const grpc = MODULE_FIELDS.find((m) => m.module === 'google.golang.org/grpc')!;
  for (const [field, why] of Object.entries(grpc.kept ?? {})) {
    assert.ok(why.length > 10, `kept ${field} gives a reason`);
    assert.equal(grpc.fields[field], `kept: ${why}`);
  }
});

test('the database follows the descriptors: a new field appears, a kept field a probe now reads is refused', () => {
  const base = probes.find((p) => p.id === 'net/http/server')!;
  const more: ProbeDescriptor = { ...base, id: 'example/next', fields: { 'net/http.Request.Cancel': { reads: 'the request cancellation', optional: 'no cancellation' } } };
  const std = MODULE_FIELDS.find((m) => m.module === 'std')!;
  const fields = moduleFields(std, [...probes, more]);
  assert.equal(fields['net/http.Request.Cancel'], 'example/next probe: the request cancellation (optional)');
  assert.deepEqual(Object.keys(fields).slice(0, -1), Object.keys(std.fields), 'the other fields stay as they were');
  // both probes read Request.Method: one entry naming both
  const method = moduleFields(std, [...probes, { ...more, fields: { 'net/http.Request.Method': { reads: 'the method' } } }])['net/http.Request.Method'];
  assert.match(method!, /net\/http\/server probe: .*; .*example\/next probe: the method$/);
  assert.throws(
    () => moduleFields({ ...std, kept: { 'net/http.Request.Method': 'for a coming probe' } }),
    /net\/http\.Request\.Method is kept for a coming probe, but .* already reads it/,
  );
});
