/**
 * Cross-node propagation by header, on this kernel (in lockdown): two
 * "nodes" made of network namespaces joined by a veth pair, node-local
 * linking turned off (`--no-local-linking`) so that only the header can link.
 * A traced Go client in namespace A (test/programs/inject-peer) calls, in
 * namespace B, a traced Go server (httpserver) and an untraced recorder
 * (inject-peer -mode recorder) that answers with the traceparent values and
 * the body hash it received. All while the machine's cores are busy.
 *
 * A second client copy matches --no-inject-exe: traced, but never injected.
 *
 * Addresses are from 198.18.0.0/15 (reserved for network tests), on the
 * test's own veth pair only. B answers on several addresses so that the
 * destination rules can be exercised by one agent:
 *   .2  allowed (the traced server, the recorder)
 *   .3  denied by CIDR (--inject-deny 198.18.N.3/32)
 *   .4  reached as api.third-party.example: denied by host glob (--inject-deny *.third-party.example)
 *   198.19.N.2  not on the allow list (--inject-allow 198.18.N.0/24)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { freshCopy, tracedCollector } from '../support/traced-collector.ts';
import { startGoServer, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startBusyLoad, type BusyLoad } from '../support/busy.ts';
import type { ReceivedSpan } from '../support/collector.ts';
import { twoNodes } from '../support/two-nodes.ts';

const skip = skipUnlessBpf();
const NODES = twoNodes('gtinj', 100 + (process.pid % 150));
const NS_A = NODES.nsA;
const NS_B = NODES.nsB;
const B = NODES.b;
const B_DENIED = NODES.bOn(3);
const B_THIRD_PARTY = NODES.bOn(4);
const B_OUTSIDE = NODES.bOutside;
const COPIES = join(repoRoot, 'build', 'test', 'inject-http1');
/** Copies traced with injection off for their executable (--no-inject-exe). */
const COPIES_NO_INJECT = join(repoRoot, 'build', 'test', 'inject-http1-off');
const PEER = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'inject-peer');
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/;




interface Received { traceparent: string[] | null; bodyLen: number; bodySha256: string; status: number }
interface Result { ok: boolean; error?: string; sentLen: number; sentSha256: string; responses: Received[] | null; raw?: string }

/** The traced client in namespace A: one JSON command per call, one result. */
class Client {
  readonly pid: number;
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;

  constructor(bin: string) {
    this.child = spawn('ip', ['netns', 'exec', NS_A, bin, '-mode', 'client']);
    this.pid = this.child.pid!;
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async ready(): Promise<void> {
    const l = await this.lines.next();
    assert.equal(l.value, 'ready', 'the client starts');
  }

  async run(cmd: Record<string, unknown>): Promise<Result> {
    this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
    const l = await this.lines.next();
    assert.ok(!l.done, `the client answers ${JSON.stringify(cmd)}`);
    const r = JSON.parse(l.value) as Result;
    assert.ok(r.ok, `${JSON.stringify(cmd)}: ${r.error}`);
    return r;
  }

  stop(): Promise<void> {
    return new Promise((r) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return r();
      this.child.once('exit', () => r());
      this.child.kill('SIGKILL');
    });
  }
}

function onlyTraceparent(r: Received, what: string): { traceId: string; spanId: string } {
  assert.equal(r.status, 200, what);
  assert.equal(r.traceparent?.length, 1, `${what}: exactly one traceparent arrives (got ${JSON.stringify(r.traceparent)})`);
  const m = TRACEPARENT.exec(r.traceparent[0]!);
  assert.ok(m, `${what}: a well-formed W3C traceparent (got ${r.traceparent[0]})`);
  return { traceId: m[1]!, spanId: m[2]! };
}

