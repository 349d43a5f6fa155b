/**
 * An idle agent does not wake up: with a traced server that serves nothing,
 * the poll thread of the probe-event ring buffer sleeps without a timer
 * (gotrail_ringbuf_wakeups_total{map="gt_events"} stays still), and the
 * first request after the idle period still reaches the agent at once,
 * because its event wakes the sleeping consumer. After a longer quiet it
 * hands its file pages back to the kernel, and tracing goes on as before.
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

const wakeups = (text: string): number => metricSum(text, 'gotrail_ringbuf_wakeups_total', { map: 'gt_events' });
const spans = (text: string): number => metricSum(text, 'gotrail_events_total', { type: 'net/http/server' });

test('idle agent: the probe-event consumer sleeps without a timer and wakes for the next request', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-idle-wakeups');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const server = await startGoServer(bin);
  try {
    const agent = await startAgent(['--include-exe', bin, '--exporter', 'none']);
    try {
      await agent.waitTraced(server.pid, 60_000);
      await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
      // traffic first, so that the consumer has run its timer and must go back to sleep
      for (let i = 0; i < 20; i++) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
      for (let t = Date.now(); spans(await scrapeMetrics(agent)) < 20; ) {
        assert.ok(Date.now() - t < 10_000, 'the 20 requests did not arrive as events');
        await sleep(100);
      }
      // two timer ticks (a consume interval each) let it notice the empty ring and fall
      // asleep; on a busy machine the thread may run late, so wait until its
      // count settles (bounded) before the idle period is measured
      let before = await scrapeMetrics(agent);
      for (let t = Date.now(); ; ) {
        await sleep(300);
        const next = await scrapeMetrics(agent);
        if (wakeups(next) === wakeups(before)) break;
        before = next;
        assert.ok(Date.now() - t < 10_000, 'the probe-event poll thread never fell asleep');
      }
      await sleep(3000);
      const after = await scrapeMetrics(agent);
      assert.equal(wakeups(after) - wakeups(before), 0, 'the probe-event poll thread woke up while nothing happened');
      assert.equal(spans(after), spans(before));

      // the first request after the idle period wakes it: delivered at once, not at a next tick
      const t0 = Date.now();
      assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
      for (;;) {
        const m = await scrapeMetrics(agent);
        if (spans(m) === spans(after) + 1) {
          assert.ok(wakeups(m) > wakeups(after));
          break;
        }
        assert.ok(Date.now() - t0 < 2000, 'the request after the idle period did not reach the agent within 2 s');
        await sleep(20);
      }
    } finally {
      await agent.stop();
    }
  } finally {
    await server.stop();
  }
});

test('idle agent: hands its file pages back after a longer quiet, and the next request is still traced at once', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-idle-wakeups');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver-pageout');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const server = await startGoServer(bin);
  try {
    const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--log-level', 'debug']);
    try {
      await agent.waitTraced(server.pid, 60_000);
      for (let i = 0; i < 20; i++) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
      // the first page-out follows the first reduction once the requests are
      // over (5-6 s; later ones wait 30 s after the last activity:
      // daemon/agent/memory-trim.ts), once
      const m = await agent.waitFor(/idle: file pages handed back to the kernel ranges=(\d+)(.*)/, 120_000);
      assert.ok(Number(m[1]) > 0, m[0]);
      assert.doesNotMatch(m[2]!, /errno=/, 'the kernel refused a range');
      const before = spans(await scrapeMetrics(agent));
      const t0 = Date.now();
      assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
      for (;;) {
        if (spans(await scrapeMetrics(agent)) === before + 1) break;
        assert.ok(Date.now() - t0 < 2000, 'the request after the page-out did not reach the agent within 2 s');
        await sleep(20);
      }
    } finally {
      await agent.stop();
    }
  } finally {
    await server.stop();
  }
});
