/**
 * End to end: a real grpc-go server (test/programs/grpc-echo, built against
 * grpc v1.50.1, v1.64.1 and v1.85.0 with every Go toolchain here, with and
 * without symbols and DWARF) traced by gotrail, spans checked in a real
 * collector: exactly one SERVER span per RPC under 100 concurrent unary
 * calls and 100 concurrent streams on one connection, the RPC semantic
 * conventions' attributes, and the status each RPC ended with (OK,
 * NotFound, Internal, DeadlineExceeded, a cancelled call, a panic a recovery
 * interceptor turned into Internal, an unknown method).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ReceivedSpan } from '../../../support/collector.ts';
import { tracedCollector } from '../../../support/traced-collector.ts';
import { startGoServer } from '../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../support/privileges.ts';
import { echoBinary, runEchoCalls, GRPC_VERSIONS, toolchains, BUILD_ROOT } from './echo-build.ts';

const skip = skipUnlessBpf();
const CONCURRENT = 100;

/** What the calls below must leave: full method → status code → spans, and which are errors. */
const EXPECTED: Array<{ name: string; code: number; count: number; error: boolean }> = [
  { name: 'demo.Echo/Unary', code: 0, count: CONCURRENT + 1, error: false },
  { name: 'demo.Echo/Chat', code: 0, count: CONCURRENT + 1, error: false },
  { name: 'demo.Echo/Unary', code: 5, count: 1, error: false },   // NotFound: the client's fault
  { name: 'demo.Echo/Unary', code: 13, count: 2, error: true },   // Internal, and the recovered panic
  { name: 'demo.Echo/Unary', code: 4, count: 1, error: true },    // DeadlineExceeded
  { name: 'demo.Echo/Unary', code: 1, count: 1, error: false },   // Cancelled
  { name: 'demo.Nobody/Home', code: 12, count: 1, error: true },  // Unimplemented
];
const TOTAL = EXPECTED.reduce((n, e) => n + e.count, 0);

describe('google.golang.org/grpc server: one SERVER span per RPC', { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`]);

  async function metric(re: RegExp): Promise<string | undefined> {
    return re.exec(await fetch(await traced.agent.metricsUrl()).then((r) => r.text()))?.[1];
  }

  for (const version of GRPC_VERSIONS) {
    for (const tc of toolchains()) {
      for (const stripped of [false, true]) {
        test(`grpc v${version}, ${tc.version}${stripped ? ', stripped' : ''}: ${CONCURRENT} concurrent unary calls and streams on one connection, every status`, async (t) => {
          const b = echoBinary(version, tc, stripped);
          if ('skip' in b) return t.skip(b.skip);
          const server = await startGoServer(b.binary);
          try {
            await traced.agent.waitTraced(server.pid);
            const grpcAddr = await runEchoCalls(server.url, CONCURRENT, { panic: true });

            const mine = (all: ReceivedSpan[]): ReceivedSpan[] =>
              all.filter((s) => s.resource['process.pid'] === server.pid && s.kind === 'SERVER' && s.attributes['rpc.system'] === 'grpc');
            await traced.collector.waitForSpans((all) => mine(all).length >= TOTAL, 30_000);
            await new Promise((r) => setTimeout(r, 1000));
            const spans = mine(await traced.collector.spans());
            assert.equal(spans.length, TOTAL, 'one SERVER span per RPC, no more');

            const port = Number(grpcAddr.split(':')[1]);
            for (const e of EXPECTED) {
              const got = spans.filter((s) => s.name === e.name && s.attributes['rpc.grpc.status_code'] === e.code);
              assert.equal(got.length, e.count, `${e.name} with status ${e.code}`);
              for (const s of got) {
                const [service, method] = e.name.split('/');
                assert.equal(s.attributes['rpc.service'], service);
                assert.equal(s.attributes['rpc.method'], method);
                assert.equal(s.status.code, e.error ? 'ERROR' : 'UNSET', `${e.name} ${e.code}: span status`);
                assert.equal(s.attributes['server.address'], '127.0.0.1');
                assert.equal(s.attributes['server.port'], port);
                assert.equal(s.attributes['client.address'], '127.0.0.1');
                assert.equal(s.attributes['network.peer.address'], '127.0.0.1');
                assert.equal(typeof s.attributes['client.port'], 'number');
                assert.notEqual(s.attributes['client.port'], port);
                assert.equal(s.attributes['network.peer.port'], s.attributes['client.port']);
                assert.equal(s.scope.name, 'gotrail/google.golang.org/grpc');
              }
            }
            // the concurrent calls shared one connection: one client port for each batch
            const okUnary = spans.filter((s) => s.name === 'demo.Echo/Unary' && s.attributes['rpc.grpc.status_code'] === 0);
            assert.equal(new Set(okUnary.map((s) => s.attributes['client.port'])).size, 1, 'one connection');
            const chat = spans.filter((s) => s.name === 'demo.Echo/Chat');
            for (const s of chat) assert.ok(s.endTimeUnixNano > s.startTimeUnixNano);
            const slow = spans.find((s) => s.attributes['rpc.grpc.status_code'] === 4)!;
            assert.ok(slow.endTimeUnixNano - slow.startTimeUnixNano >= 150_000_000n, 'the span lasts until the handler returned');
            assert.equal(await metric(/^gotrail_events_lost_total\{reason="no_entry"\} (\S+)/m), '0', 'every return found its entry');
          } finally {
            await server.stop();
          }
        });
      }
    }
  }
});
