/**
 * A stripped server whose build info names a Go version no offsets database
 * knows (go1.30.1, rewritten into a go1.27.3 build): the agent takes every
 * offset from the binary's Go type metadata, attaches the server probe with
 * nothing degraded, and traces requests end to end, reading the incoming
 * traceparent. Real process, real eBPF.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { planBinaryAt } from '../../daemon/agent/binary-plan.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { probes } from '../../daemon/probes/registry.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep, until } from '../support/wait.ts';

const skip = skipUnlessBpf();
const work = join(repoRoot, 'build', 'test-type-metadata');
const bin = join(work, 'httpserver-go1.30.1');

describe('offsets from the Go type metadata', { skip }, () => {
  let agent: Agent;
  const spans: ReadableSpan[] = [];

  before(async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    const buf = readFileSync(join(repoRoot, 'build', 'go', 'go1.27', 'stripped', 'httpserver'));
    let n = 0;
    for (let i = buf.indexOf('go1.27.3'); i >= 0; i = buf.indexOf('go1.27.3', i + 1), n++) buf.write('go1.30.1', i, 'latin1');
    assert.ok(n > 0);
    writeFileSync(bin, buf, { mode: 0o755 });
    agent = new Agent(createLogger('warn'), {
      skipOwnRequests: false,
      exporter: createExporter({ kind: 'none' }),
      selection: { includeExe: [join(work, '**')] },
      onSpan: (s) => spans.push(s),
      batcher: { scheduledDelayMillis: 100 },
    });
    await agent.start();
  });

  after(async () => {
    await agent?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test('stripped go1.30.1 server: every offset from type metadata, the server probe attaches fully and traces with traceparent', async () => {
    const { plan } = planBinaryAt(bin, probes);
    assert.ok(plan);
    assert.equal(plan.goVersion, 'go1.30.1');
    const server = plan.probes.find((p) => p.probe.id === 'net/http/server')!;
    assert.equal(server.attachable, true, server.reason);
    assert.deepEqual(server.degraded, []);
    assert.deepEqual(server.missingOptional.filter((f) => !f.includes('http2')), []);
    assert.ok(Object.values(server.offsetSources).every((s) => s === 'types'), JSON.stringify(server.offsetSources));

    const s = await startGoServer(bin);
    try {
      const traceId = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
      const parent = 'b7ad6b7169203331';
      // The probes attach within milliseconds of exec; ask until a request is traced.
      const deadline = Date.now() + 15_000;
      while (!spans.some((x) => Number(x.resource.attributes['process.pid']) === s.pid) && Date.now() < deadline) {
        const res = await httpRequest(`${s.url}/hello`, { headers: { traceparent: `00-${traceId}-${parent}-01` } });
        assert.equal(res.status, 200);
        await sleep(200);
      }
      await until('a span of the server', () => spans.some((x) => Number(x.resource.attributes['process.pid']) === s.pid), 5_000);
      const mine = spans.filter((x) => Number(x.resource.attributes['process.pid']) === s.pid);
      const hello = mine.find((x) => x.attributes['url.path'] === '/hello')!;
      assert.ok(hello, 'a SERVER span for /hello');
      assert.equal(hello.attributes['http.response.status_code'], 200);
      assert.equal(hello.attributes['http.request.method'], 'GET');
      assert.equal(hello.spanContext().traceId, traceId, 'the incoming traceparent is the parent (the parsed header read with offsets from type metadata)');
      assert.equal(hello.resource.attributes['process.runtime.version'], 'go1.30.1');
    } finally {
      await s.stop();
    }
  });
});
