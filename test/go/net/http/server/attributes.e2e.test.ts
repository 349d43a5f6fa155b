/**
 * End to end: the HTTP semantic-convention attributes of SERVER spans as real
 * clients produce them — scheme over TLS, protocol versions, 1xx responses,
 * hijacked connections, span names — on traced Go servers of each toolchain.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:http2';
import https from 'node:https';
import { attributeText, startCollector, type Collector, type ReceivedSpan } from '../../../../support/collector.ts';
import { startAgent, repoRoot, type AgentProcess } from '../../../../support/agent-process.ts';
import { startGoServer } from '../../../../support/go-server.ts';
import { rawExchange, rawRequest } from '../../../../support/raw-http.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-attributes');
let copyCount = 0;
/**
 * A fresh copy of the test server binary for each test: a binary whose last
 * process exited is detached asynchronously, and a process of the same file
 * started meanwhile gets a second link set; until the first is gone both
 * fire (a return then finds no entry). A file per test keeps each test to
 * one link set, so that what it asserts is the probe's work alone.
 */
const binPath = (tc: string, v: string): string => {
  const dir = join(copies, `${tc}-${v}-${copyCount++}`);
  mkdirSync(dir, { recursive: true });
  const dst = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', tc, v, 'httpserver'), dst);
  return dst;
};
const targets = [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'pie']] as const;

describe('net/http server span attributes, end to end', { skip }, () => {
  let collector: Collector;
  let agent: AgentProcess;

  before(async () => {
    collector = await startCollector();
    agent = await startAgent([
      '--exporter', 'otlp',
      '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`,
      '--include-exe', join(copies, '**'),
    ]);
  });

  after(async () => {
    const code = await agent?.stop();
    await collector?.stop();
    assert.equal(code, 0, 'gotrail run exits 0 on SIGTERM');
  });

  async function spansOf(pid: number, n: number): Promise<ReceivedSpan[]> {
    const mine = (all: ReceivedSpan[]): ReceivedSpan[] => all.filter((s) => s.resource['process.pid'] === pid && s.kind === 'SERVER');
    await collector.waitForSpans((all) => mine(all).length >= n, 20_000);
    await new Promise((r) => setTimeout(r, 1000));
    const spans = mine(await collector.spans());
    assert.equal(spans.length, n, 'one SERVER span per request');
    return spans;
  }

  for (const [tc, v] of targets) {
    test(`${tc} ${v}: plain HTTP — protocol versions, 1xx, a hijacked connection, span names`, async () => {
      const server = await startGoServer(binPath(tc, v));
      try {
        await agent.waitTraced(server.pid);
        const close: [string, string] = ['Connection', 'close'];
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/202', proto: 'HTTP/1.0' })], 1), [202]);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/203', headers: [close] })], 1), [203]);
        // 103 Early Hints, then the final 201
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/early-hints', headers: [close] })], 2), [103, 201]);
        // the handler answers 101 itself on the hijacked connection
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/upgrade', headers: [['Upgrade', 'example'], ['Connection', 'Upgrade']] })], 1), [101]);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ method: 'PROPFIND', path: '/hello', headers: [close] })], 1), [200]);

        const spans = await spansOf(server.pid, 5);
        const by = (p: string): ReceivedSpan => spans.find((s) => s.attributes['url.path'] === p && s.name !== 'HTTP')!;
        for (const s of spans) assert.equal(s.attributes['url.scheme'], 'http', `${attributeText(s.attributes['url.path'])}: plain HTTP`);
        assert.equal(by('/status/202').attributes['network.protocol.version'], '1.0');
        assert.equal(by('/status/203').attributes['network.protocol.version'], '1.1');
        assert.equal(by('/status/203').name, 'GET', 'no route known: the span is named by its method');
        assert.equal(by('/early-hints').attributes['http.response.status_code'], 201, 'a 1xx never replaces the final status');
        const up = by('/upgrade');
        assert.equal(up.attributes['http.response.status_code'], undefined, 'answered around the ResponseWriter: no made-up status');
        assert.notEqual(up.status.code, 'ERROR');
        const other = spans.find((s) => s.name === 'HTTP')!;
        assert.ok(other, 'a method outside the known set names the span HTTP');
        assert.equal(other.attributes['http.request.method'], '_OTHER');
        assert.equal(other.attributes['http.request.method_original'], 'PROPFIND');
      } finally {
        await server.stop();
      }
    });

    test(`${tc} ${v}: HTTPS — url.scheme https over HTTP/1.1 and HTTP/2`, async () => {
      const server = await startGoServer(binPath(tc, v), ['-tls']);
      const origin = server.url.replace('http://', 'https://');
      const session = connect(origin, { rejectUnauthorized: false });
      try {
        await agent.waitTraced(server.pid);
        const h2 = await new Promise<number>((resolve, reject) => {
          const req = session.request({ ':path': '/status/204' });
          req.on('response', (h) => {
            req.resume();
            req.on('end', () => resolve(Number(h[':status'])));
          });
          req.on('error', reject);
          req.end();
        });
        assert.equal(h2, 204);
        const h1 = await new Promise<number>((resolve, reject) => {
          https.get(`${origin}/status/205`, { rejectUnauthorized: false, agent: false }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          }).on('error', reject);
        });
        assert.equal(h1, 205);
        const spans = await spansOf(server.pid, 2);
        const s2 = spans.find((s) => s.attributes['url.path'] === '/status/204')!;
        const s1 = spans.find((s) => s.attributes['url.path'] === '/status/205')!;
        assert.equal(s2.attributes['url.scheme'], 'https');
        assert.equal(s2.attributes['network.protocol.version'], '2');
        assert.equal(s1.attributes['url.scheme'], 'https');
        assert.equal(s1.attributes['network.protocol.version'], '1.1');
      } finally {
        session.close();
        await server.stop();
      }
    });
  }
});
