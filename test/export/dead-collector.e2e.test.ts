/**
 * A collector that is down when the agent starts: the agent keeps running,
 * says so once, keeps the spans, and delivers them when the collector comes
 * back on the address the standard OTEL_EXPORTER_OTLP_ENDPOINT names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { startCollector } from '../support/collector.ts';
import { startAgent, repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('spans survive a collector that is down, and arrive once it is up', { skip: skipUnlessBpf() }, async () => {
  const dir = join(repoRoot, 'build', 'test-dead-collector');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const port = await freePort();
  const agent = await startAgent(['--include-exe', bin], { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` });
  const server = await startGoServer(bin);
  try {
    await agent.waitTraced(server.pid);
    for (let i = 0; i < 20; i++) assert.equal((await httpRequest(`${server.url}/hello?n=${i}`)).status, 200);
    await agent.waitFor(/span export failed: spans kept and retried/, 20_000);
    const metrics = (await httpRequest(await agent.metricsUrl())).body;
    assert.match(metrics, /^gotrail_export_failures_total [1-9]/m, 'failed attempts are counted');
    assert.match(metrics, /^gotrail_spans_dropped_total\{reason="queue_full"\} 0$/m, 'nothing dropped');
    assert.doesNotMatch(metrics, /^gotrail_spans_dropped_total\{[^}]*\} [1-9]/m, 'nothing dropped, for any reason');
    assert.equal(agent.child.exitCode, null, 'the agent is still running');

    const collector = await startCollector({ httpPort: port });
    try {
      const spans = await collector.waitForSpans((all) => all.filter((s) => s.resource['process.pid'] === server.pid).length >= 20, 60_000);
      await new Promise((r) => setTimeout(r, 1000));
      const mine = (await collector.spans()).filter((s) => s.resource['process.pid'] === server.pid);
      assert.equal(mine.length, 20, 'every span delivered exactly once');
      assert.ok(spans.length >= 20);
      await agent.waitFor(/span export recovered/, 10_000);
    } finally {
      await collector.stop();
    }
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0);
  }
});
