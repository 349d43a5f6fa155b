/**
 * Cross-node propagation for gRPC (HTTP/2 on h2c), on this kernel (in
 * lockdown): the `sk_msg` program appends a `traceparent` header field to
 * the HEADERS frame of each call the gRPC client probe marked. Two "nodes"
 * made of network namespaces joined by a veth pair, node-local linking off
 * (`--no-local-linking`) so that only the header field can link. A traced
 * grpc-echo (grpc v1.64.1, Go 1.26) in namespace A calls, in namespace B, a
 * traced grpc-echo and an untraced copy whose handler answers the
 * traceparent metadata it received (clients of grpc v1.50.1 and v1.85.0 too,
 * whose loopy writers take a stream's headers other ways). All while the
 * machine's cores are busy.
 *
 * A second client copy matches --no-inject-exe: traced, never injected; the
 * two measure the latency the injection adds per call, in the same run.
 *
 * Addresses from 198.18.0.0/15 (reserved for network tests), on the test's
 * own veth pair only; the destination rules as in inject-http1.e2e.test.ts:
 *   .2  allowed (the traced server, the untraced echo)
 *   .3  denied by CIDR (--inject-deny 198.18.N.3/32)
 *   .4  reached as api.third-party.example: denied by host glob
 *   198.19.N.2  not on the allow list (--inject-allow 198.18.N.0/24)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { tracedCollector } from '../support/traced-collector.ts';
import { startGoServer, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startBusyLoad, type BusyLoad } from '../support/busy.ts';
import { echoBinary, toolchains } from '../go/google.golang.org/grpc/echo-build.ts';
import { twoNodes } from '../support/two-nodes.ts';

const skip = skipUnlessBpf();
const NODES = twoNodes('gth2', 100 + ((process.pid + 77) % 150));
const NS_A = NODES.nsA;
const NS_B = NODES.nsB;
const B = NODES.b;
const B_DENIED = NODES.bOn(3);
const B_THIRD_PARTY = NODES.bOn(4);
const B_OUTSIDE = NODES.bOutside;
const TRACED = join(repoRoot, 'build', 'test', 'inject-h2');
const TRACED_NO_INJECT = join(repoRoot, 'build', 'test', 'inject-h2-off');
const UNTRACED = join(repoRoot, 'build', 'test', 'inject-h2-untraced');
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/;
const CONCURRENT = 100;
const TRACED_PORT = 50051;
const ECHO_PORT = 50052;




/** A copy of grpc-echo in `dir` (the agent's rules select by path). */
function copyOf(binary: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  const dst = join(dir, 'grpc-echo');
  copyFileSync(binary, dst);
  return dst;
}

/** A grpc-echo client in namespace A, driven through its standard input (-stdin). */
class Client {
  readonly pid: number;
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;

  constructor(bin: string) {
    this.child = spawn('ip', ['netns', 'exec', NS_A, bin, '-stdin']);
    this.pid = this.child.pid!;
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async ready(): Promise<void> {
    for (const want of [/^grpc on /, /^listening on /]) {
      const l = await this.lines.next();
      assert.match(String(l.value), want, 'the client starts');
    }
  }

  /** The answer of a control endpoint (one line). */
  async get(path: string): Promise<string> {
    this.child.stdin.write(`${path}\n`);
    const l = await this.lines.next();
    assert.ok(!l.done, `the client answers ${path}`);
    return l.value;
  }

  /** `n` concurrent calls (and one more first) to the echo at `to`: what each call's handler received. */
  async tp(to: string, n: number, own?: string, pad = 0, split = false): Promise<string[][]> {
    const out = await this.get(`/tp?to=${to}&n=${n}&pad=${pad}${own ? `&tp=${own}` : ''}${split ? '&split=1' : ''}`);
    const m = /^OK=(\d+) (.*)$/.exec(out);
    assert.ok(m, `every call succeeds: ${out.slice(0, 300)}`);
    assert.equal(Number(m[1]), n + 1, 'every call succeeds');
    const replies = [...m[2]!.matchAll(/\[([^\]]*)\]/g)].map((r) => (r[1] ? r[1].split(',') : []));
    assert.equal(replies.length, n + 1);
    return replies;
  }

  stop(): Promise<void> {
    return new Promise((r) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return r();
      this.child.once('exit', () => r());
      this.child.kill('SIGKILL');
    });
  }
}

function onlyTraceparent(got: string[], what: string): { traceId: string; spanId: string } {
  assert.equal(got.length, 1, `${what}: exactly one traceparent arrives (got ${JSON.stringify(got)})`);
  const m = TRACEPARENT.exec(got[0]!);
  assert.ok(m, `${what}: a well-formed W3C traceparent (got ${got[0]})`);
  return { traceId: m[1]!, spanId: m[2]! };
}

