/**
 * Process events have a ring buffer of their own: a flood of probe events
 * that fills the probe ring buffer (and a consumer that stopped taking probe
 * events, as it does while the export queue is full) must neither delay nor
 * push out exec and exit events. Real processes, real eBPF.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { until } from '../support/wait.ts';

const skip = skipUnlessBpf();
const goBin = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');

describe('process events beside a flood of probe events', { skip }, () => {
  let agent: Agent;
  const spans: ReadableSpan[] = [];

  before(async () => {
    agent = new Agent(createLogger('warn'), {
      exporter: createExporter({ kind: 'none' }),
      selection: { includeExe: [join(repoRoot, 'build', 'go', '**')] },
      onSpan: (s) => spans.push(s),
      skipOwnRequests: false,
      // a small probe ring buffer, so that the flood fills it
      mapSizes: { ringBufferBytes: 64 * 1024 },
    });
    await agent.start();
  });

  after(async () => {
    await agent?.stop();
  });

  test('with the probe ring buffer full and not consumed, 40 new processes are all found, traced and released', async () => {
    const rt = agent.runtime()!;
    const flooder = await startGoServer(goBin('go1.26', 'plain'));
    const servers: GoServer[] = [];
    try {
      await until('flooding server traced', () => agent.tracedPids().includes(flooder.pid), 10_000);
      rt.pauseProbeEvents(true);
      const full0 = rt.counters()['ringbuf_full'] ?? 0n;
      // 64 KiB holds about 150 server events: 600 requests overflow it
      let next = 0;
      await Promise.all(Array.from({ length: 8 }, async () => {
        while (next++ < 600) await httpRequest(`${flooder.url}/hello`);
      }));
      const overflowed = (rt.counters()['ringbuf_full'] ?? 0n) - full0;
      assert.ok(overflowed > 0n, `the probe ring buffer overflowed (${overflowed} events counted as ringbuf_full)`);

      const execs0 = agent.totals.execEvents;
      for (let i = 0; i < 40; i++) servers.push(await startGoServer(goBin(['go1.19', 'go1.26', 'go1.27'][i % 3]!, ['plain', 'stripped', 'pie'][i % 3]!)));
      await until('all 40 new processes traced while probe events are not consumed', () => servers.every((s) => agent.tracedPids().includes(s.pid)), 20_000);
      assert.ok(agent.totals.execEvents - execs0 >= 40, 'their exec events arrived');
      assert.equal(rt.counters()['process_events_full'] ?? 0n, 0n, 'no process event lost');

      const exits0 = agent.totals.exitEvents;
      await Promise.all(servers.splice(0).map((s) => s.stop()));
      await until('their exits seen', () => agent.totals.exitEvents - exits0 >= 40, 10_000);

      // consumption resumes: the events that fitted are turned into spans
      rt.pauseProbeEvents(false);
      const flooded = (): number => spans.filter((s) => Number(s.resource.attributes['process.pid']) === flooder.pid).length;
      await until('spans after resuming', () => BigInt(flooded()) + overflowed >= 600n, 10_000).catch(() => undefined);
      await agent.flush();
      const delivered = spans.filter((s) => Number(s.resource.attributes['process.pid']) === flooder.pid).length;
      assert.equal(BigInt(delivered) + overflowed, 600n, `every request is a span or a counted overflow (${delivered} spans + ${overflowed} counted)`);
    } finally {
      rt.pauseProbeEvents(false);
      await Promise.all(servers.map((s) => s.stop()));
      await flooder.stop();
    }
  });
});
