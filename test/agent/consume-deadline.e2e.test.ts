/**
 * The probe-event consumer hands events to the span pipeline at most once
 * per consume interval while they flow (a data-age deadline), not once per
 * event: each hand-off to JavaScript costs the agent a fixed share of CPU.
 * Requests spaced about half an interval apart, over several intervals, must
 * arrive in at most one batch per interval (plus the few a change from idle
 * to busy adds), every one of them delivered, none lost; and, the deadline
 * being a bound on the events' age, in at least one batch per two intervals
 * while they flow.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';
import { metricSum, scrapeMetrics } from '../support/metrics.ts';
import { DEFAULT_CONSUME_INTERVAL_MS } from '../../daemon/agent/bpf-runtime.ts';

const batches = (text: string): number => metricSum(text, 'gotrail_ringbuf_batches_total', { map: 'gt_events' });
const spans = (text: string): number => metricSum(text, 'gotrail_events_total', { type: 'net/http/server' });

test('busy consumer: one hand-off to JavaScript per consume interval, nothing lost', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-consume-deadline');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const server = await startGoServer(bin);
  try {
    const agent = await startAgent(['--include-exe', bin, '--exporter', 'none']);
    try {
      await agent.waitTraced(server.pid, 60_000);
      await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
      const before = await scrapeMetrics(agent);
      const N = 40;
      const t0 = performance.now();
      for (let i = 0; i < N; i++) {
        assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
        await sleep(DEFAULT_CONSUME_INTERVAL_MS / 2);
      }
      const sendMs = performance.now() - t0;
      let after = await scrapeMetrics(agent);
      for (; spans(after) - spans(before) < N; after = await scrapeMetrics(agent)) {
        assert.ok(performance.now() - t0 < 60_000, `only ${spans(after) - spans(before)} of ${N} requests arrived as events`);
        await sleep(DEFAULT_CONSUME_INTERVAL_MS);
      }
      const elapsedMs = performance.now() - t0;
      assert.equal(spans(after) - spans(before), N);
      assert.equal(metricSum(after, 'gotrail_events_lost_total') - metricSum(before, 'gotrail_events_lost_total'), 0);
      const handOffs = batches(after) - batches(before);
      // once per interval over the whole period, plus one early drain per
      // change from idle to busy (at most one here: the period is continuous
      // unless the machine stalls the sender) and the drains in flight
      const bound = Math.ceil(elapsedMs / DEFAULT_CONSUME_INTERVAL_MS) + 4;
      assert.ok(handOffs <= bound, `${handOffs} batches for ${N} events in ${elapsedMs.toFixed(0)} ms (bound ${bound})`);
      // the events' age is bounded: they did not wait for one another beyond the interval
      const least = Math.floor(sendMs / (2 * DEFAULT_CONSUME_INTERVAL_MS));
      assert.ok(handOffs >= least, `${handOffs} batches for ${N} events sent over ${sendMs.toFixed(0)} ms (at least ${least}: one per two intervals)`);
    } finally {
      await agent.stop();
    }
  } finally {
    await server.stop();
  }
});