describe('traceparent appended to the HEADERS frames of gRPC calls (h2c), across two network namespaces, node-local linking off', { skip }, () => {
  const traced = tracedCollector([
    '--include-exe', `${TRACED}/**`, '--include-exe', `${TRACED_NO_INJECT}/**`, '--no-inject-exe', `${TRACED_NO_INJECT}/**`, '--no-local-linking',
    '--inject-allow', NODES.subnet, '--inject-deny', `${B_DENIED}/32`, '--inject-deny', '*.third-party.example',
  ]);
  let busy: BusyLoad | undefined;
  let server: GoServer | undefined;
  let echo: GoServer | undefined;
  let client: Client | undefined;
  let binary = '';

  before(() => {
    const tc = toolchains().find((t) => t.version.startsWith('go1.26'));
    assert.ok(tc, 'Go 1.26 is installed');
    const b = echoBinary('1.64.1', tc, false);
    assert.ok(!('skip' in b), 'grpc-echo builds');
    binary = b.binary;
    // also when the run is cut short (an uncaught error, a timeout)
    process.once('exit', () => NODES.teardown());
    NODES.setup({ 'api.third-party.example': B_THIRD_PARTY });
  });
  before(async () => {
    echo = await startGoServer('ip', ['netns', 'exec', NS_B, copyOf(binary, UNTRACED), '-grpc-addr', `0.0.0.0:${ECHO_PORT}`]);
    server = await startGoServer('ip', ['netns', 'exec', NS_B, copyOf(binary, join(TRACED, 'server')), '-grpc-addr', `${B}:${TRACED_PORT}`]);
    client = new Client(copyOf(binary, join(TRACED, 'client')));
    await client.ready();
    await traced.agent.waitTraced(server.pid);
    await traced.agent.waitTraced(client.pid);
    busy = startBusyLoad();
  });
  after(async () => {
    await busy?.stop();
    await client?.stop();
    await server?.stop();
    await echo?.stop();
    NODES.teardown();
  });

  const seen = new Set<string>();
  let clientSpansSeen = 0;
  /** The CLIENT spans of the traced client since the last call, exactly `n`. */
  const newClientSpans = async (n: number, what: string): Promise<Map<string, string>> => {
    const all = await traced.spansOf(client!.pid, 'CLIENT', clientSpansSeen + n, what);
    clientSpansSeen += n;
    const fresh = new Map<string, string>();
    for (const s of all) if (!seen.has(s.spanId)) fresh.set(s.spanId, s.traceId);
    for (const id of fresh.keys()) seen.add(id);
    return fresh;
  };
  const metric = async (o: string): Promise<number> => Number(await traced.metric(new RegExp(`gotrail_propagation_inject_total\\{outcome="${o}"\\} (\\d+)`)) ?? 0);

  test('a traced gRPC server in the other namespace: its span is the child of the client span, linked by the header field alone', async () => {
    await client!.tp(`${B}:${TRACED_PORT}`, 0);
    const spans = await newClientSpans(1, 'one CLIENT span');
    const [spanId, traceId] = [...spans][0]!;
    const [s] = await traced.serverSpans(server!, 1);
    assert.equal(s!.traceId, traceId, 'one trace across the namespaces');
    assert.equal(s!.parentSpanId, spanId, "the server span's parent is the client span");
  });

  test(`${CONCURRENT} concurrent calls on one connection to an untraced server: each gets exactly one traceparent, its own call's`, async () => {
    const replies = await client!.tp(`${B}:${ECHO_PORT}`, CONCURRENT);
    const spans = await newClientSpans(CONCURRENT + 1, 'one CLIENT span per call');
    const got = new Map<string, string>();
    replies.forEach((r, i) => {
      const tp = onlyTraceparent(r, `call ${i}`);
      got.set(tp.spanId, tp.traceId);
    });
    assert.equal(got.size, CONCURRENT + 1, 'a different span id in every call');
    assert.deepEqual([...got].sort(), [...spans].sort(), "each header names its call's CLIENT span and trace");
  });

  test('41 calls with 200 kB requests on one connection: HEADERS frames among many DATA frames, every call gets its header', async () => {
    const split0 = await metric('h2_split');
    const replies = await client!.tp(`${B}:${ECHO_PORT}`, 40, undefined, 200_000);
    const spans = await newClientSpans(41, 'one CLIENT span per call');
    const got = new Map<string, string>();
    replies.forEach((r, i) => {
      const tp = onlyTraceparent(r, `call ${i}`);
      got.set(tp.spanId, tp.traceId);
    });
    assert.deepEqual([...got].sort(), [...spans].sort(), "each header names its call's CLIENT span and trace");
    assert.equal(await metric('h2_unaligned'), 0, 'the boundaries were never lost');
    assert.equal(await metric('h2_split') - split0, 0, 'no HEADERS frame split');
  });

  test('every DATA frame cut across two sends, in its frame header or in its payload: the boundaries are followed, every call gets its header', async () => {
    const replies = await client!.tp(`${B}:${ECHO_PORT}`, 20, undefined, 50_000, true);
    const spans = await newClientSpans(21, 'one CLIENT span per call');
    const got = new Map<string, string>();
    replies.forEach((r, i) => {
      const tp = onlyTraceparent(r, `call ${i}`);
      got.set(tp.spanId, tp.traceId);
    });
    assert.deepEqual([...got].sort(), [...spans].sort(), "each header names its call's CLIENT span and trace");
    assert.equal(await metric('h2_unaligned'), 0, 'the boundaries were never lost');
  });

  test('a call whose metadata already carries traceparent is left unchanged', async () => {
    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const present0 = await metric('present');
    const [r] = await client!.tp(`${B}:${ECHO_PORT}`, 0, own);
    assert.deepEqual(r, [own]);
    await newClientSpans(1, 'one CLIENT span');
    assert.equal(await metric('present') - present0, 1, 'counted as present');
  });

  test('excluded destinations receive no header: CIDR deny, host glob deny, not on the allow list', async () => {
    for (const to of [`${B_DENIED}:${ECHO_PORT}`, `api.third-party.example:${ECHO_PORT}`, `${B_OUTSIDE}:${ECHO_PORT}`]) {
      const replies = await client!.tp(to, 3);
      for (const r of replies) assert.deepEqual(r, [], `${to}: no traceparent`);
    }
    await newClientSpans(12, 'one CLIENT span per call');
    assert.ok(await metric('denied') >= 8, 'denials counted');
    assert.ok(await metric('not_allowed') >= 4, 'destinations off the allow list counted');
    assert.ok(await metric('injected') >= CONCURRENT + 2, 'injections counted');
    for (const o of ['push_failed', 'pull_failed', 'h2_unaligned', 'h2_split', 'h2_not_found', 'h2_too_long']) assert.equal(await metric(o), 0, o);
  });

  for (const version of ['1.50.1', '1.85.0']) {
    test(`grpc v${version} (the other ways the loopy writer takes a stream's headers): 20 concurrent calls, each with its own traceparent`, async () => {
      const tc = toolchains().find((t) => t.version.startsWith('go1.26'))!;
      const b = echoBinary(version, tc, false);
      assert.ok(!('skip' in b), `grpc v${version} builds with Go 1.26`);
      const other = new Client(copyOf(b.binary, join(TRACED, `client-v${version}`)));
      try {
        await other.ready();
        await traced.agent.waitTraced(other.pid);
        const replies = await other.tp(`${B}:${ECHO_PORT}`, 20);
        const spans = await traced.spansOf(other.pid, 'CLIENT', 21, 'one CLIENT span per call');
        const got = replies.map((r, i) => onlyTraceparent(r, `call ${i}`));
        assert.deepEqual(got.map((g) => `${g.traceId}-${g.spanId}`).sort(), spans.map((x) => `${x.traceId}-${x.spanId}`).sort(), "each header names its call's CLIENT span and trace");
      } finally {
        await other.stop();
      }
    });
  }

  test('latency per call with the injection and without (same run, same busy machine)', async (t) => {
    const other = new Client(copyOf(binary, TRACED_NO_INJECT));
    try {
      await other.ready();
      await traced.agent.waitTraced(other.pid);
      const [r] = await other.tp(`${B}:${ECHO_PORT}`, 0);
      assert.deepEqual(r, [], 'a traced executable matching --no-inject-exe sends no header');
      const bench = async (c: Client): Promise<{ p50: number; p99: number }> => {
        const m = /p50_us=(\S+) p99_us=(\S+)/.exec(await c.get(`/bench?to=${B}:${ECHO_PORT}&n=1000`));
        assert.ok(m, 'the benchmark runs');
        return { p50: Number(m[1]), p99: Number(m[2]) };
      };
      // interleaved, twice, so that a burst of load does not land on one side only
      const on = [await bench(client!), await bench(client!)];
      const off = [await bench(other), await bench(other)];
      on.push(await bench(client!));
      off.push(await bench(other));
      t.diagnostic(`gRPC unary call p50/p99 µs, injection on: ${on.map((x) => `${x.p50}/${x.p99}`).join(', ')}; off: ${off.map((x) => `${x.p50}/${x.p99}`).join(', ')}`);
    } finally {
      await other.stop();
    }
  });
});
