/**
 * End to end: node-local linking of gRPC calls. One grpc-echo process
 * (grpc v1.50.1, v1.64.1 and v1.85.0, every Go toolchain here, stripped and
 * not) makes 100 concurrent calls on one connection to a second process of
 * the same binary, each call to a method of its own (`/demo.Items/Get<i>`,
 * which both the CLIENT and the SERVER span carry): every SERVER span must be
 * the child of its own call's CLIENT span, never of another call's, with no
 * header written into either program. Run while every core is busy, so that
 * the writer goroutine, the caller and the server interleave as they would on
 * a loaded node. And a client or server whose offsets for this are unknown
 * loses only this, as `gotrail inspect` says.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { ReceivedSpan } from '../../../support/collector.ts';
import { tracedCollector } from '../../../support/traced-collector.ts';
import { httpRequest, startGoServer } from '../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../support/privileges.ts';
import { startBusyLoad, type BusyLoad } from '../../../support/busy.ts';
import { gotrailBin } from '../../../support/agent-process.ts';
import { echoBinary, GRPC_VERSIONS, toolchains, BUILD_ROOT } from './echo-build.ts';

const skip = skipUnlessBpf();
const CONCURRENT = 120;

describe('google.golang.org/grpc: a call to a traced server on this node links its SERVER span to its CLIENT span', { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`]);
  let busy: BusyLoad | undefined;
  before(() => {
    busy = startBusyLoad();
  });
  after(async () => {
    await busy?.stop();
  });

  for (const version of GRPC_VERSIONS) {
    for (const tc of toolchains()) {
      for (const stripped of [false, true]) {
        test(`grpc v${version}, ${tc.version}${stripped ? ', stripped' : ''}: ${CONCURRENT} concurrent calls on one connection, each server span the child of its own call`, async (t) => {
          const b = echoBinary(version, tc, stripped);
          if ('skip' in b) return t.skip(b.skip);
          const client = await startGoServer(b.binary);
          const server = await startGoServer(b.binary);
          try {
            await traced.agent.waitTraced(client.pid);
            await traced.agent.waitTraced(server.pid);
            const grpcAddr = (await httpRequest(`${server.url}/addr`)).body.trim();
            const res = await httpRequest(`${client.url}/items?n=${CONCURRENT}&to=${grpcAddr}`);
            assert.equal(res.status, 200, res.body);
            assert.equal(res.body.trim(), `OK=${CONCURRENT + 1}`);

            const isRpc = (s: ReceivedSpan): boolean => s.attributes['rpc.system'] === 'grpc';
            const calls = (await traced.spansOf(client.pid, 'CLIENT', CONCURRENT + 1, 'one CLIENT span per call')).filter(isRpc);
            // and the HTTP request that asked for its address
            const served = (await traced.spansOf(server.pid, 'SERVER', CONCURRENT + 2, 'one SERVER span per call')).filter(isRpc);
            assert.equal(calls.length, CONCURRENT + 1);
            assert.equal(served.length, CONCURRENT + 1);
            assert.equal(new Set(served.map((s) => s.attributes['client.port'])).size, 1, 'every call went over one connection');

            const byName = new Map(calls.map((c) => [c.name, c]));
            assert.equal(byName.size, CONCURRENT + 1, 'one method per call');
            const wrong: string[] = [];
            for (const s of served) {
              const c = byName.get(s.name);
              if (!c) {
                wrong.push(`${s.name}: no such call`);
                continue;
              }
              if (s.traceId !== c.traceId || s.parentSpanId !== c.spanId) {
                const other = calls.find((x) => x.spanId === s.parentSpanId);
                wrong.push(`${s.name}: parent ${s.parentSpanId ?? 'none'}${other ? ` (the span of ${other.name})` : ''}, expected ${c.spanId}`);
              }
            }
            assert.deepEqual(wrong, [], 'every SERVER span is the child of its own CLIENT span');

            // the call made on the HTTP handler's goroutine: one trace from the HTTP request to the server
            const http = await traced.spansOf(client.pid, 'SERVER', 1, 'the HTTP request');
            const warm = byName.get('demo.Items/Warmup')!;
            assert.equal(warm.parentSpanId, http[0]!.spanId);
            assert.equal(served.find((s) => s.name === 'demo.Items/Warmup')!.traceId, http[0]!.traceId);
          } finally {
            await client.stop();
            await server.stop();
          }
        });
      }
    }
  }
});

describe('google.golang.org/grpc: without the offsets they need, only linking and the incoming traceparent are off, and inspect says why', () => {
  test('grpc v1.66.0, stripped, offsets from the database alone (which knows none of those fields at that version)', (t) => {
    const tc = toolchains().find((x) => x.version.startsWith('go1.26'));
    if (!tc) return t.skip('no Go 1.26 toolchain');
    const b = echoBinary('1.66.0', tc, true);
    if ('skip' in b) return t.skip(b.skip);
    const r = spawnSync(gotrailBin, ['inspect', '--json', '--offsets-from', 'db', b.binary], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { probes: Array<{ id: string; attachable: boolean; degraded: string[] }> };
    const probe = (id: string): { attachable: boolean; degraded: string[] } => report.probes.find((p) => p.id === id)!;
    const client = probe('google.golang.org/grpc/client');
    const server = probe('google.golang.org/grpc/server');
    assert.equal(client.attachable, true, 'the client probe still makes its spans');
    assert.equal(server.attachable, true, 'the server probe still makes its spans');
    for (const field of ['loopyWriter.framer', 'framer.writer', 'bufWriter.conn']) {
      assert.ok(client.degraded.some((d) => d.startsWith('calls to traced gRPC servers on this node are not linked to them') &&
        d.includes(`no offset for google.golang.org/grpc/internal/transport.${field} at v1.66.0`)), `${field}: ${client.degraded.join('\n')}`);
    }
    for (const field of ['http2.MetaHeadersFrame.Fields', 'http2/hpack.HeaderField.Value']) {
      assert.ok(server.degraded.some((d) => d.startsWith("an incoming traceparent in a call's metadata is not used") &&
        d.includes(`no offset for golang.org/x/net/${field} at v1.66.0`)), `${field}: ${server.degraded.join('\n')}`);
    }
  });
});
