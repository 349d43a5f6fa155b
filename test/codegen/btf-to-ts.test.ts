/**
 * The layout generator's id families: each probe defines its event type, hit
 * site and paired-function ids in its own folder; the generator merges them
 * and refuses an id used twice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeFamilies } from '../../probes/codegen/btf-to-ts.ts';
import { BpfMaps, BpfPrograms, EventType, HitSite, PairedFunction } from '../../daemon/generated/layouts.ts';
import { probes } from '../../daemon/probes/registry.ts';
import { programsOfProbe } from '../../daemon/probes/types.ts';

const e = (name: string, values: Record<string, number>) => ({ id: 1, kind: 'ENUM', name, values: Object.entries(values).map(([n, val]) => ({ name: n, val })) });

test('the enums of a family merge into one, sorted by value; other enums stay', () => {
  const out = mergeFamilies([
    e('gt_event_type_b', { GT_EVENT_B: 4 }),
    e('gt_event_type', { GT_EVENT_PROBE_HIT: 5 }),
    e('gt_event_type_a', { GT_EVENT_A: 1 }),
    e('gt_http_flags', { GT_HTTP_X: 1 }),
  ]);
  assert.deepEqual(out.map((x) => x.name), ['gt_event_type', 'gt_http_flags']);
  assert.deepEqual(out[0]!.values, [{ name: 'GT_EVENT_A', val: 1 }, { name: 'GT_EVENT_B', val: 4 }, { name: 'GT_EVENT_PROBE_HIT', val: 5 }]);
});

test('an id used twice in a family stops the generator, naming both enums', () => {
  assert.throws(
    () => mergeFamilies([e('gt_event_type_http_server', { GT_EVENT_HTTP_SERVER: 1 }), e('gt_event_type_grpc_server', { GT_EVENT_GRPC_SERVER: 1 })]),
    /GT_EVENT_GRPC_SERVER = 1 \(enum gt_event_type_grpc_server\) clashes with GT_EVENT_HTTP_SERVER = 1 \(enum gt_event_type_http_server\)/,
  );
  assert.throws(() => mergeFamilies([e('gt_hit_site_a', { GT_HIT_X: 1 }), e('gt_hit_site_b', { GT_HIT_X: 2 })]), /GT_HIT_X = 2 .* clashes with GT_HIT_X = 1/);
  // the same value in different families is fine
  assert.doesNotThrow(() => mergeFamilies([e('gt_hit_site_a', { GT_HIT_A: 1 }), e('gt_paired_function_a', { GT_PAIRED_A: 1 })]));
});

test('the generated module: every probe has its own event type, and names what it attaches and fills', () => {
  const types = probes.flatMap((p) => (p.eventType === undefined ? [] : [p.eventType]));
  assert.equal(new Set(types).size, types.length);
  for (const t of types) assert.ok((Object.values(EventType) as number[]).includes(t));
  assert.equal(EventType.GT_EVENT_HTTP_SERVER, 1);
  assert.ok(Object.keys(HitSite).length >= 6 && Object.keys(PairedFunction).length >= 2);
  const programs = new Set<string>(Object.values(BpfPrograms));
  const maps = new Set<string>(Object.values(BpfMaps));
  for (const p of probes) {
    for (const prog of programsOfProbe(p)) assert.ok(programs.has(prog), prog);
    for (const m of [p.configMap, ...p.stateMaps]) assert.ok(maps.has(m), m);
    // an in-flight map is state too: cleared with the process, as well as swept
    for (const m of p.inflightMaps ?? []) assert.ok(p.stateMaps.includes(m.map), `${p.id}: ${m.map} is one of its stateMaps`);
  }
  assert.ok(![...maps].some((m) => m.startsWith('gt_layouts_')), 'layout anchors are not maps the agent uses');
});
