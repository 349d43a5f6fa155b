/**
 * End to end: a call's incoming `traceparent` (and `tracestate`) metadata is
 * the remote parent of its SERVER span, read from the HTTP/2 header fields
 * grpc-go decoded (grpc v1.50.1, v1.64.1 and v1.85.0, every Go toolchain
 * here, stripped and not). The caller is a copy of the same program that
 * gotrail does not trace (as a caller on another node), so that the call is
 * not linked to a local CLIENT span instead. W3C rules as for net/http: an
 * unsampled parent is honoured (no span, counted), an invalid one is ignored
 * (a new trace, counted).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tracedCollector } from '../../../support/traced-collector.ts';
import { httpRequest, startGoServer } from '../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../support/privileges.ts';
import { repoRoot } from '../../../support/agent-process.ts';
import { echoBinary, GRPC_VERSIONS, toolchains, BUILD_ROOT } from './echo-build.ts';

const skip = skipUnlessBpf();
const CONCURRENT = 20;
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
/** Outside BUILD_ROOT, which the agent's rule traces: the caller stays untraced. */
const UNTRACED = join(repoRoot, 'build', 'test', 'grpc-untraced');

describe("google.golang.org/grpc server: the call's traceparent metadata is the SERVER span's parent", { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`]);

  for (const version of GRPC_VERSIONS) {
    for (const tc of toolchains()) {
      for (const stripped of [false, true]) {
        test(`grpc v${version}, ${tc.version}${stripped ? ', stripped' : ''}: sampled, unsampled and invalid traceparents`, async (t) => {
          const b = echoBinary(version, tc, stripped);
          if ('skip' in b) return t.skip(b.skip);
          const copy = join(UNTRACED, `v${version}-${tc.version}-${stripped ? 'stripped' : 'plain'}`);
          mkdirSync(copy, { recursive: true });
          copyFileSync(b.binary, join(copy, 'grpc-echo'));
          const caller = await startGoServer(join(copy, 'grpc-echo'));
          const server = await startGoServer(b.binary);
          try {
            await traced.agent.waitTraced(server.pid);
            const grpcAddr = (await httpRequest(`${server.url}/addr`)).body.trim();
            const call = async (query: string, expect: string): Promise<void> => {
              const res = await httpRequest(`${caller.url}/unary?to=${grpcAddr}&${query}`);
              assert.equal(res.status, 200, res.body);
              assert.equal(res.body.trim(), expect, query);
            };
            const counter = async (name: string): Promise<number> => Number(await traced.metric(new RegExp(`^${name} (\\S+)`, 'm')) ?? 0);
            const unsampled0 = await counter('gotrail_spans_not_sampled_total\\{decided_by="parent"\\}');
            const invalid0 = await counter('gotrail_traceparents_invalid_total');

            // sampled, with tracestate: every concurrent call is the remote parent's child
            await call(`n=${CONCURRENT}&what=ok&tp=00-${TRACE}-${PARENT}-01&ts=${encodeURIComponent('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7')}`, `OK=${CONCURRENT + 1}`);
            // not sampled: honoured, no span
            await call(`what=ok&tp=00-${TRACE}-${PARENT}-00`, 'OK=1');
            // invalid (upper-case hex, a version-00 value too long): a new trace each
            await call(`what=ok&tp=00-${TRACE.toUpperCase()}-${PARENT}-01`, 'OK=1');
            await call(`what=ok&tp=00-${TRACE}-${PARENT}-01-extra`, 'OK=1');
            // none: a new trace
            await call('what=notfound', 'NotFound=1');

            const spans = (await traced.spansOf(server.pid, 'SERVER', CONCURRENT + 1 + 3 + 1, 'one SERVER span per sampled call (and /addr)'))
              .filter((s) => s.attributes['rpc.system'] === 'grpc');
            const children = spans.filter((s) => s.traceId === TRACE);
            assert.equal(children.length, CONCURRENT + 1, 'every call with the sampled traceparent');
            for (const s of children) {
              assert.equal(s.parentSpanId, PARENT);
              assert.equal(s.traceState, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
              assert.equal(s.attributes['rpc.grpc.status_code'], 0);
            }
            const others = spans.filter((s) => s.traceId !== TRACE);
            assert.equal(others.length, 3, 'the two invalid traceparents and the call without one start new traces');
            for (const s of others) {
              assert.equal(s.parentSpanId, '');
              assert.equal(s.traceState, '');
            }
            assert.equal(await counter('gotrail_spans_not_sampled_total\\{decided_by="parent"\\}') - unsampled0, 1, 'the unsampled call is counted');
            assert.equal(await counter('gotrail_traceparents_invalid_total') - invalid0, 2, 'the invalid traceparents are counted');
          } finally {
            await caller.stop();
            await server.stop();
          }
        });
      }
    }
  }
});