describe('traceparent injected at socket level into HTTP/1.x requests, across two network namespaces, node-local linking off', { skip }, () => {
  const traced = tracedCollector([
    '--include-exe', `${COPIES}/**`, '--include-exe', `${COPIES_NO_INJECT}/**`, '--no-inject-exe', `${COPIES_NO_INJECT}/**`, '--no-local-linking',
    '--inject-allow', NODES.subnet, '--inject-deny', `${B_DENIED}/32`, '--inject-deny', '*.third-party.example',
  ]);
  let busy: BusyLoad | undefined;
  let recorder: GoServer | undefined;
  let server: GoServer | undefined;
  let client: Client | undefined;
  const rec = `http://${B}:18080`;

  before(() => {
    // also when the run is cut short (an uncaught error, a timeout)
    process.once('exit', () => NODES.teardown());
    NODES.setup({ 'allowed.inject.test': B, 'api.third-party.example': B_THIRD_PARTY });
  });
  before(async () => {
    recorder = await startGoServer('ip', ['netns', 'exec', NS_B, PEER, '-mode', 'recorder', '-addr', '0.0.0.0:18080', '-raw-addr', '0.0.0.0:18081']);
    server = await startGoServer('ip', ['netns', 'exec', NS_B, freshCopy(COPIES, 'go1.26', 'plain'), '-addr', `${B}:18090`]);
    client = new Client(freshCopy(COPIES, 'go1.26', 'plain', 'inject-peer'));
    await client.ready();
    await traced.agent.waitTraced(server.pid);
    await traced.agent.waitTraced(client.pid);
    busy = startBusyLoad();
  });
  after(async () => {
    await busy?.stop();
    await client?.stop();
    await server?.stop();
    await recorder?.stop();
    NODES.teardown();
  });

  /** The client spans sent since the last call, exactly `n`. */
  let clientSpansSeen = 0;
  const newClientSpans = async (n: number, what: string): Promise<ReceivedSpan[]> => {
    const all = await traced.spansOf(client!.pid, 'CLIENT', clientSpansSeen + n, what);
    const fresh = all.filter((s) => !seenIds.has(s.spanId));
    for (const s of fresh) seenIds.add(s.spanId);
    clientSpansSeen += n;
    return fresh;
  };
  const seenIds = new Set<string>();

  test('a traced server in the other namespace: its span is the child of the client span, linked by the header alone', async () => {
    const r = await client!.run({ op: 'get', url: `http://${B}:18090/hello` });
    assert.equal(r.responses?.length, 1);
    const [c] = await newClientSpans(1, 'one CLIENT span');
    const [s] = await traced.serverSpans(server!, 1);
    assert.equal(s!.traceId, c!.traceId, 'one trace across the namespaces');
    assert.equal(s!.parentSpanId, c!.spanId, "the server span's parent is the client span");
  });

  test('an untraced server receives exactly one well-formed traceparent naming the client span', async () => {
    const r = await client!.run({ op: 'get', url: `${rec}/plain` });
    const tp = onlyTraceparent(r.responses![0]!, 'GET');
    const [c] = await newClientSpans(1, 'one CLIENT span');
    assert.equal(tp.traceId, c!.traceId);
    assert.equal(tp.spanId, c!.spanId);
    assert.match(r.responses![0]!.traceparent![0]!, /-01$/, 'sampled');
  });

  test('bodies arrive byte for byte: fixed length, chunked, 1 MiB uploads', async () => {
    for (const [size, chunked] of [[1000, false], [5000, true], [1 << 20, false], [1 << 20, true]] as const) {
      const r = await client!.run({ op: 'post', url: `${rec}/upload`, size, chunked });
      const got = r.responses![0]!;
      onlyTraceparent(got, `POST ${size} B${chunked ? ' chunked' : ''}`);
      assert.equal(got.bodyLen, size, 'body length');
      assert.equal(got.bodySha256, r.sentSha256, 'body hash');
    }
    await newClientSpans(4, 'one CLIENT span per upload');
  });

  test('keep-alive: every request on one connection gets its own header, bodies intact', async () => {
    const r = await client!.run({ op: 'keepalive', url: `${rec}/ka`, n: 8, size: 70_000 });
    assert.equal(r.responses?.length, 8);
    const spans = await newClientSpans(8, 'one CLIENT span per request');
    const ids = new Set<string>();
    r.responses?.forEach((got, i) => {
      const tp = onlyTraceparent(got, `request ${i}`);
      ids.add(tp.spanId);
      if (i % 2 === 1) assert.equal(got.bodySha256, r.sentSha256, `request ${i}: body hash`);
      else assert.equal(got.bodyLen, 0);
    });
    assert.equal(ids.size, 8, 'eight different span ids');
    assert.deepEqual([...ids].sort(), spans.map((s) => s.spanId).sort(), 'each header names its request\'s CLIENT span');
  });

  test('a request that already carries traceparent is left unchanged', async () => {
    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const r = await client!.run({ op: 'get', url: `${rec}/own`, headers: { traceparent: own } });
    assert.deepEqual(r.responses![0]!.traceparent, [own]);
    await newClientSpans(1, 'one CLIENT span');
  });

  test('excluded destinations receive no header: CIDR deny, host glob deny, not on the allow list', async () => {
    for (const url of [`http://${B_DENIED}:18080/deny-cidr`, 'http://api.third-party.example:18080/deny-host', `http://${B_OUTSIDE}:18080/not-allowed`]) {
      const r = await client!.run({ op: 'get', url });
      assert.equal(r.responses![0]!.status, 200, url);
      assert.equal(r.responses![0]!.traceparent, null, `${url}: no traceparent`);
    }
    // a host on the allow list by address, named by a host name
    const r = await client!.run({ op: 'get', url: 'http://allowed.inject.test:18080/named' });
    onlyTraceparent(r.responses![0]!, 'allowed.inject.test');
    await newClientSpans(4, 'one CLIENT span per request');
    const metric = async (o: string): Promise<number> => Number(await traced.metric(new RegExp(`gotrail_propagation_inject_total\\{outcome="${o}"\\} (\\d+)`)) ?? 0);
    assert.ok(await metric('denied') >= 2, 'denials counted');
    assert.ok(await metric('not_allowed') >= 1, 'destinations off the allow list counted');
    assert.ok(await metric('injected') >= 15, 'injections counted');
    assert.equal(await metric('push_failed'), 0);
  });

  test('a traced executable matching --no-inject-exe sends no header, and its requests are still traced', async () => {
    const other = new Client(freshCopy(COPIES_NO_INJECT, 'go1.26', 'plain', 'inject-peer'));
    try {
      await other.ready();
      await traced.agent.waitTraced(other.pid);
      const r = await other.run({ op: 'get', url: `${rec}/no-inject` });
      assert.equal(r.responses![0]!.status, 200);
      assert.equal(r.responses![0]!.traceparent, null, 'no traceparent');
      await traced.spansOf(other.pid, 'CLIENT', 1, 'its request still makes a CLIENT span');
    } finally {
      await other.stop();
    }
  });

  test('writev (net.Buffers) and sendfile (io.Copy from a file) sends are not corrupted', async () => {
    for (const op of ['buffers', 'sendfile']) {
      const r = await client!.run({ op, addr: `${B}:18081`, size: 300_000 });
      assert.equal(r.raw, `${r.sentLen} ${r.sentSha256}`, `${op}: the receiver got the very bytes sent`);
    }
  });
});
