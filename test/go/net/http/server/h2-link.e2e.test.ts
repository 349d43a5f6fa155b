/**
 * End to end: HTTP/2 requests between a traced Go client and a traced Go
 * server on this node are linked — each SERVER span is the child of the very
 * CLIENT span that sent it, with many requests in flight at once on one
 * connection (told apart by their stream id); the CLIENT spans made on
 * goroutines the serving goroutine started are that request's children.
 * Real Go programs of each Go toolchain here, real eBPF, a real collector.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { attributeText } from '../../../../support/collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-h2-link');
/** A fresh copy of the test program per test (see freshCopy), so that each test has its own link set. */
const binPath = (tc: string, v: string): string => freshCopy(copies, tc, v);

const CONCURRENT = 50;
// net/http has unencrypted HTTP/2 (h2c) from Go 1.24 on: Go 1.19 is tested over TLS only
const cases = [
  { tc: 'go1.19', v: 'plain', h2c: false },
  { tc: 'go1.26', v: 'stripped', h2c: false },
  { tc: 'go1.26', v: 'plain', h2c: true },
  { tc: 'go1.27', v: 'pie', h2c: false },
  { tc: 'go1.27', v: 'stripped', h2c: true },
] as const;

describe('net/http: HTTP/2 between traced processes on one node is linked per stream', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  for (const { tc, v, h2c } of cases) {
    test(`${tc} ${v}, HTTP/2 ${h2c ? 'h2c' : 'over TLS'}: ${CONCURRENT} concurrent requests on one connection, each server span the child of its own client span`, async () => {
      const bin = binPath(tc, v);
      const server = await startGoServer(bin, [h2c ? '-h2c' : '-tls']);
      let client: GoServer | undefined;
      try {
        client = await startGoServer(bin);
        await traced.agent.waitTraced(server.pid);
        await traced.agent.waitTraced(client.pid);
        const target = h2c ? server.url : server.url.replace('http://', 'https://');
        const res = await httpRequest(`${client.url}/proxy2?to=${encodeURIComponent(target)}&n=${CONCURRENT}${h2c ? '&h2c=1' : ''}`);
        assert.equal(res.status, 200, res.body);
        assert.equal(res.body.trim(), `conns=1 proto=HTTP/2.0 ok=${CONCURRENT}`, 'all requests went over one HTTP/2 connection');

        const n = CONCURRENT + 1; // and the warm-up request
        const served = await traced.spansOf(server.pid, 'SERVER', n, 'one SERVER span per HTTP/2 request');
        const sent = await traced.spansOf(client.pid, 'CLIENT', n, 'one CLIENT span per HTTP/2 request');
        const proxies = (await traced.collector.spans()).filter((s) => s.resource['process.pid'] === client!.pid && s.kind === 'SERVER');
        assert.equal(proxies.length, 1);
        const proxy = proxies[0]!;
        for (const s of served) assert.equal(s.attributes['network.protocol.version'], '2', `${attributeText(s.attributes['url.path'])} came over HTTP/2`);

        // the request each span stands for, from what each side saw of it (not from the link)
        const sentByPath = new Map(sent.map((c) => [new URL(attributeText(c.attributes['url.full'])).pathname, c]));
        assert.equal(sentByPath.size, n, 'each CLIENT span names its own path');
        const wrong: string[] = [];
        for (const s of served) {
          const path = attributeText(s.attributes['url.path']);
          const c = sentByPath.get(path);
          assert.ok(c, `a CLIENT span for ${path}`);
          if (s.parentSpanId !== c.spanId || s.traceId !== c.traceId) {
            const other = sent.find((x) => x.spanId === s.parentSpanId);
            wrong.push(`${path}: parent ${s.parentSpanId || '(none)'}${other ? ` = the client span of ${attributeText(other.attributes['url.full'])}` : ''}`);
          }
        }
        assert.deepEqual(wrong, [], 'every SERVER span has exactly its own CLIENT span as parent');
        // the warm-up request is sent on the handler's goroutine, the concurrent
        // ones on goroutines the handler started (goroutine ancestry): each is
        // the child of the request that made it, so the whole exchange is one trace
        const orphans = sent.filter((c) => c.parentSpanId !== proxy.spanId || c.traceId !== proxy.traceId);
        assert.deepEqual(orphans.map((c) => attributeText(c.attributes['url.full'])), [], 'every CLIENT span is the child of the request that made it');
        assert.equal(await traced.metric(/^gotrail_events_lost_total\{reason="no_entry"\} (\S+)/m), '0', 'every return found its entry');
      } finally {
        await client?.stop();
        await server.stop();
      }
    });
  }
});
