/**
 * Kernels before 6.6 have no uprobe_multi links: the agent then attaches one
 * perf-event uprobe per site. The same traces must come out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { until } from '../support/wait.ts';

test('single perf-event uprobes (no uprobe_multi): server, client and linked spans as before', { skip: skipUnlessBpf() }, async () => {
  const dir = join(repoRoot, 'build', 'test-single-uprobes');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.27', 'stripped', 'httpserver'), bin);
  const spans: ReadableSpan[] = [];
  const agent = new Agent(createLogger('warn'), {
    // the test's own requests are the traced programs' traffic
    skipOwnRequests: false,
    exporter: createExporter({ kind: 'none' }),
    selection: { includeExe: [bin] },
    onSpan: (s) => spans.push(s),
    batcher: { scheduledDelayMillis: 100 },
    uprobeMulti: false,
  });
  await agent.start();
  const server = await startGoServer(bin);
  try {
    await until('traced', () => agent.tracedPids().includes(server.pid));
    const kinds = new Set(agent.runtime()!.obj.linkSets().filter((l) => l.kind !== 'tracepoint' && l.kind !== 'socket').map((l) => l.kind));
    assert.deepEqual([...kinds], ['uprobe'], 'one perf-event uprobe per site');
    for (let i = 0; i < 10; i++) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    assert.equal((await httpRequest(`${server.url}/proxy?to=${encodeURIComponent(`${server.url}/status/204`)}`)).status, 204);
    await agent.flush();
    await until('spans', () => spans.length >= 13);
    await new Promise((r) => setTimeout(r, 300));
    await agent.flush();
    const mine = spans.filter((s) => s.resource.attributes['process.pid'] === server.pid);
    assert.equal(mine.filter((s) => s.attributes['url.path'] === '/hello').length, 10);
    const client = mine.find((s) => s.attributes['url.full'] !== undefined)!;
    const proxied = mine.find((s) => s.attributes['url.path'] === '/status/204')!;
    const proxy = mine.find((s) => s.attributes['url.path'] === '/proxy')!;
    assert.equal(client.parentSpanContext?.spanId, proxy.spanContext().spanId);
    assert.equal(proxied.parentSpanContext?.spanId, client.spanContext().spanId, 'linked through the connection');
  } finally {
    await server.stop();
    await agent.stop();
  }
});
