/**
 * The overhead budget's policy (daemon/agent/budget.ts), driven with known
 * samples: which level is shed when, in which order, and when it comes back.
 * The end-to-end test (budget.e2e.test.ts) drives it with a real estimate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OverheadBudget, SHED_LEVELS, parseBudgetPercent, shedLevelOf, type BudgetAction } from '../../daemon/agent/budget.ts';
import { resolveRunConfig } from '../../daemon/config/resolve.ts';
import { parseConfig } from '../../daemon/config/file.ts';

const PROBES = new Set(['net/http/server', 'net/http/client', 'runtime/goroutines', 'database/sql']);

/** Feeds one binary `seconds` of samples, one a second: the process uses `cpu` CPU seconds per second, of which tracing `est`. */
function run(b: OverheadBudget, t: { now: number; est: number; cpu: number }, seconds: number, rate: { est: number; cpu: number }, probes: ReadonlySet<string> = PROBES): BudgetAction[] {
  const out: BudgetAction[] = [];
  for (let i = 0; i < seconds; i++) {
    t.now += 1000;
    t.est += rate.est;
    t.cpu += rate.cpu;
    const a = b.observe('bin', [{ pid: 1, estimatedSeconds: t.est, cpuSeconds: t.cpu }], probes, t.now);
    if (!a) continue;
    out.push(a);
    if (a.action === 'shed') b.shed('bin', a, t.now);
    else b.restored('bin', t.now);
  }
  return out;
}

test('over budget: one level per full window, in the documented order; levels the binary lacks are skipped', () => {
  const b = new OverheadBudget({ fraction: 0.02, windowMs: 5000 });
  const t = { now: 0, est: 0, cpu: 0 };
  // 20 % of 0.5 CPU s/s: far over 2 %
  const noSql = new Set([...PROBES].filter((p) => p !== 'database/sql'));
  const acts = run(b, t, 30, { est: 0.1, cpu: 0.5 }, noSql);
  assert.deepEqual(acts.map((a) => `${a.action} ${a.level} ${a.probes.join('+')}`), [
    'shed enrichment runtime/goroutines',
    'shed client_spans net/http/client',
    'shed server_spans net/http/server',
  ]);
  assert.ok(acts.every((a) => Math.abs(a.cpuFraction - 0.2) < 1e-9));
  assert.deepEqual(b.shedProbes('bin'), ['runtime/goroutines', 'net/http/client', 'net/http/server']);
  // everything shed: nothing more to do however high the cost
  assert.deepEqual(run(b, t, 10, { est: 0.1, cpu: 0.5 }, noSql), []);
});

test('restore: never while the load that made the cost lasts; last shed first, after three windows well under budget', () => {
  const b = new OverheadBudget({ fraction: 0.02, windowMs: 5000 });
  const t = { now: 0, est: 0, cpu: 0 };
  run(b, t, 6, { est: 0.1, cpu: 0.5 });
  assert.deepEqual(b.shedProbes('bin'), ['runtime/goroutines']);
  // same load, cost now 1 % (under the budget, not under half of it plus the shed level's 20 %): nothing moves
  assert.deepEqual(run(b, t, 60, { est: 0.005, cpu: 0.5 }), []);
  // load stops: the process uses almost no CPU, so the shed level would cost almost nothing
  const acts = run(b, t, 40, { est: 0, cpu: 0.0001 });
  assert.deepEqual(acts.map((a) => `${a.action} ${a.level}`), ['restore enrichment']);
  // the first restore waits a full window, then three windows under half
  assert.equal(b.shedProbes('bin').length, 0);
});

test('a cost under the 1 ms/s floor is never shed, however large a fraction of a nearly idle process', () => {
  const b = new OverheadBudget({ fraction: 0.01, windowMs: 2000 });
  const t = { now: 0, est: 0, cpu: 0 };
  assert.deepEqual(run(b, t, 20, { est: 0.0005, cpu: 0.001 }), []);
});

test('the shedding order: ancestry and routers, then spans inside requests, then clients, servers last', () => {
  assert.deepEqual(SHED_LEVELS.map((l) => l.name), ['enrichment', 'inner_spans', 'client_spans', 'server_spans']);
  assert.equal(shedLevelOf('runtime/goroutines'), 0);
  assert.equal(shedLevelOf('github.com/gin-gonic/gin'), 0);
  assert.equal(shedLevelOf('github.com/redis/go-redis/v9'), 1);
  assert.equal(shedLevelOf('google.golang.org/grpc/client'), 2);
  assert.equal(shedLevelOf('google.golang.org/grpc/server'), 3);
  assert.equal(shedLevelOf('some/future/probe'), 2, 'an unlisted probe goes with the client spans');
});

test('--overhead-budget, GOTRAIL_OVERHEAD_BUDGET and the file: parsed, with precedence and errors naming the setting', () => {
  assert.equal(parseBudgetPercent('2%'), 0.02);
  assert.equal(parseBudgetPercent('0.5'), 0.005);
  assert.equal(parseBudgetPercent('off'), undefined);
  assert.throws(() => parseBudgetPercent('150%'), /up to 100 \(e\.g\. 2%\), or 0 or off \(no budget\), got "150%"/);
  assert.equal(resolveRunConfig({}, {}, {}).overheadBudget, undefined, 'off by default');
  const file = parseConfig('overheadBudget: {percent: 3, windowMillis: 4000}\n', 'config.yaml');
  assert.deepEqual(resolveRunConfig({}, {}, file).overheadBudget, { fraction: 0.03, windowMs: 4000 });
  assert.deepEqual(resolveRunConfig({}, { GOTRAIL_OVERHEAD_BUDGET: '1%' }, file).overheadBudget, { fraction: 0.01, windowMs: 4000 });
  const flag = resolveRunConfig({ 'overhead-budget': '5', 'overhead-budget-window': '2000' }, { GOTRAIL_OVERHEAD_BUDGET: '1%' }, file);
  assert.deepEqual(flag.overheadBudget, { fraction: 0.05, windowMs: 2000 });
  assert.equal(flag.sources['overheadBudget.percent'], '--overhead-budget');
  assert.throws(() => resolveRunConfig({ 'overhead-budget': 'lots' }, {}), /--overhead-budget: expected a percentage/);
  assert.throws(() => resolveRunConfig({}, { GOTRAIL_OVERHEAD_BUDGET: '-1' }), /GOTRAIL_OVERHEAD_BUDGET: expected a percentage/);
  // 0 is off in the file too, as on the command line
  assert.equal(resolveRunConfig({}, {}, parseConfig('overheadBudget: {percent: 0}\n', 'config.yaml')).overheadBudget, undefined);
  assert.throws(() => parseConfig('overheadBudget: {percent: -1}\n', 'config.yaml'), /overheadBudget\.percent: expected a percentage from 0 \(off\) to 100/);
});
