/**
 * End to end: spans a Go program makes through the OpenTelemetry Go API's
 * global tracer with no SDK installed, exported by gotrail (test/programs/otel-api,
 * go.opentelemetry.io/otel v1.46.0, built with Go 1.26 and 1.27; plain,
 * stripped, PIE; and v1.35.0, the first version bridged): their names, attributes, status and events; each the child of the
 * span active on its goroutine, and the parent of the automatic spans made
 * inside it. With the SDK installed nothing is bridged. Exact counts under
 * concurrency on a busy machine.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ReceivedSpan } from '../../../support/collector.ts';
import { repoRoot } from '../../../support/agent-process.ts';
import { httpRequest, startGoServer } from '../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../support/privileges.ts';
import { startBusyLoad } from '../../../support/busy.ts';
import { freshCopy, tracedCollector } from '../../../support/traced-collector.ts';
import { toolchains } from '../../../offsets/helpers.ts';
import { otelApiBinary } from './otel-build.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-otel-api');
const PROGRAM = 'otel-api';

function one(spans: ReceivedSpan[], pred: (s: ReceivedSpan) => boolean, what: string): ReceivedSpan {
  const found = spans.filter(pred);
  assert.equal(found.length, 1, `exactly one ${what}, got ${found.length}`);
  return found[0]!;
}

function childOf(child: ReceivedSpan, parent: ReceivedSpan, what: string): void {
  assert.equal(child.traceId, parent.traceId, `${what}: same trace`);
  assert.equal(child.parentSpanId, parent.spanId, `${what}: parent`);
}

describe('OpenTelemetry Go API spans (no SDK), end to end', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  /** GET /outer: the spans of both requests, their nesting, attributes, status and events. */
  async function checkNesting(server: { pid: number; url: string }): Promise<void> {
    await traced.agent.waitTraced(server.pid);
    assert.equal((await httpRequest(`${server.url}/outer`)).status, 200);
    const servers = await traced.serverSpans(server, 2);
    const internal = await traced.spansOf(server.pid, 'INTERNAL', 3, 'one INTERNAL span per API span');
    const [client] = await traced.spansOf(server.pid, 'CLIENT', 1, 'one CLIENT span for the http.Get');
    const outerServer = one(servers, (s) => s.attributes['url.path'] === '/outer', 'SERVER /outer');
    const innerServer = one(servers, (s) => s.attributes['url.path'] === '/inner', 'SERVER /inner');
    const outer = one(internal, (s) => s.name === 'outer-work', 'outer-work');
    const a = one(internal, (s) => s.name === 'inner-a', 'inner-a');
    const b = one(internal, (s) => s.name === 'inner-b', 'inner-b');
    assert.equal(outerServer.parentSpanId, '', 'the request is a root');
    childOf(outer, outerServer, 'a manual span in a handler');
    childOf(client!, outer, 'http.Get inside the manual span');
    childOf(innerServer, client!, 'the server span of the node-local call');
    childOf(a, innerServer, 'a manual span in the second handler');
    childOf(b, a, 'a manual span inside a manual span');
    // inside the parent's time
    assert.ok(outer.startTimeUnixNano >= outerServer.startTimeUnixNano && outer.endTimeUnixNano <= outerServer.endTimeUnixNano, 'outer-work within its request');
    assert.ok(client!.startTimeUnixNano >= outer.startTimeUnixNano && client!.endTimeUnixNano <= outer.endTimeUnixNano, 'the call within outer-work');
    assert.deepEqual(outer.status, { code: 'OK' });
    // SetAttributes, twice; a string slice is not read (counted as dropped)
    assert.deepEqual(outer.attributes, { 'work.kind': 'outer', 'work.items': 3, 'work.cached': false, 'work.ratio': 0.25 });
    assert.equal(outer.raw.droppedAttributesCount, 1);
    assert.equal(b.status.code, 'ERROR');
    assert.equal(b.status.message, 'inner-b failed');
    assert.equal(a.status.code, 'UNSET');
    assert.deepEqual(outer.events.map((e) => e.name), ['fetching inner']);
    assert.ok(outer.events[0]!.timeUnixNano >= outer.startTimeUnixNano && outer.events[0]!.timeUnixNano <= outer.endTimeUnixNano, 'the event within its span');
    assert.equal(outer.scope.name, 'gotrail/go.opentelemetry.io/otel');
  }

  for (const tc of ['go1.26', 'go1.27']) {
    for (const v of ['plain', 'stripped', 'pie']) {
      test(`${tc} ${v}: server → manual → http.Get → server → manual → manual, with status and events`, async () => {
        const server = await startGoServer(freshCopy(copies, tc, v, PROGRAM), [], { OTEL_SERVICE_NAME: `otel-api-${tc}-${v}` });
        try {
          await checkNesting(server);
        } finally {
          await server.stop();
        }
      });
    }
  }

  test('otel v1.35.0 (the first version bridged), go1.26: the same spans and nesting', async () => {
    const tc = toolchains().find((t) => t.version.startsWith('go1.26'));
    assert.ok(tc, 'the machine\'s Go 1.26');
    const bin = otelApiBinary('1.35.0', tc);
    const copy = join(copies, `v1.35.0-${process.pid}`, 'otel-api');
    mkdirSync(dirname(copy), { recursive: true });
    copyFileSync(bin, copy);
    const server = await startGoServer(copy, [], { OTEL_SERVICE_NAME: 'otel-api-v1.35.0' });
    try {
      await checkNesting(server);
    } finally {
      await server.stop();
    }
  });

  test('go1.26 with the SDK installed: its spans are not duplicated, and the automatic spans stay children of the request', async () => {
    const server = await startGoServer(freshCopy(copies, 'go1.26', 'plain', PROGRAM), ['-sdk'], { OTEL_SERVICE_NAME: 'otel-api-sdk' });
    try {
      await traced.agent.waitTraced(server.pid);
      assert.equal((await httpRequest(`${server.url}/outer`)).status, 200);
      const servers = await traced.serverSpans(server, 2);
      const [client] = await traced.spansOf(server.pid, 'CLIENT', 1, 'one CLIENT span for the http.Get');
      await traced.spansOf(server.pid, 'INTERNAL', 0, 'no INTERNAL span: the SDK recorded them');
      // the SDK did record the program's three spans
      assert.equal((await httpRequest(`${server.url}/sdk-spans`)).body.toString().trim(), '3');
      const outerServer = one(servers, (s) => s.attributes['url.path'] === '/outer', 'SERVER /outer');
      childOf(client!, outerServer, 'http.Get: the child of the request (not of the SDK span around it)');
    } finally {
      await server.stop();
    }
  });

  test('go1.26 under load: 200 concurrent requests, each with two nested API spans, none in another request\'s trace', async () => {
    const N = 200;
    const busy = startBusyLoad();
    const server = await startGoServer(freshCopy(copies, 'go1.26', 'plain', PROGRAM), [], { OTEL_SERVICE_NAME: 'otel-api-load' });
    try {
      await traced.agent.waitTraced(server.pid);
      const res = await Promise.all(Array.from({ length: N }, () => httpRequest(`${server.url}/inner`)));
      for (const r of res) assert.equal(r.status, 200);
      // goroutines of their own (the requests' spans are not theirs)
      assert.equal((await httpRequest(`${server.url}/fanout?n=25`)).status, 200);
      const servers = (await traced.serverSpans(server, N + 1)).filter((s) => s.attributes['url.path'] === '/inner');
      const internal = await traced.spansOf(server.pid, 'INTERNAL', 2 * N + 25, 'one INTERNAL span per API span');
      const byId = new Map(internal.map((s) => [s.spanId, s]));
      const serverIds = new Set(servers.map((s) => s.spanId));
      const as = internal.filter((s) => s.name === 'inner-a');
      const bs = internal.filter((s) => s.name === 'inner-b');
      assert.equal(as.length, N);
      assert.equal(bs.length, N);
      assert.equal(internal.filter((s) => /^fan-\d+$/.test(s.name)).length, 25);
      assert.equal(new Set(servers.map((s) => s.traceId)).size, N, 'one trace per request');
      for (const a of as) {
        assert.ok(serverIds.has(a.parentSpanId), 'inner-a: the child of a SERVER span');
        const parent = servers.find((s) => s.spanId === a.parentSpanId)!;
        assert.equal(a.traceId, parent.traceId);
      }
      const parentsOfB = new Set<string>();
      for (const b of bs) {
        const parent = byId.get(b.parentSpanId);
        assert.ok(parent && parent.name === 'inner-a' && parent.traceId === b.traceId, 'inner-b: the child of inner-a, same trace');
        parentsOfB.add(b.parentSpanId);
      }
      assert.equal(parentsOfB.size, N, 'each inner-a has its own inner-b');
    } finally {
      await server.stop();
      await busy.stop();
    }
  });
});
