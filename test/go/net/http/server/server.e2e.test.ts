/**
 * End to end: real Go HTTP servers (each Go toolchain here × plain, stripped,
 * PIE), the real agent (`gotrail run`), real eBPF, and a real OpenTelemetry
 * Collector receiving the spans over OTLP.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:http2';
import { attributeText, type ReceivedSpan } from '../../../../support/collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { h2Status, httpRequest, httpsStatus, startGoServer } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const toolchains = ['go1.19', 'go1.26', 'go1.27'];
const variants = ['plain', 'stripped', 'pie'];
const binPath = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');
const excludedDir = join(repoRoot, 'build', 'e2e-excluded');

function spansOf(spans: ReceivedSpan[], pid: number, kind = 'SERVER'): ReceivedSpan[] {
  return spans.filter((s) => s.resource['process.pid'] === pid && s.kind === kind);
}

describe('net/http server probe, end to end', { skip }, () => {
  before(() => {
    for (const tc of toolchains) for (const v of variants) assert.ok(existsSync(binPath(tc, v)), `${binPath(tc, v)} missing: run bash deploy/setup.sh`);
  });
  const traced = tracedCollector([
    '--include-exe', join(repoRoot, 'build', 'go', '**'),
    '--include-exe', join(excludedDir, '*'),
    '--exclude-exe', join(excludedDir, 'excluded-*'),
    '--max-processes', '2048',
    '--max-inflight', '8192',
  ]);

  for (const tc of toolchains) {
    for (const v of variants) {
      test(`${tc} ${v}: one SERVER span per request, CLIENT spans for outgoing calls`, async () => {
        const server = await startGoServer(binPath(tc, v), [], { OTEL_SERVICE_NAME: `e2e-${tc}-${v}`, OTEL_RESOURCE_ATTRIBUTES: 'team=platform,tier=test%20tier' });
        try {
          await traced.agent.waitTraced(server.pid);
          const traceId = '4bf92f3577b34da6a3ce929d0e0e' + tc.replace(/\D/g, '').padStart(4, '0');
          const parentSpanId = '00f067aa0ba902b7';
          const plan: Array<{ path: string; method?: string; status: number; headers?: Record<string, string>; body?: Buffer }> = [];
          for (let i = 0; i < 20; i++) plan.push({ path: `/hello?i=${i}`, status: 200 });
          for (let i = 0; i < 5; i++) plan.push({ path: '/status/503', status: 503 });
          plan.push({ path: '/status/404', status: 404 });
          plan.push({ path: '/sleep?ms=50', status: 200 });
          plan.push({ path: '/hello', status: 200, headers: { traceparent: `00-${traceId}-${parentSpanId}-01` } });
          // a body larger than the connection's read buffer, then a traced request on a fresh connection
          plan.push({ path: '/echo', method: 'POST', status: 200, body: Buffer.alloc(64 * 1024, 120) });
          plan.push({ path: '/hello', status: 200, headers: { traceparent: `00-${traceId}-${'1'.repeat(16)}-01`, 'x-padding': 'p'.repeat(900), connection: 'close' } });
          // malformed traceparents are ignored: a new trace starts
          plan.push({ path: '/hello', status: 200, headers: { traceparent: `00-${traceId}-${'0'.repeat(16)}-01` } });
          plan.push({ path: '/hello', status: 200, headers: { traceparent: `00-${traceId.toUpperCase()}-${parentSpanId}-01` } });
          plan.push({ path: '/hello', status: 200, headers: { traceparent: `ff-${traceId}-${parentSpanId}-01` } });
          // outgoing calls made while serving: CLIENT spans, children of the SERVER span
          plan.push({ path: `/proxy?to=${encodeURIComponent(server.url + '/status/201')}`, status: 201 });
          plan.push({ path: '/proxy?to=' + encodeURIComponent('http://127.0.0.1:1/refused'), status: 502 });
          // the proxied /status/201 request is served by the same server, and a
          // panicking handler answers nothing: two more SERVER spans
          const expected = plan.length + 2;
          for (const r of plan) {
            const res = await httpRequest(server.url + r.path, { method: r.method, headers: r.headers, body: r.body });
            assert.equal(res.status, r.status, `${r.path} answered ${res.status}`);
          }
          await assert.rejects(httpRequest(`${server.url}/panic`), 'a panicking handler drops the connection');
          const spans = spansOf(await traced.collector.waitForSpans((all) => spansOf(all, server.pid).length >= expected, 20_000), server.pid);
          // let stragglers arrive: the count must be exact, not at least
          await new Promise((r) => setTimeout(r, 1500));
          const final = spansOf(await traced.collector.spans(), server.pid);
          assert.equal(final.length, expected, `exactly one SERVER span per request (got ${final.length}, expected ${expected})`);
          assert.equal(spans.length >= expected, true);

          for (const s of final) {
            assert.equal(s.kind, 'SERVER');
            assert.equal(s.scope.name, 'gotrail/net/http');
            assert.equal(s.scope.schemaUrl, 'https://opentelemetry.io/schemas/1.45.0', 'the semantic conventions the attributes follow');
            assert.equal(s.resource['service.name'], `e2e-${tc}-${v}`);
            assert.equal(s.resource['team'], 'platform');
            assert.equal(s.resource['tier'], 'test tier');
            assert.equal(s.resource['process.runtime.name'], 'go');
            assert.match(attributeText(s.resource['process.runtime.version']), new RegExp(`^${tc.replace('.', '\\.')}`));
            assert.equal(s.resource['process.executable.path'], binPath(tc, v));
            assert.ok(s.resource['host.name']);
            assert.equal(s.attributes['server.address'], '127.0.0.1');
            assert.equal(s.attributes['server.port'], Number(new URL(server.url).port));
            assert.equal(s.attributes['client.address'], '127.0.0.1');
            assert.ok(Number(s.attributes['client.port']) > 0);
            const dur = Number(s.endTimeUnixNano - s.startTimeUnixNano) / 1e6;
            assert.ok(dur >= 0 && dur < 5000, `plausible duration ${dur} ms`);
            const now = Date.now() * 1e6;
            assert.ok(Math.abs(Number(s.startTimeUnixNano) - now) < 120e9, 'start time is wall-clock time, within two minutes of now');
          }
          const byPath = (p: string): ReceivedSpan[] => final.filter((s) => s.attributes['url.path'] === p);
          assert.equal(byPath('/hello').length, 25);
          const hello = byPath('/hello')[0]!;
          assert.equal(hello.name, 'GET');
          assert.equal(hello.attributes['http.request.method'], 'GET');
          assert.equal(hello.attributes['http.response.status_code'], 200);
          assert.notEqual(hello.status.code, 'ERROR');
          const errs = byPath('/status/503');
          assert.equal(errs.length, 5);
          for (const s of errs) {
            assert.equal(s.attributes['http.response.status_code'], 503);
            assert.equal(s.status.code, 'ERROR', '5xx is an error');
          }
          const nf = byPath('/status/404')[0]!;
          assert.equal(nf.attributes['http.response.status_code'], 404);
          assert.notEqual(nf.status.code, 'ERROR', '4xx on a server span is not an error');
          const slow = byPath('/sleep')[0]!;
          const slowMs = Number(slow.endTimeUnixNano - slow.startTimeUnixNano) / 1e6;
          assert.ok(slowMs >= 50 && slowMs < 2000, `/sleep?ms=50 lasted ${slowMs} ms`);
          const panicked = byPath('/panic');
          assert.equal(panicked.length, 1, 'a handler that panics still gets its span');
          assert.equal(panicked[0]!.status.code, 'ERROR');
          assert.equal(panicked[0]!.attributes['error.type'], 'panic');
          assert.equal(panicked[0]!.attributes['http.response.status_code'], undefined, 'nothing was answered');
          const echo = byPath('/echo')[0]!;
          assert.equal(echo.attributes['http.request.method'], 'POST');

          const withParent = final.filter((s) => s.traceId === traceId);
          assert.equal(withParent.length, 2, 'both requests sent with a traceparent joined its trace');
          assert.deepEqual(withParent.map((s) => s.parentSpanId).sort(), ['1'.repeat(16), parentSpanId].sort());
          const withoutParent = final.filter((s) => s.traceId !== traceId);
          assert.equal(withoutParent.length, final.length - 2, 'malformed traceparents (zero span id, upper-case hex, version ff) start new traces');
          for (const s of withoutParent) {
            if (s.attributes['url.path'] === '/status/201') continue; // linked to its local client
            assert.equal(s.parentSpanId, '', 'requests without traceparent start a new trace');
          }
          assert.equal(new Set(final.map((s) => s.spanId)).size, final.length, 'span ids are unique');

          const clients = spansOf(await traced.collector.spans(), server.pid, 'CLIENT');
          assert.equal(clients.length, 2, 'one CLIENT span per outgoing request');
          const proxies = byPath('/proxy');
          const ok = clients.find((c) => c.attributes['http.response.status_code'] === 201)!;
          assert.ok(ok, 'the successful outgoing request');
          assert.equal(ok.name, 'GET');
          assert.equal(ok.attributes['http.request.method'], 'GET');
          assert.equal(ok.attributes['server.address'], '127.0.0.1');
          assert.equal(ok.attributes['server.port'], Number(new URL(server.url).port));
          assert.equal(ok.attributes['url.full'], `${server.url}/status/201`);
          const okParent = proxies.find((p) => p.attributes['http.response.status_code'] === 201)!;
          assert.equal(ok.parentSpanId, okParent.spanId, 'the CLIENT span is a child of the SERVER span that made it');
          assert.equal(ok.traceId, okParent.traceId);
          assert.ok(ok.startTimeUnixNano >= okParent.startTimeUnixNano && ok.endTimeUnixNano <= okParent.endTimeUnixNano, 'nested in time');
          const refused = clients.find((c) => c !== ok)!;
          assert.equal(refused.status.code, 'ERROR', 'a failed outgoing request is an error');
          assert.equal(refused.attributes['error.type'], 'transport');
          assert.equal(refused.attributes['server.port'], 1);
          // the proxied request arrived on this node from a traced client: linked by its TCP connection
          const served = byPath('/status/201');
          assert.equal(served.length, 1);
          assert.equal(served[0]!.parentSpanId, ok.spanId, 'the SERVER span of a node-local call is the CLIENT span\'s child');
          assert.equal(served[0]!.traceId, ok.traceId);
        } finally {
          await server.stop();
        }
      });
    }
  }

  for (const [tc, v] of [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'pie']] as const) {
    test(`${tc} ${v}: HTTP/2 over TLS — one span per request, its status read from the HTTP/2 writer`, async () => {
      const server = await startGoServer(binPath(tc, v), ['-tls']);
      const origin = server.url.replace('http://', 'https://');
      const session = connect(origin, { rejectUnauthorized: false });
      try {
        await traced.agent.waitTraced(server.pid);
        assert.equal(await h2Status(session, '/hello'), 200);
        assert.equal(await h2Status(session, '/status/503'), 503);
        assert.equal(await h2Status(session, '/status/201'), 201);
        // a panicking handler resets its stream only (the HTTP/2 server's own
        // recover): the connection serves the next request
        await assert.rejects(h2Status(session, '/panic'), 'a panicking handler resets its stream');
        assert.equal(await h2Status(session, '/status/204'), 204);
        // and HTTP/1.1 over TLS on the same server
        assert.equal(await httpsStatus(`${origin}/status/202`), 202);
        const spans = await traced.spansOf(server.pid, 'SERVER', 6, 'one span per request, HTTP/2 and HTTP/1.1');
        const h2spans = spans.filter((s) => s.attributes['network.protocol.version'] === '2');
        assert.equal(h2spans.length, 5, 'HTTP/2 requests are told apart');
        const byPath = new Map(h2spans.map((s) => [s.attributes['url.path'], s]));
        const panicked = byPath.get('/panic');
        assert.ok(panicked, 'an HTTP/2 handler that panics still gets its span');
        assert.equal(panicked.status.code, 'ERROR');
        assert.equal(panicked.attributes['error.type'], 'panic');
        assert.equal(panicked.attributes['http.response.status_code'], undefined, 'nothing was answered');
        const after = byPath.get('/status/204')!;
        assert.equal(after.attributes['http.response.status_code'], 204, 'the request after the panic keeps its own status');
        assert.notEqual(after.status.code, 'ERROR');
        assert.equal(after.attributes['error.type'], undefined, 'nothing of the panic is attributed to the next request');
        assert.equal(byPath.get('/hello')?.attributes['http.response.status_code'], 200, 'a handler that wrote nothing answered 200');
        assert.equal(byPath.get('/status/201')?.attributes['http.response.status_code'], 201);
        assert.equal(byPath.get('/status/503')?.attributes['http.response.status_code'], 503);
        assert.equal(byPath.get('/status/503')?.status.code, 'ERROR');
        const tls1 = spans.find((s) => s.attributes['url.path'] === '/status/202')!;
        assert.equal(tls1.attributes['http.response.status_code'], 202, 'HTTP/1.1 over TLS keeps its status');
      } finally {
        session.close();
        await server.stop();
      }
    });
  }

  test('under concurrent load: exactly one span per request, none lost', async () => {
    const server = await startGoServer(binPath('go1.26', 'pie'));
    try {
      await traced.agent.waitTraced(server.pid);
      const total = 2000;
      const concurrency = 32;
      let next = 0;
      const statuses = new Map<number, number>();
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < total) {
          const i = next++;
          const path = i % 10 === 0 ? '/status/500' : `/hello?i=${i}`;
          const r = await httpRequest(server.url + path);
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        }
      }));
      assert.equal(statuses.get(200), total * 0.9);
      await traced.collector.waitForSpans((all) => spansOf(all, server.pid).length >= total, 30_000);
      await new Promise((r) => setTimeout(r, 1500));
      const spans = spansOf(await traced.collector.spans(), server.pid);
      assert.equal(spans.length, total, 'one span per request');
      assert.equal(spans.filter((s) => s.attributes['http.response.status_code'] === 500).length, total / 10);
      assert.equal(new Set(spans.map((s) => s.spanId)).size, total);
      const metrics = (await httpRequest(await traced.agent.metricsUrl())).body;
      const counters = metrics.split('\n').filter((l) => /^gotrail_(events_lost_total|spans_dropped_total)/.test(l)).join('; ');
      assert.match(metrics, /^gotrail_events_lost_total\{reason="ringbuf_full"\} 0$/m, counters);
      assert.match(metrics, /^gotrail_events_lost_total\{reason="no_entry"\} 0$/m, `every return found its entry: ${counters}`);
      assert.match(metrics, /^gotrail_spans_dropped_total\{reason="queue_full"\} 0$/m, counters);
      assert.doesNotMatch(metrics, /^gotrail_spans_dropped_total\{[^}]*\} [1-9]/m, counters);
    } finally {
      await server.stop();
    }
  });

  test('processes the selection excludes produce no spans, even running a traced binary', async () => {
    mkdirSync(excludedDir, { recursive: true });
    const included = join(excludedDir, 'included-httpserver');
    const excluded = join(excludedDir, 'excluded-httpserver');
    copyFileSync(binPath('go1.26', 'plain'), included);
    copyFileSync(binPath('go1.26', 'plain'), excluded);
    const a = await startGoServer(included);
    const b = await startGoServer(excluded);
    try {
      await traced.agent.waitTraced(a.pid);
      for (let i = 0; i < 10; i++) {
        await httpRequest(`${a.url}/hello`);
        await httpRequest(`${b.url}/hello`);
      }
      await traced.collector.waitForSpans((all) => spansOf(all, a.pid).length >= 10, 20_000);
      await new Promise((r) => setTimeout(r, 1500));
      const all = await traced.collector.spans();
      assert.equal(spansOf(all, a.pid).length, 10);
      assert.equal(spansOf(all, b.pid).length, 0, 'no span from the excluded process');
      assert.doesNotMatch(traced.agent.log(), new RegExp(`tracing process pid=${b.pid}\\b`));
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  test('the agent reports itself in Prometheus metrics', async () => {
    const url = await traced.agent.metricsUrl();
    // hits are summed per service, an exited process's included: the
    // counter never goes back when a process of the service exits
    const server = await startGoServer(binPath('go1.26', 'plain'), [], { OTEL_SERVICE_NAME: 'e2e-metrics' });
    let text: string;
    try {
      await traced.agent.waitTraced(server.pid);
      for (let i = 0; i < 3; i++) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
      // the per-process figures are sampled, not read at each scrape
      const hits = /^gotrail_probe_hits_total\{service="e2e-metrics",site="http_server_entry"\} (\d+)$/m;
      const deadline = Date.now() + 20_000;
      for (;;) {
        text = (await httpRequest(url)).body;
        // hits are read from BPF at the scrape, events once the agent consumed them: both
        if ((hits.exec(text)?.[1] === '3' && /^gotrail_events_total\{type="net\/http\/server"\} [1-9]/m.test(text)) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await server.stop();
    }
    await traced.agent.waitFor(new RegExp(`process exited pid=${server.pid}\\b`));
    const afterExit = (await httpRequest(url)).body;
    assert.match(afterExit, /^gotrail_probe_hits_total\{service="e2e-metrics",site="http_server_entry"\} 3$/m, 'an exited process\'s hits stay in its service\'s counter');
    const estimated = /^gotrail_overhead_estimated_seconds_total\{service="e2e-metrics"\} (\S+)$/m.exec(afterExit)?.[1];
    assert.ok(Number(estimated) > 0, `the exited process's estimated cost stays in the sum: ${estimated}`);
    assert.doesNotMatch(afterExit, /^gotrail_overhead_seconds_per_second\{service="e2e-metrics"\}/m, 'no rate for a service with no process traced');
    assert.doesNotMatch(afterExit, /^gotrail_overhead_cpu_ratio\{service="e2e-metrics"\}/m);
    // the start line says where the spans go
    assert.match(traced.agent.log(), /gotrail running exporter=otlp endpoint=http:\/\/127\.0\.0\.1:\d+\/v1\/traces pid=/);
    assert.match(text, /^gotrail_processes_traced \d+/m);
    assert.match(text, /^gotrail_events_total\{type="net\/http\/server"\} [1-9]\d*/m);
    // event types without a probe are named too (the Go servers of this file were exec'd)
    assert.match(text, /^gotrail_events_total\{type="process_exec"\} [1-9]\d*/m);
    assert.doesNotMatch(text, /^gotrail_events_total\{type="type_\d+"\}/m);
    // the kernel counts the probe programs' runs under the dispatcher that tail-calls them
    assert.match(text, /^gotrail_probe_runs_total\{program="gt_dispatch"\} [1-9]\d*/m);
    assert.match(text, /^gotrail_probe_hits_total\{service="e2e-metrics",site="http_server_entry"\} 3$/m);
    assert.match(text, /^gotrail_events_lost_total\{reason="ringbuf_full"\} 0$/m);
    // map sizes follow the command line, and their fill is reported
    assert.match(text, /^gotrail_bpf_map_capacity\{map="gt_processes"\} 2048$/m);
    assert.match(text, /^gotrail_bpf_map_capacity\{map="gt_http_server_inflight"\} 8192$/m);
    assert.match(text, /^gotrail_bpf_map_fill_ratio\{map="gt_processes"\} [\d.e-]+$/m);
    assert.match(text, /^gotrail_exec_to_attach_seconds_count [1-9]/m);
    const health = await httpRequest(url.replace('/metrics', '/healthz'));
    assert.equal(health.status, 200);
    const status = JSON.parse((await httpRequest(url.replace('/metrics', '/status'))).body) as { processesTraced: unknown; binaries: unknown; kernel: { uprobeMulti: unknown } };
    assert.ok(Array.isArray(status.processesTraced) && Array.isArray(status.binaries));
    assert.equal(typeof status.kernel.uprobeMulti, 'boolean');
  });
});
