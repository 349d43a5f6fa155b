/**
 * End to end, a mixed system of three traced processes on one node:
 *
 *   front (grpc-echo): HTTP server → gRPC client
 *     → back (grpc-echo): gRPC server → net/http client
 *       → leaf (httpserver): HTTP server
 *
 * Every request the front serves must make one trace of five spans, each the
 * child of the one before it: the two process boundaries are linked on this
 * node (gRPC by connection and HTTP/2 stream id, HTTP/1 by connection)
 * without writing into any program. Concurrent calls share one gRPC
 * connection, so a crossed link would show as a wrong parent. grpc v1.50.1,
 * v1.64.1 and v1.85.0 (Go 1.26, stripped and not); the leaf is the Go 1.26
 * test server.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ReceivedSpan } from '../support/collector.ts';
import { freshCopy, tracedCollector } from '../support/traced-collector.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { repoRoot } from '../support/agent-process.ts';
import { echoBinary, GRPC_VERSIONS, toolchains, BUILD_ROOT } from '../go/google.golang.org/grpc/echo-build.ts';

const skip = skipUnlessBpf();
const CONCURRENT = 10;
const CALLS = CONCURRENT + 1;
/** Fresh copies of the leaf test server: one file, one link set per test. */
const LEAVES = join(repoRoot, 'build', 'test', 'grpc-mixed');

describe('a mixed system: HTTP → gRPC → gRPC server → net/http → HTTP, one trace per request across three processes', { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`, '--include-exe', `${LEAVES}/**`]);
  const tc = toolchains().find((t) => t.version.startsWith('go1.26'));

  for (const version of GRPC_VERSIONS) {
    for (const stripped of [false, true]) {
      test(`grpc v${version}${stripped ? ', stripped' : ''}: ${CALLS} calls, each one trace of five spans with correct parents`, async (t) => {
        if (!tc) return t.skip('no Go 1.26 toolchain');
        const b = echoBinary(version, tc, stripped);
        if ('skip' in b) return t.skip(b.skip);
        const leaf = await startGoServer(freshCopy(LEAVES, 'go1.26', 'plain'));
        const back = await startGoServer(b.binary);
        const front = await startGoServer(b.binary);
        try {
          for (const p of [leaf, back, front]) await traced.agent.waitTraced(p.pid);
          const grpcAddr = (await httpRequest(`${back.url}/addr`)).body.trim();
          const res = await httpRequest(`${front.url}/unary?to=${grpcAddr}&n=${CONCURRENT}&what=${encodeURIComponent(`${leaf.url}/hello`)}`);
          assert.equal(res.status, 200, res.body);
          assert.equal(res.body.trim(), `OK=${CALLS}`);

          const frontHttp = await traced.spansOf(front.pid, 'SERVER', 1, 'the front end serves one HTTP request');
          const frontCalls = await traced.spansOf(front.pid, 'CLIENT', CALLS, 'one gRPC CLIENT span per call');
          // and the HTTP request that asked for the gRPC address
          const backServed = (await traced.spansOf(back.pid, 'SERVER', CALLS + 1, 'one gRPC SERVER span per call')).filter((s) => s.attributes['rpc.system'] === 'grpc');
          const backCalls = await traced.spansOf(back.pid, 'CLIENT', CALLS, 'one HTTP CLIENT span per call');
          const leafServed = await traced.spansOf(leaf.pid, 'SERVER', CALLS, 'one HTTP SERVER span per call');

          const byId = new Map<string, ReceivedSpan>([...frontHttp, ...frontCalls, ...backServed, ...backCalls, ...leafServed].map((s) => [s.spanId, s]));
          const parentOf = (s: ReceivedSpan, what: string): ReceivedSpan => {
            const p = byId.get(s.parentSpanId);
            assert.ok(p, `${what} (${s.name}) has its parent among the system's spans`);
            assert.equal(p.traceId, s.traceId, `${what}: one trace`);
            return p;
          };
          // walk every chain up from the leaf: five spans, each of the kind and process expected
          const seen = { frontCalls: new Set<string>(), backServed: new Set<string>(), backCalls: new Set<string>() };
          for (const l of leafServed) {
            assert.equal(l.attributes['url.path'], '/hello');
            const bc = parentOf(l, 'the leaf request');
            assert.ok(backCalls.includes(bc), "the leaf request's parent is the back end's HTTP CLIENT span");
            assert.equal(bc.attributes['url.full'], `${leaf.url}/hello`);
            const bs = parentOf(bc, "the back end's HTTP call");
            assert.ok(backServed.includes(bs), "the HTTP call's parent is the back end's gRPC SERVER span");
            const fc = parentOf(bs, "the back end's gRPC call");
            assert.ok(frontCalls.includes(fc), "the gRPC SERVER span's parent is the front end's gRPC CLIENT span");
            assert.equal(fc.name, 'demo.Echo/Unary');
            seen.frontCalls.add(fc.spanId);
            seen.backServed.add(bs.spanId);
            seen.backCalls.add(bc.spanId);
          }
          assert.equal(seen.frontCalls.size, CALLS, 'each gRPC call has its own chain');
          assert.equal(seen.backServed.size, CALLS);
          assert.equal(seen.backCalls.size, CALLS);
          // the call made on the handler's own goroutine and those made on the
          // goroutines it started (goroutine ancestry) all continue the front
          // end's trace: one trace, from the HTTP request down to every leaf
          const onRequest = frontCalls.filter((c) => c.parentSpanId === frontHttp[0]!.spanId);
          assert.equal(onRequest.length, CALLS, "every call is the HTTP request's child");
          assert.equal(leafServed.filter((l) => l.traceId === frontHttp[0]!.traceId).length, CALLS, 'the one trace reaches every leaf');
        } finally {
          await front.stop();
          await back.stop();
          await leaf.stop();
        }
      });
    }
  }
});
