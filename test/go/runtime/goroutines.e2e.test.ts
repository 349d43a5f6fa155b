/**
 * End to end: goroutine ancestry. A call made on a goroutine that a request's
 * goroutine started (errgroup three levels deep, a chain of `go` statements,
 * a goroutine per call) is that request's child; a call handed to a worker
 * pool through a channel, or made after the request ended, starts a trace of
 * its own rather than joining a wrong one. Real Go programs of each Go
 * toolchain here (test/programs/goroutines), real eBPF, a real collector.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { attributeText, type ReceivedSpan } from '../../support/collector.ts';
import { repoRoot } from '../../support/agent-process.ts';
import { startBusyLoad } from '../../support/busy.ts';
import { startGoServer, httpRequest } from '../../support/go-server.ts';
import { skipUnlessBpf } from '../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../support/traced-collector.ts';
import { GOROUTINE_GENERATIONS_MAX } from '../../../daemon/probes/go/runtime/descriptor.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-goroutines');

const cases = [
  { tc: 'go1.19', v: 'plain' },
  { tc: 'go1.26', v: 'stripped' },
  { tc: 'go1.27', v: 'plain' },
] as const;

const CONCURRENT = 200;
const PER_REQUEST = 3;
const POOL_CALLS = 3;

const pathOf = (s: ReceivedSpan): string =>
  s.kind === 'CLIENT' ? new URL(attributeText(s.attributes['url.full'])).pathname : attributeText(s.attributes['url.path']);

async function get(url: string): Promise<void> {
  const res = await httpRequest(url);
  assert.equal(res.status, 200, `${url}: ${res.body}`);
}

describe('runtime: calls made on goroutines a request started join its trace', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  for (const { tc, v } of cases) {
    test(`${tc} ${v}: errgroup 3 levels, a chain of ${GOROUTINE_GENERATIONS_MAX} generations (not ${GOROUTINE_GENERATIONS_MAX + 1}), a worker pool and a detached goroutine not linked, ${CONCURRENT} concurrent requests never crossed`, async () => {
      const server = await startGoServer(freshCopy(copies, tc, v, 'goroutines'));
      try {
        await traced.agent.waitTraced(server.pid);
        await get(`${server.url}/fanout/f`);
        await get(`${server.url}/chain/deep?depth=${GOROUTINE_GENERATIONS_MAX}`);
        await get(`${server.url}/chain/toodeep?depth=${GOROUTINE_GENERATIONS_MAX + 1}`);
        for (let i = 0; i < POOL_CALLS; i++) await get(`${server.url}/pool/p${i}`);
        await get(`${server.url}/detached/d`);
        // a coroutine's goroutine (iter.Pull, from Go 1.23)
        const coroutines = tc !== 'go1.19';
        if (coroutines) await get(`${server.url}/pull/c`);
        // many requests at once, each spawning goroutines that call out, on a busy machine
        const busy = startBusyLoad();
        try {
          await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => get(`${server.url}/spawn/s${i}?n=${PER_REQUEST}`)));
        } finally {
          await busy.stop();
        }

        const calls = 8 + 2 + POOL_CALLS + 1 + CONCURRENT * PER_REQUEST + (coroutines ? 1 : 0);
        const requests = 1 + 2 + POOL_CALLS + 1 + CONCURRENT + (coroutines ? 1 : 0);
        const served = await traced.spansOf(server.pid, 'SERVER', requests + calls, 'one SERVER span per request and per call');
        const sent = await traced.spansOf(server.pid, 'CLIENT', calls, 'one CLIENT span per call');
        const request = new Map(served.map((s) => [pathOf(s), s]));
        const call = new Map(sent.map((c) => [pathOf(c), c]));
        assert.equal(request.size, served.length, 'each SERVER span names its own path');
        assert.equal(call.size, sent.length, 'each CLIENT span names its own path');

        // every call's own SERVER span (/leaf/…) is its child: linked on the connection
        const unlinked = sent.filter((c) => request.get(pathOf(c))?.parentSpanId !== c.spanId).map(pathOf);
        assert.deepEqual(unlinked, [], 'each /leaf SERVER span is the child of its CLIENT span');

        const wrong: string[] = [];
        const childOf = (leaf: string, parent: string): void => {
          const c = call.get(leaf);
          const p = request.get(parent);
          if (!c || !p) return void wrong.push(`${leaf}: ${c ? '' : 'no CLIENT span'} ${p ? '' : `no SERVER span for ${parent}`}`);
          if (c.parentSpanId !== p.spanId || c.traceId !== p.traceId) {
            const other = served.find((s) => s.spanId === c.parentSpanId);
            wrong.push(`${leaf}: parent ${c.parentSpanId || '(none)'}${other ? ` (${pathOf(other)})` : ''}, expected ${parent}`);
          }
        };
        const root = (leaf: string, notIn: string): void => {
          const c = call.get(leaf);
          if (!c) return void wrong.push(`${leaf}: no CLIENT span`);
          if (c.parentSpanId !== '' || served.some((s) => s.traceId === c.traceId && pathOf(s) === notIn)) {
            wrong.push(`${leaf}: expected a new trace, got parent ${c.parentSpanId} in the trace of ${served.filter((s) => s.traceId === c.traceId).map(pathOf).join(',')}`);
          }
        };
        for (const a of [0, 1]) for (const b of [0, 1]) for (const c of [0, 1]) childOf(`/leaf/f-${a}${b}${c}`, '/fanout/f');
        childOf('/leaf/deep', '/chain/deep');
        root('/leaf/toodeep', '/chain/toodeep');
        for (let i = 0; i < POOL_CALLS; i++) root(`/leaf/p${i}`, `/pool/p${i}`);
        root('/leaf/d', '/detached/d');
        if (coroutines) childOf('/leaf/c', '/pull/c');
        for (let i = 0; i < CONCURRENT; i++) for (let k = 0; k < PER_REQUEST; k++) childOf(`/leaf/s${i}-${k}`, `/spawn/s${i}`);
        assert.deepEqual(wrong, [], 'every call is the child of the request whose goroutines made it, or of none');
        assert.equal(await traced.metric(/^gotrail_events_lost_total\{reason="no_entry"\} (\S+)/m), '0', 'every return found its entry');
      } finally {
        await server.stop();
      }
    });
  }
});
