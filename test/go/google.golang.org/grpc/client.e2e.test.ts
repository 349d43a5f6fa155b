/**
 * End to end: the gRPC calls of a real grpc-go client (test/programs/grpc-echo,
 * grpc v1.50.1, v1.64.1 and v1.85.0, every Go toolchain here, stripped and
 * not) make exactly one CLIENT span each — unary calls (ClientConn.Invoke) and
 * streams (ClientConn.NewStream), 100 at once on one connection — with the
 * method, the target and the status the caller got; a call made while the
 * goroutine serves an HTTP request is that request's child.
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

const EXPECTED: Array<{ name: string; code: number; count: number }> = [
  { name: 'demo.Echo/Unary', code: 0, count: CONCURRENT + 1 },
  { name: 'demo.Echo/Chat', code: 0, count: CONCURRENT + 1 },
  { name: 'demo.Echo/Unary', code: 5, count: 1 },
  { name: 'demo.Echo/Unary', code: 13, count: 1 },
  { name: 'demo.Echo/Unary', code: 4, count: 1 },
  { name: 'demo.Echo/Unary', code: 1, count: 1 },
  { name: 'demo.Nobody/Home', code: 12, count: 1 },
];
const TOTAL = EXPECTED.reduce((n, e) => n + e.count, 0);

describe('google.golang.org/grpc client: one CLIENT span per RPC', { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`]);

  /** The agent's loss counters and the calls missing per method and status: what a failed wait needs to be understood. */
  async function diagnose(spans: ReceivedSpan[]): Promise<string> {
    const metrics = (await fetch(await traced.agent.metricsUrl()).then((r) => r.text()))
      .split('\n')
      .filter((l) => /^gotrail_(events|spans)_/.test(l) || /^gotrail_(probe_runs_total|bpf_map_entries)\{.*grpc_client/.test(l))
      .join('\n');
    const perCall = EXPECTED.map((e) => {
      const got = spans.filter((s) => s.name === e.name && s.attributes['rpc.grpc.status_code'] === e.code).length;
      return `${e.name} status ${e.code}: expected ${e.count}, received ${got}`;
    }).join('\n');
    const other = spans.filter((s) => !EXPECTED.some((e) => s.name === e.name && s.attributes['rpc.grpc.status_code'] === e.code));
    return `${perCall}\nunexpected: ${JSON.stringify(other.map((s) => [s.name, s.attributes['rpc.grpc.status_code']]))}\n` +
      `counters:\n${metrics}\nagent log tail:\n${traced.agent.log().slice(-3000)}`;
  }

  for (const version of GRPC_VERSIONS) {
    for (const tc of toolchains()) {
      for (const stripped of [false, true]) {
        test(`grpc v${version}, ${tc.version}${stripped ? ', stripped' : ''}: ${CONCURRENT} concurrent unary calls and streams, every status`, async (t) => {
          const b = echoBinary(version, tc, stripped);
          if ('skip' in b) return t.skip(b.skip);
          const proc = await startGoServer(b.binary);
          try {
            await traced.agent.waitTraced(proc.pid);
            const grpcAddr = await runEchoCalls(proc.url, CONCURRENT, { panic: false });

            const mine = (all: ReceivedSpan[], kind: string): ReceivedSpan[] =>
              all.filter((s) => s.resource['process.pid'] === proc.pid && s.kind === kind);
            try {
              await traced.collector.waitForSpans((all) => mine(all, 'CLIENT').length >= TOTAL, 30_000);
            } catch (e) {
              throw new Error(`${(e as Error).message}\n${await diagnose(mine(await traced.collector.spans(), 'CLIENT'))}`, { cause: e });
            }
            await new Promise((r) => setTimeout(r, 1000));
            const all = await traced.collector.spans();
            const spans = mine(all, 'CLIENT');
            assert.equal(spans.length, TOTAL, `one CLIENT span per RPC, no more\n${await diagnose(spans)}`);
            const [host, port] = grpcAddr.split(':');
            for (const e of EXPECTED) {
              const got = spans.filter((s) => s.name === e.name && s.attributes['rpc.grpc.status_code'] === e.code);
              assert.equal(got.length, e.count, `${e.name} with status ${e.code}`);
              for (const s of got) {
                const [service, method] = e.name.split('/');
                assert.equal(s.attributes['rpc.system'], 'grpc');
                assert.equal(s.attributes['rpc.service'], service);
                assert.equal(s.attributes['rpc.method'], method);
                assert.equal(s.attributes['server.address'], host);
                assert.equal(s.attributes['server.port'], Number(port));
                assert.equal(s.status.code, e.code === 0 ? 'UNSET' : 'ERROR', `${e.name} ${e.code}: every status but OK is a client error`);
              }
            }
            // every call is made by one of the program's HTTP requests, on the
            // handler's goroutine or on one it started (goroutine ancestry): its child
            const httpServer = new Map(mine(all, 'SERVER').filter((s) => s.attributes['url.path'] !== undefined).map((h) => [h.spanId, h]));
            const orphans = spans.filter((s) => httpServer.get(s.parentSpanId)?.traceId !== s.traceId);
            assert.deepEqual(orphans.map((s) => `${s.name} <- ${s.parentSpanId || '(none)'}`), [], 'every gRPC call is the child of the HTTP request that made it');
            const slow = spans.find((s) => s.attributes['rpc.grpc.status_code'] === 4)!;
            assert.ok(slow.endTimeUnixNano - slow.startTimeUnixNano >= 150_000_000n, 'the span lasts until the call returned');
          } finally {
            await proc.stop();
          }
        });
      }
    }
  }
});
