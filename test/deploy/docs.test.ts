/**
 * docs/operations.md lists every metric the agent registers (no more, no
 * fewer), the Helm chart's README every value of its values.yaml (and no
 * other), and the Grafana dashboard is valid for its schemaVersion and
 * queries only metrics that exist.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
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

test('the Helm chart\'s README documents every value of values.yaml, and only those; it says how to label the namespace and where OTLP headers belong', () => {
  const dir = join(repoRoot, 'deploy', 'helm', 'gotrail');
  const values = parseYaml(readFileSync(join(dir, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  const readme = readFileSync(join(dir, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('## Values'));
  // the first cell of each row names one or more values: `a.b`, `c`
  const documented = new Set([...table.matchAll(/^\| ([^|]+) \|/gm)].flatMap((m) => [...m[1]!.matchAll(/`([A-Za-z.]+)`/g)].map((n) => n[1]!)));
  const leaves: string[] = [];
  const walk = (o: Record<string, unknown>, at: string): void => {
    for (const [k, v] of Object.entries(o)) {
      const path = at ? `${at}.${k}` : k;
      if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) walk(v as Record<string, unknown>, path);
      else leaves.push(path);
    }
  };
  walk(values, '');
  // a value is documented by its row or its parent's (`resources`, `config` as a whole)
  for (const leaf of leaves) {
    const parts = leaf.split('.');
    assert.ok(parts.some((_, i) => documented.has(parts.slice(0, i + 1).join('.'))), `${leaf} is in the README's table`);
  }
  for (const name of documented) {
    let v: unknown = values;
    for (const k of name.split('.')) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
    assert.notEqual(v, undefined, `${name} (in the README's table) is a value of values.yaml`);
  }
  assert.match(readme, /kubectl label namespace gotrail pod-security\.kubernetes\.io\/enforce=privileged/);
  assert.match(readme, /otlpHeadersSecret\.name=/);
});

test('the agent is started through the launcher wherever the docs and npm scripts start it (Node\'s flags, --disable-sigusr1 among them)', () => {
  const docs = ['README.md', 'deploy/helm/gotrail/README.md', ...readdirSync(join(repoRoot, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  const scripts = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const texts: Array<[string, string]> = [...docs.map((d): [string, string] => [d, readFileSync(join(repoRoot, d), 'utf8')]), ...Object.entries(scripts).map(([k, v]): [string, string] => [`npm run ${k}`, v])];
  for (const [where, text] of texts) {
    // a command line that hands the CLI's entry point to node, not to daemon/bin/gotrail
    assert.deepEqual(text.match(/\bdaemon\/cli\/main\.ts\s+(run|demo|inspect)\b/g) ?? [], [], `${where} starts gotrail without its launcher`);
  }
  assert.match(scripts['demo'] ?? '', /&& daemon\/bin\/gotrail demo$/);
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
