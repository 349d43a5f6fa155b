/** The agent's own resource metrics (prom-client's defaults, prefixed gotrail_agent_) read as their names say. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics } from '../../daemon/agent/metrics.ts';
import { sleep } from '../support/wait.ts';

/** The value of a gauge without labels in the registry's text. */
function value(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} in\n${text}`);
  return Number(m[1]);
}

test('the event-loop lag gauges give the delay beyond the once-a-second sampling, not the second itself', async () => {
  const reg = createMetrics({ collect: () => { throw new Error('not read here'); } });
  // this process waits idle: each sample's lag is a few ms at most; before,
  // min, mean, p50 and p90 read ~1 s (the interval between samples)
  await sleep(3500);
  // the lag gauge's collection sets the others (prom-client), as a scrape of /metrics does
  let text = await reg.getSingleMetricAsString('gotrail_agent_nodejs_eventloop_lag_seconds') + '\n';
  for (const stat of ['min', 'max', 'mean', 'p50', 'p90', 'p99']) text += await reg.getSingleMetricAsString(`gotrail_agent_nodejs_eventloop_lag_${stat}_seconds`) + '\n';
  for (const stat of ['min', 'mean', 'p50', 'p90']) {
    const v = value(text, `gotrail_agent_nodejs_eventloop_lag_${stat}_seconds`);
    assert.ok(v >= 0 && v < 0.5, `${stat} ${v}\n${text}`);
  }
  assert.ok(value(text, 'gotrail_agent_nodejs_eventloop_lag_max_seconds') >= value(text, 'gotrail_agent_nodejs_eventloop_lag_min_seconds'), text);
});

test('a scrape within a second of the previous one (no sample since) reads 0 for each lag statistic, not the histogram\'s "no sample" sentinel (~9.2e9 s) or NaN', async () => {
  const reg = createMetrics({ collect: () => { throw new Error('not read here'); } });
  const stats = ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'];
  const scrape = async (): Promise<string> => {
    let text = await reg.getSingleMetricAsString('gotrail_agent_nodejs_eventloop_lag_seconds') + '\n';
    for (const stat of stats) text += await reg.getSingleMetricAsString(`gotrail_agent_nodejs_eventloop_lag_${stat}_seconds`) + '\n';
    return text;
  };
  await sleep(2500);
  const first = await scrape();
  // samples were taken before the first scrape: its figures are real ones
  assert.ok(value(first, 'gotrail_agent_nodejs_eventloop_lag_max_seconds') >= value(first, 'gotrail_agent_nodejs_eventloop_lag_min_seconds'), first);
  // the first scrape emptied the histogram; the next sample is a second away
  const second = await scrape();
  for (const stat of stats) assert.equal(value(second, `gotrail_agent_nodejs_eventloop_lag_${stat}_seconds`), 0, `${stat}\n${second}`);
  // and a later scrape has samples again
  await sleep(2500);
  const third = await scrape();
  const min = value(third, 'gotrail_agent_nodejs_eventloop_lag_min_seconds');
  assert.ok(min >= 0 && min < 0.5, third);
  assert.ok(Number.isFinite(value(third, 'gotrail_agent_nodejs_eventloop_lag_stddev_seconds')), third);
});
