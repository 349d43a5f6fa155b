/**
 * End to end: the HTTP semantic-convention attributes of SERVER spans as real
 * clients produce them — scheme over TLS, protocol versions, 1xx responses,
 * hijacked connections, span names — on traced Go servers of each toolchain.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { connect } from 'node:http2';
import { attributeText, type ReceivedSpan } from '../../../../support/collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { h2Status, httpsStatus, startGoServer } from '../../../../support/go-server.ts';
import { rawExchange, rawRequest } from '../../../../support/raw-http.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-attributes');
/** A fresh copy of the test server binary per test (see freshCopy), so that each test has its own link set. */
const binPath = (tc: string, v: string): string => freshCopy(copies, tc, v);
const targets = [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'pie']] as const;

describe('net/http server span attributes, end to end', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  for (const [tc, v] of targets) {
    test(`${tc} ${v}: plain HTTP — protocol versions, 1xx, a hijacked connection, span names`, async () => {
      const server = await startGoServer(binPath(tc, v));
      try {
        await traced.agent.waitTraced(server.pid);
        const close: [string, string] = ['Connection', 'close'];
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/202', proto: 'HTTP/1.0' })], 1), [202]);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/203', headers: [close] })], 1), [203]);
        // 103 Early Hints, then the final 201
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/early-hints', headers: [close] })], 2), [103, 201]);
        // the handler answers 101 itself on the hijacked connection
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/upgrade', headers: [['Upgrade', 'example'], ['Connection', 'Upgrade']] })], 1), [101]);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ method: 'PROPFIND', path: '/hello', headers: [close] })], 1), [200]);

        const spans = await traced.serverSpans(server, 5);
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
        await traced.agent.waitTraced(server.pid);
        assert.equal(await h2Status(session, '/status/204'), 204);
        assert.equal(await httpsStatus(`${origin}/status/205`), 205);
        const spans = await traced.serverSpans(server, 2);
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
