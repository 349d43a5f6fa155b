/**
 * A collector that is down when the agent starts: the agent keeps running,
 * says so once, keeps the spans, and delivers them when the collector comes
 * back on the address the standard OTEL_EXPORTER_OTLP_ENDPOINT names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
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

test('stopping with a collector that never answers: the agent says what it flushes and where, gives up after the export timeout, and logs and counts what it dropped', { skip: skipUnlessBpf() }, async () => {
  const dir = join(repoRoot, 'build', 'test-dead-collector');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver-stop');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  // accepts connections and never answers: every export hangs
  const sockets: Socket[] = [];
  const silent = createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as { port: number }).port;
  const agent = await startAgent(['--include-exe', bin, '--export-timeout', '3000', '--schedule-delay', '60000'], { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` });
  const server = await startGoServer(bin);
  try {
    await agent.waitTraced(server.pid);
    for (let i = 0; i < 20; i++) assert.equal((await httpRequest(`${server.url}/hello?n=${i}`)).status, 200);
    // every span is made and queued (the schedule delay keeps them waiting)
    const url = await agent.metricsUrl();
    for (let t = Date.now(); ; ) {
      const m = /^gotrail_span_queue_length (\d+)$/m.exec((await httpRequest(url)).body);
      if (m && Number(m[1]) >= 20) break;
      assert.ok(Date.now() - t < 20_000, 'spans made');
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await server.stop();
  }
  const t0 = Date.now();
  const code = await agent.stop();
  const took = Date.now() - t0;
  silent.close();
  for (const s of sockets) s.destroy();
  assert.equal(code, 0, agent.log().slice(-3000));
  const log = agent.log();
  const flushing = /INFO {2}flushing (\d+) spans to (\S+) before stopping \(giving up after 3 s, the export timeout\)/.exec(log);
  assert.ok(flushing, log.slice(-3000));
  assert.ok(Number(flushing[1]) >= 20, `${flushing[1]} spans flushed`);
  assert.equal(flushing[2], `http://127.0.0.1:${port}/v1/traces`);
  const dropped = /WARN {2}stopping without exporting (\d+) spans to (\S+): dropped, counted in gotrail_spans_dropped_total\{reason="shutdown"\} spans=\d+ reason="no answer within 3 s/.exec(log);
  assert.ok(dropped, log.slice(-3000));
  assert.equal(dropped[1], flushing[1], 'every span it could not deliver is counted');
  // bounded: the 3 s export timeout, the 1 s the exporter gets to shut down, and the rest of the stop on a busy machine
  assert.ok(took < 12_000, `stopped in ${took} ms`);
});

test('a second SIGTERM or SIGINT while the agent flushes gives up the export at once: the agent exits 0 and logs and counts what it dropped (it used to die by the signal, the spans lost without a word)', { skip: skipUnlessBpf() }, async () => {
  const dir = join(repoRoot, 'build', 'test-dead-collector');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver-second-signal');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  // accepts connections and never answers: the flush at stop would wait the whole export timeout
  const sockets: Socket[] = [];
  const silent = createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as { port: number }).port;
  const agent = await startAgent(['--include-exe', bin, '--export-timeout', '600000', '--schedule-delay', '600000'], { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` });
  try {
    const server = await startGoServer(bin);
    try {
      await agent.waitTraced(server.pid);
      for (let i = 0; i < 5; i++) assert.equal((await httpRequest(`${server.url}/hello?n=${i}`)).status, 200);
      const url = await agent.metricsUrl();
      for (let t = Date.now(); ; ) {
        const m = /^gotrail_span_queue_length (\d+)$/m.exec((await httpRequest(url)).body);
        if (m && Number(m[1]) >= 5) break;
        assert.ok(Date.now() - t < 20_000, 'spans made');
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await server.stop();
    }
    // a supervisor's SIGTERM, then an impatient Ctrl-C: the same handling for either signal
    agent.child.kill('SIGTERM');
    await agent.waitFor(/INFO {2}flushing \d+ spans to \S+ before stopping/, 20_000);
    agent.child.kill('SIGINT');
    const code = await agent.stop();
    const log = agent.log();
    assert.equal(code, 0, log.slice(-3000));
    assert.match(log, /WARN {2}SIGINT received while stopping: giving up the export now/);
    const flushing = /INFO {2}flushing (\d+) spans/.exec(log)!;
    const dropped = /WARN {2}stopping without exporting (\d+) spans to \S+: dropped, counted in gotrail_spans_dropped_total\{reason="shutdown"\} spans=\d+ reason="given up: a second stop signal/.exec(log);
    assert.ok(dropped, log.slice(-3000));
    assert.equal(dropped[1], flushing[1], 'every span it could not deliver is counted');
  } finally {
    await agent.stop();
    silent.close();
    for (const s of sockets) s.destroy();
  }
});
