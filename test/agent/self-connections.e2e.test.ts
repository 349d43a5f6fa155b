/**
 * End to end: the real OpenTelemetry Collector is itself a traced Go
 * process, and gotrail exports to it over OTLP/HTTP. Each export is a
 * request to a traced net/http server; were it traced, its span would be
 * exported in turn, and so on forever. gotrail recognises its own
 * connections: the application's requests give exactly their spans, the
 * exports none, and a request from any other client to the collector is
 * traced as usual. Over IPv4 and IPv6 loopback, and over the node's address
 * to a dual-stack listener (IPv4-mapped addresses).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { attributeText, startCollector, type ReceivedSpan } from '../support/collector.ts';
import { startAgent, repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

const serverBin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');
/** The batcher exports every second: this lets several export cycles pass. */
const EXPORT_CYCLES_MS = 5000;
const REQUESTS = 7;

const nodeIPv4 = Object.values(networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4')?.address;

/** Posts an empty OTLP/HTTP export from this process (not gotrail); resolves with the local port it used. */
function exportFromAnotherClient(endpoint: string): Promise<{ status: number; localPort: number }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ resourceSpans: [] });
    const req = request(`${endpoint}/v1/traces`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, localPort: req.socket?.localPort ?? 0 }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function metric(text: string, name: string, reason: string): number {
  const m = new RegExp(`^${name}\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  assert.ok(m, `${name}{reason="${reason}"} in the metrics:\n${text.split('\n').filter((l) => l.startsWith('gotrail_')).join('\n')}`);
  return Number(m[1]);
}

const cases: Array<{ name: string; listen: string; reach?: string; skip?: string }> = [
  { name: 'IPv4 loopback', listen: '127.0.0.1' },
  { name: 'IPv6 loopback', listen: '::1' },
  {
    name: "the node's IPv4 address, to a dual-stack listener",
    listen: '0.0.0.0',
    reach: nodeIPv4,
    ...(nodeIPv4 ? {} : { skip: 'this host has no non-loopback IPv4 address' }),
  },
];

describe("gotrail does not trace its own exports to a traced collector", { skip: skipUnlessBpf() }, () => {
  for (const c of cases) {
    test(c.name, { skip: c.skip }, async () => {
      const collector = await startCollector({ httpHost: c.listen });
      const endpoint = c.reach ? `http://${c.reach}:${new URL(collector.otlpHttpEndpoint).port}` : collector.otlpHttpEndpoint;
      // the collector is a telemetry back-end, excluded by default: named by an include rule, it is traced
      const agent = await startAgent(['--otlp-endpoint', `${endpoint}/v1/traces`, '--include-exe', collector.binaryPath, '--include-exe', serverBin]);
      const server = await startGoServer(serverBin);
      try {
        await agent.waitTraced(collector.pid);
        await agent.waitTraced(server.pid);
        for (let i = 0; i < REQUESTS; i++) assert.equal((await httpRequest(`${server.url}/hello?i=${i}`)).status, 200);
        await collector.waitForSpans((all) => all.some((s) => s.resource['process.pid'] === server.pid), 15_000);
        await sleep(EXPORT_CYCLES_MS);

        const of = (all: ReceivedSpan[], pid: number): ReceivedSpan[] => all.filter((s) => s.resource['process.pid'] === pid);
        let all = await collector.spans();
        assert.equal(of(all, server.pid).length, REQUESTS, 'exactly one span per application request');
        assert.deepEqual(of(all, collector.pid).map((s) => `${s.name} ${attributeText(s.attributes['url.path'])}`), [], "no span of gotrail's exports");
        const metricsUrl = await agent.metricsUrl();
        let metrics = (await httpRequest(metricsUrl)).body;
        const skipped = metric(metrics, 'gotrail_requests_skipped_total', 'self');
        assert.ok(skipped >= 1, `the exports reached the traced collector and were skipped (self: ${skipped})`);
        assert.equal(metric(metrics, 'gotrail_events_lost_total', 'no_entry'), 0, 'a skipped request is not counted as lost at its return');
        assert.doesNotMatch(metrics, /^gotrail_events_lost_total\{reason="skipped_self"\}/m, 'skipping is not a loss');

        // the same endpoint, another client: traced
        const other = await exportFromAnotherClient(endpoint);
        assert.equal(other.status, 200);
        all = await collector.waitForSpans((got) => of(got, collector.pid).length >= 1, 15_000);
        await sleep(EXPORT_CYCLES_MS);
        all = await collector.spans();
        const collectorSpans = of(all, collector.pid);
        assert.equal(collectorSpans.length, 1, `exactly the other client's request is traced: ${collectorSpans.map((s) => `${s.name} ${attributeText(s.attributes['url.path'])} from port ${attributeText(s.attributes['client.port'])}`).join(', ')}`);
        const s = collectorSpans[0]!;
        assert.equal(s.kind, 'SERVER');
        assert.equal(s.attributes['http.request.method'], 'POST');
        assert.equal(s.attributes['url.path'], '/v1/traces');
        assert.equal(s.attributes['client.port'], other.localPort, "the span is the other client's request");
        assert.equal(of(all, server.pid).length, REQUESTS);
        metrics = (await httpRequest(metricsUrl)).body;
        assert.ok(metric(metrics, 'gotrail_requests_skipped_total', 'self') > skipped, 'the export of that span was skipped too');
        assert.equal(metric(metrics, 'gotrail_events_lost_total', 'no_entry'), 0);
      } finally {
        await server.stop();
        const code = await agent.stop();
        await collector.stop();
        assert.equal(code, 0, 'gotrail run exits 0 on SIGTERM');
      }
    });
  }
});
