/**
 * A Go program that serves HTTP/2 with golang.org/x/net/http2's server
 * (http2.ConfigureServer over TLS) rather than net/http's bundled one: its
 * streams' handlers run from x/net's own runHandler, which the emulated end
 * sites of net/http's server do not see, so the plan gives this binary
 * ServeHTTP's RETs (`preferredSites.unless`), and x/net's recover() ends a
 * panicking handler's span. Its writers reach ServeHTTP too, and are not
 * net/http's: HTTP/2 statuses are not read (`unreadWhere`). Traced, each
 * request, HTTP/2 or HTTP/1.1, gets exactly one span, a handler that panics
 * included; HTTP/1.1 spans carry their status, HTTP/2 ones none rather than
 * a wrong one.
 * Real Go programs (Debian's Go 1.19 and the machine's Go, plain and
 * stripped), real eBPF, a real collector.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:http2';
import { join } from 'node:path';
import { planBinaryAt } from '../../../../../daemon/agent/binary-plan.ts';
import { probes } from '../../../../../daemon/probes/registry.ts';
import type { ProbeDescriptor } from '../../../../../daemon/probes/types.ts';
import { httpServerProbe } from '../../../../../daemon/probes/go/net/http/server/descriptor.ts';
import { decodeHttpServerConfig, HttpServerFlags } from '../../../../../daemon/generated/layouts.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { startGoServer, h2Status, httpsStatus } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';
import { attributeText } from '../../../../support/collector.ts';
import { bytesAt } from '../../../../support/file-bytes.ts';

const skip = skipUnlessBpf();
const PROGRAM = 'xnet-http2';
const copies = join(repoRoot, 'build', 'e2e-xnet-http2');
const built = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, PROGRAM);
const RET = 0xc3;
const CALL = 0xe8;

test('the plan of a binary that links x/net\'s HTTP/2 server ends requests at ServeHTTP\'s RETs', () => {
  for (const [tc, v] of [['go1.19', 'plain'], ['go1.26', 'stripped']] as const) {
    const { plan, error } = planBinaryAt(built(tc, v), probes);
    assert.ok(plan, `plan ${tc} ${v}: ${error?.message}`);
    const server = plan.probes.find((p) => p.probe.id === 'net/http/server');
    assert.ok(server?.attachable, `${tc} ${v}: the server probe attaches`);
    const ends = server.sites.filter((s) => s.symbol === 'net/http.serverHandler.ServeHTTP' && s.role === 'return');
    assert.equal(ends.length, 1, `${tc} ${v}: ServeHTTP's returns are probed`);
    for (const off of ends[0]!.offsets) assert.equal(bytesAt(built(tc, v), off, 1)[0], RET, `${tc} ${v}: a RET at 0x${off.toString(16)}`);
    // x/net's own recover ends a panicking handler's span: at its CALL of recover(), in whichever closure makes it
    const recovers = server.sites.filter((s) => s.role === 'at-call');
    assert.deepEqual(recovers.map((s) => [s.symbol, s.program]), [['golang.org/x/net/http2.(*serverConn).runHandler.func1', 'gt_http_server_panic']],
      `${tc} ${v}: the one call site is x/net's recover, no site of the preferred set mixes in`);
    assert.equal(bytesAt(built(tc, v), recovers[0]!.offsets[0]!, 1)[0], CALL, `${tc} ${v}: a CALL at the recover site`);
    // x/net's writers reach ServeHTTP too: net/http's HTTP/2 writer fields are left unread, and inspect says why
    for (const f of ['net/http.http2responseWriter.rws', 'net/http.http2responseWriterState.status']) assert.ok(server.missingOptional.includes(f), `${tc} ${v}: ${f} unread`);
    assert.ok(server.degraded.some((d) => d.startsWith('HTTP/2 responses carry no status code') && d.includes('http2.ConfigureServer')), `${tc} ${v}: ${server.degraded.join('; ')}`);
    const cfg = decodeHttpServerConfig(httpServerProbe.encodeConfig(server.offsets, server.missingOptional));
    assert.equal(cfg.flags & (HttpServerFlags.GT_HTTP_SERVER_H2_STATUS | HttpServerFlags.GT_HTTP_SERVER_H2_LINK), 0, `${tc} ${v}: no HTTP/2 status read, no HTTP/2 link`);
    assert.deepEqual([cfg.h2_rws, cfg.h2_status, cfg.h2_stream_id], [0, 0, 0], `${tc} ${v}: none of net/http's HTTP/2 writer offsets is handed to the probe`);
    assert.ok(cfg.flags & HttpServerFlags.GT_HTTP_SERVER_ENABLED);
  }
  // of several names, the one that makes the call: in Go 1.19 runHandler's func2 is the deferred
  // sendServeMsg, func1 the closure that recovers
  const xnetPanic = httpServerProbe.preferredSites!.otherwise.find((f) => f.symbol.startsWith('golang.org/x/net/'))!;
  const swapped: ProbeDescriptor = {
    ...httpServerProbe,
    preferredSites: {
      ...httpServerProbe.preferredSites!,
      otherwise: httpServerProbe.preferredSites!.otherwise.map((f) => (f === xnetPanic ? { ...f, symbol: xnetPanic.alternativeSymbols![0]!, alternativeSymbols: [xnetPanic.symbol] } : f)),
    },
  };
  const { plan } = planBinaryAt(built('go1.19', 'plain'), [swapped]);
  assert.deepEqual(plan?.probes[0]?.sites.filter((s) => s.role === 'at-call').map((s) => s.symbol), ['golang.org/x/net/http2.(*serverConn).runHandler.func1']);
  // and where none of them makes it, the probe runs without that site, saying so
  const none: ProbeDescriptor = {
    ...httpServerProbe,
    preferredSites: {
      ...httpServerProbe.preferredSites!,
      otherwise: httpServerProbe.preferredSites!.otherwise.map((f) => (f === xnetPanic ? { ...f, alternativeSymbols: [], atCalls: [{ callee: 'runtime.noSuchFunction', program: f.atCalls![0]!.program }] } : f)),
    },
  };
  const degradedPlan = planBinaryAt(built('go1.26', 'plain'), [none]).plan?.probes[0];
  assert.ok(degradedPlan?.attachable);
  assert.ok(degradedPlan.degraded.some((d) => d.startsWith(xnetPanic.optional!)), degradedPlan.degraded.join('; '));
  assert.ok(!degradedPlan.sites.some((s) => s.role === 'at-call'));
});

describe('net/http server: HTTP/2 served by golang.org/x/net/http2', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  for (const [tc, v] of [['go1.19', 'plain'], ['go1.26', 'stripped']] as const) {
    test(`${tc} ${v}: http2.ConfigureServer over TLS — one span per request, HTTP/2 and HTTP/1.1; HTTP/1.1 with its status, HTTP/2 with none rather than a wrong one`, async () => {
      const server = await startGoServer(freshCopy(copies, tc, v, PROGRAM), ['-tls']);
      const origin = server.url.replace('http://', 'https://');
      const session = connect(origin, { rejectUnauthorized: false });
      try {
        await traced.agent.waitTraced(server.pid);
        const n = 20;
        for (let i = 0; i < n; i++) assert.equal(await h2Status(session, '/hello'), 200);
        assert.equal(await h2Status(session, '/status/503'), 503);
        await assert.rejects(h2Status(session, '/panic'), 'a panicking handler resets its stream');
        assert.equal(await h2Status(session, '/status/204'), 204);
        assert.equal(await httpsStatus(`${origin}/status/202`), 202);
        const spans = await traced.spansOf(server.pid, 'SERVER', n + 4, 'one span per request, HTTP/2 and HTTP/1.1');
        const h2 = spans.filter((s) => s.attributes['network.protocol.version'] === '2');
        assert.equal(h2.length, n + 3, 'the HTTP/2 requests are told apart');
        const path = (p: string) => spans.filter((s) => s.attributes['url.path'] === p);
        assert.equal(path('/hello').length, n);
        // x/net's writers are not net/http's: no status is read from them, rather than a wrong one
        for (const s of h2) assert.equal(s.attributes['http.response.status_code'], undefined, `${attributeText(s.attributes['url.path'])}: no status read`);
        assert.equal(path('/status/503').length, 1);
        const panicked = path('/panic');
        assert.equal(panicked.length, 1, 'a handler that panics still gets its span');
        assert.equal(panicked[0]!.status.code, 'ERROR');
        assert.equal(panicked[0]!.attributes['error.type'], 'panic');
        const after = path('/status/204')[0]!;
        assert.equal(after.attributes['error.type'], undefined, 'nothing of the panic is attributed to the next request');
        assert.notEqual(after.status.code, 'ERROR');
        const tls1 = path('/status/202')[0]!;
        assert.equal(tls1.attributes['network.protocol.version'], '1.1');
        assert.equal(tls1.attributes['http.response.status_code'], 202);
      } finally {
        session.close();
        await server.stop();
      }
    });
  }
});
