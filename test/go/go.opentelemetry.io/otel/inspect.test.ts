/**
 * `gotrail inspect` on programs using the OpenTelemetry Go API: the bridge's
 * sites (newSpan's entry and every return, the no-op span's methods) and
 * attribute offsets from each source (DWARF, type metadata of a stripped
 * binary, the offsets database), and why it does not attach to a program
 * without the API.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { gotrailBin, repoRoot } from '../../../support/agent-process.ts';

interface ProbeReport {
  id: string;
  attachable: boolean;
  reason: string | null;
  degraded: string[];
  sites: { symbol: string; role: string; fileOffsets: string[] }[];
  offsets: Record<string, { offset: number; source: string }>;
}

const ID = 'go.opentelemetry.io/otel';
const bin = (tc: string, v: string, program = 'otel-api'): string => join(repoRoot, 'build', 'go', tc, v, program);

function report(...args: string[]): ProbeReport {
  const r = spawnSync(gotrailBin, ['inspect', '--json', ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const p = (JSON.parse(r.stdout) as { probes: ProbeReport[] }).probes.find((x) => x.id === ID);
  assert.ok(p, `probe ${ID} in the report`);
  return p;
}

const G = 'go.opentelemetry.io/otel/internal/global';
const A = 'go.opentelemetry.io/otel/attribute';
const ATTRIBUTE_OFFSETS = { [`${A}.KeyValue.Key`]: 0, [`${A}.KeyValue.Value`]: 16, [`${A}.Value.vtype`]: 0, [`${A}.Value.numeric`]: 8, [`${A}.Value.stringly`]: 16, [`${A}.Value.slice`]: 32 };

for (const tc of ['go1.26', 'go1.27']) {
  test(`${tc}: the bridge attaches with every site, and the attribute offsets agree across DWARF, type metadata and the database`, () => {
    const p = report(bin(tc, 'plain'));
    assert.equal(p.attachable, true, p.reason ?? '');
    assert.deepEqual(p.degraded, []);
    assert.deepEqual(p.sites.map((s) => `${s.role} ${s.symbol}`).sort(), [
      `entry ${G}.(*nonRecordingSpan).AddEvent`,
      `entry ${G}.(*nonRecordingSpan).End`,
      `entry ${G}.(*nonRecordingSpan).SetAttributes`,
      `entry ${G}.(*nonRecordingSpan).SetStatus`,
      `entry ${G}.(*tracer).newSpan`,
      `return ${G}.(*tracer).newSpan`,
    ]);
    // newSpan returns from two places (the auto-instrumentation SDK's span, and the no-op span)
    assert.equal(p.sites.find((s) => s.role === 'return')!.fileOffsets.length, 2);
    const offsets = (q: ProbeReport): Record<string, number> => Object.fromEntries(Object.entries(q.offsets).map(([k, v]) => [k, v.offset]));
    assert.deepEqual(offsets(p), ATTRIBUTE_OFFSETS);
    assert.ok(Object.values(p.offsets).every((o) => o.source === 'dwarf'));
    const stripped = report(bin(tc, 'stripped'));
    assert.deepEqual(offsets(stripped), ATTRIBUTE_OFFSETS);
    assert.ok(Object.values(stripped.offsets).every((o) => o.source === 'types'));
    const db = report(bin(tc, 'stripped'), '--offsets-from', 'db');
    assert.deepEqual(offsets(db), ATTRIBUTE_OFFSETS);
    assert.ok(Object.values(db.offsets).every((o) => o.source === 'db'));
  });
}

test('a program without the OpenTelemetry API: the bridge does not attach, and says why', () => {
  const p = report(bin('go1.26', 'plain', 'httpserver'));
  assert.equal(p.attachable, false);
  assert.match(p.reason ?? '', /go\.opentelemetry\.io\/otel is not linked/);
});
