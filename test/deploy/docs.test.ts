/**
 * docs/operations.md lists every metric the agent registers (no more, no
 * fewer), and the Grafana dashboard is valid for its schemaVersion and
 * queries only metrics that exist.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMetrics } from '../../daemon/agent/metrics.ts';
import { repoRoot } from '../support/agent-process.ts';
import { run, skipUnlessTools, tool } from './tools.ts';

const registered = createMetrics({ collect: () => { throw new Error('not scraped here'); } })
  .getMetricsAsArray()
  .map((m) => (m as unknown as { name: string }).name);
const own = registered.filter((n) => !n.startsWith('gotrail_agent_'));
const operations = readFileSync(join(repoRoot, 'docs', 'operations.md'), 'utf8');
const dashboardPath = join(repoRoot, 'deploy', 'grafana', 'gotrail-dashboard.json');

test('docs/operations.md documents every metric of the agent, and only those', () => {
  assert.ok(own.length >= 25, `the registry has the agent's metrics (${own.length})`);
  const table = operations.slice(operations.indexOf('## Metrics'));
  const documented = [...table.matchAll(/^\| `(gotrail_[a-z_]+)` \|/gm)].map((m) => m[1]!);
  assert.deepEqual(documented.filter((n) => n !== 'gotrail_agent_').sort(), [...own].sort());
  assert.match(table, /^\| `gotrail_agent_\*` \|/m, 'the default process metrics are documented as a family');
  for (const n of [...table.matchAll(/`(gotrail_agent_[a-z_]+)`/g)].map((m) => m[1]!)) assert.ok(registered.includes(n), `${n} exists`);
});

interface Panel { title: string; type: string; targets?: Array<{ expr: string }> }

test('the Grafana dashboard queries only metrics the agent registers, and each of its panels has a query', () => {
  const d = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { panels: Panel[] };
  const used = new Set<string>();
  for (const p of d.panels.filter((x) => x.type !== 'row')) {
    assert.ok(p.targets?.length, `panel ${p.title} has a query`);
    for (const t of p.targets) for (const m of t.expr.matchAll(/\b(gotrail_[a-z_]+)/g)) used.add(m[1]!.replace(/_(bucket|sum|count)$/, ''));
  }
  for (const n of used) assert.ok(registered.includes(n), `${n} (in the dashboard) is a metric of the agent`);
  const lossMetrics = ['gotrail_events_lost_total', 'gotrail_events_dropped_total', 'gotrail_spans_dropped_total', 'gotrail_events_malformed_total'];
  for (const n of lossMetrics) assert.ok(used.has(n), `the dashboard shows ${n}`);
});

test('the Grafana dashboard is valid for the dashboard schema of its schemaVersion, which rejects a mistyped file', { skip: skipUnlessTools() }, () => {
  const ok = run(tool('dashboardcheck'), [dashboardPath]);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /valid Grafana dashboard \(schemaVersion 42, \d+ panels\)/);
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-dashboard-'));
  try {
    const d = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { panels: Array<Record<string, unknown>> };
    d.panels[1]!.gridpos = d.panels[1]!.gridPos;
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify(d));
    const r = run(tool('dashboardcheck'), [bad]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /panels\[1\].*unexpected field 'gridpos'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
