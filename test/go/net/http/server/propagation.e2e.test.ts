/**
 * End to end: which parent a SERVER span gets from the request that real
 * clients send — pipelined and keep-alive connections, large request heads —
 * on traced Go servers of each Go toolchain here, with a real collector.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { attributeText, type ReceivedSpan } from '../../../../support/collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { startGoServer, type GoServer } from '../../../../support/go-server.ts';
import { rawExchange, rawRequest } from '../../../../support/raw-http.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-propagation');
/** A fresh copy of the test server binary per test (see freshCopy), so that each test has its own link set. */
const binPath = (tc: string, v: string): string => freshCopy(copies, tc, v);
// each toolchain once: Go 1.19 has runtime.hmap header maps, 1.26 and 1.27 swiss tables;
// stripped and PIE binaries take their offsets from the database
const targets = [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'pie']] as const;

const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');
const tp = (trace: string, parent: string, flags = '01'): string => `00-${trace}-${parent}-${flags}`;

describe('net/http server: the parent comes from the request being served', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  /** Exactly `n` SERVER spans of the server's process, and no return of ServeHTTP without its entry. */
  async function serverSpans(server: GoServer, n: number): Promise<ReceivedSpan[]> {
    const spans = await traced.serverSpans(server, n);
    const lost = await traced.metric(/^gotrail_events_lost_total\{reason="no_entry"\} (\S+)/m);
    assert.equal(lost, '0', 'every return of ServeHTTP found its entry');
    return spans;
  }

  for (const [tc, v] of targets) {
    test(`${tc} ${v}: pipelined and keep-alive requests each get their own parent`, async () => {
      const server = await startGoServer(binPath(tc, v));
      try {
        await traced.agent.waitTraced(server.pid);
        const T = (i: number): string => `5ec0${tc.replace(/\D/g, '').padStart(4, '0')}${hex(i, 24)}`;
        const X = 'aaaaaaaaaaaaaaa1', Y = 'bbbbbbbbbbbbbbb2', Z = 'ccccccccccccccc3';
        const close: [string, string] = ['Connection', 'close'];
        // A with X, then B without, in one TCP write
        assert.deepEqual(await rawExchange(server.url, [
          rawRequest({ path: '/status/201', headers: [['traceparent', tp(T(1), X)]] }) +
          rawRequest({ path: '/status/202', headers: [close] }),
        ], 2), [201, 202]);
        // A without, then B with Y
        assert.deepEqual(await rawExchange(server.url, [
          rawRequest({ path: '/status/203' }) +
          rawRequest({ path: '/status/204', headers: [['traceparent', tp(T(2), Y)], close] }),
        ], 2), [203, 204]);
        // three in a row: with, without, with another
        assert.deepEqual(await rawExchange(server.url, [
          rawRequest({ path: '/status/205', headers: [['traceparent', tp(T(3), X)]] }) +
          rawRequest({ path: '/status/206' }) +
          rawRequest({ path: '/status/207', headers: [['traceparent', tp(T(4), Z)], close] }),
        ], 3), [205, 206, 207]);
        // a POST whose body holds header-like lines, pipelined with a request without traceparent
        assert.deepEqual(await rawExchange(server.url, [
          rawRequest({ method: 'POST', path: '/echo', body: `x\r\ntraceparent: ${tp(T(5), Z)}\r\n\r\n` }) +
          rawRequest({ path: '/status/208', headers: [close] }),
        ], 2), [200, 208]);
        // keep-alive, not pipelined: the second request is written after the first was answered
        assert.deepEqual(await rawExchange(server.url, [
          rawRequest({ path: '/status/209', headers: [['traceparent', tp(T(6), Y)]] }),
          rawRequest({ path: '/status/210', headers: [close] }),
        ], 2), [209, 210]);

        const spans = await serverSpans(server, 11);
        const by = (path: string): ReceivedSpan => {
          const found = spans.filter((s) => s.attributes['url.path'] === path);
          assert.equal(found.length, 1, `one span for ${path}`);
          return found[0]!;
        };
        const parent = (path: string, trace: string, span: string): void => {
          assert.equal(by(path).traceId, trace, `${path} joined its own traceparent's trace`);
          assert.equal(by(path).parentSpanId, span, `${path}'s parent is its own traceparent's span`);
        };
        const root = (path: string): void => assert.equal(by(path).parentSpanId, '', `${path} carried no traceparent: a new trace, no parent`);
        parent('/status/201', T(1), X);
        root('/status/202');
        root('/status/203');
        parent('/status/204', T(2), Y);
        parent('/status/205', T(3), X);
        root('/status/206');
        parent('/status/207', T(4), Z);
        root('/echo');
        root('/status/208');
        parent('/status/209', T(6), Y);
        root('/status/210');
        for (const s of spans.filter((x) => x.parentSpanId === '')) {
          assert.ok(!s.traceId.startsWith('5ec0'), `${attributeText(s.attributes['url.path'])} is in a trace of its own`);
        }
      } finally {
        await server.stop();
      }
    });

    test(`${tc} ${v}: a traceparent anywhere in a head of 1 KB to 1000 KB`, async () => {
      const server = await startGoServer(binPath(tc, v));
      try {
        await traced.agent.waitTraced(server.pid);
        const trace = `1a46e${tc.replace(/\D/g, '').padStart(4, '0')}${'0'.repeat(23)}`;
        const cases: Array<{ kb: number; pos: 'first' | 'middle' | 'last'; parent: string; padLine: number }> = [];
        for (const kb of [1, 3, 5, 16, 64]) {
          // Go 1.27 refuses more than 500 header values by default (Server.MaxHeaderValueCount)
          for (const pos of ['first', 'middle', 'last'] as const) cases.push({ kb, pos, parent: `${hex(kb, 4)}${hex(cases.length, 4)}00000001`, padLine: Math.max(100, Math.ceil(kb * 1024 / 400)) });
        }
        // just under Go's default limit (MaxHeaderBytes, 1 MB), in 8 KB header lines
        cases.push({ kb: 1000, pos: 'last', parent: `${hex(1000, 4)}${hex(cases.length, 4)}00000001`, padLine: 8192 });
        for (const c of cases) {
          const head = paddedHead('/hello', ['traceparent', tp(trace, c.parent)], c.pos, c.kb * 1024, c.padLine);
          assert.equal(head.length, c.kb * 1024, 'the head has the size the case names');
          assert.deepEqual(await rawExchange(server.url, [head], 1), [200], `${c.kb} KB, traceparent ${c.pos}`);
        }
        const spans = await serverSpans(server, cases.length);
        for (const c of cases) {
          const s = spans.filter((x) => x.parentSpanId === c.parent);
          assert.equal(s.length, 1, `${c.kb} KB head, traceparent ${c.pos}: the span has that request's parent`);
          assert.equal(s[0]!.traceId, trace);
        }
      } finally {
        await server.stop();
      }
    });
  }

  for (const [tc, v] of targets) {
    test(`${tc} ${v}: W3C Trace Context to the letter — valid and invalid traceparents, sampling, tracestate`, async () => {
      const server = await startGoServer(binPath(tc, v));
      try {
        await traced.agent.waitTraced(server.pid);
        const T = `3c3c${tc.replace(/\D/g, '').padStart(4, '0')}${'1'.repeat(24)}`;
        const P = 'd00dfeedd00dfeed';
        const valid = `00-${T}-${P}-01`;
        // [traceparent header lines, parent expected (true) or a new trace (false), what the case is]
        const table: Array<[string[], boolean, string]> = [
          [[valid], true, 'plain'],
          [[` \t${valid}\t `], true, 'optional whitespace around the value'],
          [[`00-${T}-${P}-09`], true, 'other flag bits besides sampled'],
          [[`cc-${T}-${P}-01`], true, 'a higher version, 55 characters'],
          [[`cc-${T}-${P}-01-what-comes-next`], true, 'a higher version carries more after a dash'],
          [[`${valid}-`], false, 'version 00 is exactly 55 characters'],
          [[`${valid}0`], false, 'version 00 with a character more'],
          [[`cc-${T}-${P}-01x`], false, 'a higher version: more only after a dash'],
          [[`ff-${T}-${P}-01`], false, 'version ff'],
          [[`00-${T.toUpperCase()}-${P}-01`], false, 'upper-case trace id'],
          [[`00-${T}-${P.toUpperCase()}-01`], false, 'upper-case parent id'],
          [[`0A-${T}-${P}-01`], false, 'upper-case version'],
          [[`00-${'0'.repeat(32)}-${P}-01`], false, 'all-zero trace id'],
          [[`00-${T}-${'0'.repeat(16)}-01`], false, 'all-zero parent id'],
          [[`00-${T}-${P}-zz`], false, 'flags not hex'],
          [[`00_${T}-${P}-01`], false, 'wrong separator'],
          [[`00-${T}-${P}-1`], false, 'too short'],
          [[valid, valid], false, 'sent twice (the spec: do not use)'],
          [[valid, `00-${T}-${'e'.repeat(16)}-01`], false, 'two different ones'],
          [[''], false, 'empty'],
        ];
        const path = (i: number): string => `/status/${220 + i}`;
        for (const [i, [values, , what]] of table.entries()) {
          const headers: Array<[string, string]> = values.map((x) => ['traceparent', x]);
          assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: path(i), headers: [...headers, ['Connection', 'close']] })], 1), [220 + i], what);
        }
        // tracestate is carried along with a valid parent, dropped with an invalid one
        const ts = 'vendor=abc,other=x y';
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/250', headers: [['traceparent', valid], ['tracestate', ts], ['Connection', 'close']] })], 1), [250]);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/251', headers: [['traceparent', `ff-${T}-${P}-01`], ['tracestate', ts], ['Connection', 'close']] })], 1), [251]);
        // an unsampled parent: no span for the request, nor for the outgoing call it makes, nor
        // for that call's own request arriving at this server (linked on this node)
        const notSampled = async (): Promise<number> => Number(await traced.metric(/^gotrail_spans_not_sampled_total\{decided_by="parent"\} (\S+)/m));
        const before = await notSampled();
        const U = `0a5a${'2'.repeat(28)}`;
        const to = encodeURIComponent(`${server.url}/status/201`);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: `/proxy?to=${to}`, headers: [['traceparent', `00-${U}-${P}-00`], ['Connection', 'close']] })], 1), [201]);
        const spans = await serverSpans(server, table.length + 2);
        for (const [i, [, parented, what]] of table.entries()) {
          const s = spans.find((x) => x.attributes['url.path'] === path(i));
          assert.ok(s, `a span for ${what}`);
          if (parented) {
            assert.equal(s.traceId, T, `${what}: valid, joins the trace`);
            assert.equal(s.parentSpanId, P, `${what}: valid, the parent is the remote span`);
          } else {
            assert.equal(s.parentSpanId, '', `${what}: invalid, no parent`);
            assert.notEqual(s.traceId, T, `${what}: invalid, a new trace`);
          }
        }
        const withState = spans.find((x) => x.attributes['url.path'] === '/status/250')!;
        assert.equal(withState.parentSpanId, P);
        assert.equal(withState.traceState, ts, 'tracestate is carried on the span');
        const invalidState = spans.find((x) => x.attributes['url.path'] === '/status/251')!;
        assert.equal(invalidState.traceState, '', 'no tracestate without a valid traceparent');
        const all = await traced.collector.spans();
        assert.equal(all.filter((x) => x.traceId === U).length, 0, 'nothing of the unsampled trace is exported');
        assert.equal(spans.filter((x) => ['/proxy', '/status/201'].includes(attributeText(x.attributes['url.path']))).length, 0);
        assert.equal(await notSampled() - before, 3, 'counted: the request, its outgoing call, and the call arriving here');
      } finally {
        await server.stop();
      }
    });
  }

  // Go 1.27 refuses requests with more than 500 header values; earlier versions do not
  for (const [tc, v] of [['go1.19', 'plain'], ['go1.26', 'stripped']] as const) {
    test(`${tc} ${v}: a head with more header names than the probe searches says so on its span`, async () => {
      const server = await startGoServer(binPath(tc, v));
      try {
        await traced.agent.waitTraced(server.pid);
        const pads: Array<[string, string]> = Array.from({ length: 3000 }, (_, i) => [`X-Pad-${i}`, 'p']);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/hello', headers: [...pads, ['Connection', 'close']] })], 1), [200]);
        assert.deepEqual(await rawExchange(server.url, [rawRequest({ path: '/status/201', headers: [['Connection', 'close']] })], 1), [201]);
        const spans = await serverSpans(server, 2);
        const big = spans.find((s) => s.attributes['url.path'] === '/hello')!;
        assert.equal(big.attributes['gotrail.traceparent.unsearched'], true, '3000 header names: the walk stopped before the end');
        assert.equal(big.parentSpanId, '');
        const small = spans.find((s) => s.attributes['url.path'] === '/status/201')!;
        assert.equal(small.attributes['gotrail.traceparent.unsearched'], undefined, 'a small head is searched to the end');
      } finally {
        await server.stop();
      }
    });
  }
});

/**
 * A request head of exactly `size` bytes: `header` placed first, in the
 * middle or last among padding headers of about `padLine` bytes each.
 */
function paddedHead(path: string, header: [string, string], pos: 'first' | 'middle' | 'last', size: number, padLine: number): string {
  const fixed = rawRequest({ path, headers: [['Host', '127.0.0.1'], header, ['Connection', 'close']] }).length;
  const pads: Array<[string, string]> = [];
  let left = size - fixed;
  for (let i = 0; left > 0; i++) {
    const name = `X-Pad-${i}`;
    const overhead = name.length + 4; // ": " and CRLF
    let len = Math.min(padLine, left) - overhead;
    // never leave a remainder too short for a header line of its own
    if (left - (len + overhead) > 0 && left - (len + overhead) < 16) len -= 16;
    if (len < 1) len = 1;
    pads.push([name, 'p'.repeat(len)]);
    left -= len + overhead;
  }
  const at = pos === 'first' ? 0 : pos === 'middle' ? Math.floor(pads.length / 2) : pads.length;
  const headers: Array<[string, string]> = [['Host', '127.0.0.1'], ...pads.slice(0, at), header, ...pads.slice(at), ['Connection', 'close']];
  return rawRequest({ path, headers });
}
