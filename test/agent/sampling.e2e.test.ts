/**
 * End to end: head sampling decided in BPF. Every sampler of
 * OTEL_TRACES_SAMPLER, switched by configuration reloads of one running
 * agent, on requests with chosen trace ids (so that each TraceIdRatioBased
 * decision is known in advance, computed here from the specification's
 * rule), with sampled and unsampled incoming parents, and without any.
 *
 * Each request crosses two traced processes of this node and goroutines:
 * GET A/proxy (httpserver) → its client call → B/spawn (goroutines, linked to
 * A's client span by the connection) → two goroutines B started, each
 * calling B/leaf (a client span and a linked server span each): 7 spans per
 * request. A sampled request must arrive whole; an unsampled one must send
 * no event at all — the probes' event counts and
 * gotrail_spans_not_sampled_total (by where the decision was made) prove it.
 * A gRPC server (grpc-go v1.85.0) called by an untraced caller checks that a
 * call's traceparent metadata is decided by the same rule.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attributeText, startCollector, type Collector, type ReceivedSpan } from '../support/collector.ts';
import { repoRoot, startAgent, type AgentProcess } from '../support/agent-process.ts';
import { httpRequest, startGoServer, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { freshCopy } from '../support/traced-collector.ts';
import { echoBinary, toolchains } from '../go/google.golang.org/grpc/echo-build.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-sampling');
/** Spans one request makes: A server + client, B server, 2 × (B client + B server). */
const SPANS_PER_REQUEST = 7;
const LEAVES = 2;

/** The 7 rightmost bytes of the trace ids sent (the randomness value R), chosen around ratio 0.5's threshold 0x80000000000000. */
const RANDOMNESS = ['00000000000001', '3fffffffffffff', '80000000000000', 'c0000000000000', '7fffffffffffff', '5a5a5a5a5a5a5a', 'ffffffffffffff', 'a5a5a5a5a5a5a5'];

/** TraceIdRatioBased per the specification, written independently of the agent's code: sampled iff R >= 2^56 - ratio·2^56. */
function ratioKeeps(traceId: string, ratio: number): boolean {
  const r = BigInt(`0x${traceId.slice(18)}`);
  return r >= (1n << 56n) - BigInt(Math.round(ratio * 2 ** 56));
}

interface Sent {
  id: string;
  /** the traceparent's trace id; undefined: no traceparent (a root in A) */
  traceId?: string;
  /** the traceparent's sampled flag */
  parentSampled?: boolean;
  /** whether the request must arrive (undefined: decided by random root ids; checked against the rule) */
  expected?: boolean;
  /** who decided it when not sampled */
  decidedBy?: 'parent' | 'sampler';
}

describe('sampling in BPF: every sampler, children across goroutines and processes follow the root', { skip }, () => {
  let collector: Collector;
  let agent: AgentProcess;
  let a: GoServer, b: GoServer;
  let dir: string;
  let configFile: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gotrail-sampling-'));
    configFile = join(dir, 'config.yaml');
    writeFileSync(configFile, 'sampling: {sampler: always_on}\n');
    collector = await startCollector();
    agent = await startAgent(['--config', configFile, '--exporter', 'otlp', '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`,
      '--include-exe', join(copies, '**'), '--schedule-delay', '200'], { OTEL_TRACES_SAMPLER: '', OTEL_TRACES_SAMPLER_ARG: '' });
    a = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'httpserver'));
    b = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'goroutines'));
    await agent.waitTraced(a.pid);
    await agent.waitTraced(b.pid);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    const code = await agent?.stop();
    await collector?.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0, 'gotrail run exits 0 on SIGTERM');
  });

  const metricsText = async (): Promise<string> => (await httpRequest(await agent.metricsUrl())).body;
  interface Counts { parent: number; sampler: number; events: number; lost: number; byType: string }
  async function counts(): Promise<Counts> {
    const m = await metricsText();
    const one = (re: RegExp): number => Number(re.exec(m)?.[1] ?? 0);
    let events = 0, lost = 0;
    const byType: string[] = [];
    // span events only (a probe's type is its package path); process exec/exit events are any process's on the node
    for (const x of m.matchAll(/^gotrail_events_total\{type="([^"]+\/[^"]+)"\} (\S+)$/gm)) {
      events += Number(x[2]);
      byType.push(`${x[1]}=${x[2]}`);
    }
    for (const x of m.matchAll(/^gotrail_events_lost_total\{reason="[^"]+"\} (\S+)$/gm)) lost += Number(x[1]);
    return {
      parent: one(/^gotrail_spans_not_sampled_total\{decided_by="parent"\} (\S+)$/m),
      sampler: one(/^gotrail_spans_not_sampled_total\{decided_by="sampler"\} (\S+)$/m),
      events, lost, byType: byType.join(' '),
    };
  }

  let generation = 0;
  async function useSampler(yaml: string, description: string): Promise<void> {
    // whole or not at all: the file watcher may read it at any moment
    writeFileSync(`${configFile}.tmp`, `sampling: ${yaml}\n`);
    renameSync(`${configFile}.tmp`, configFile);
    agent.child.kill('SIGHUP');
    generation++;
    await agent.waitFor(new RegExp(`sampler set sampler=${description.replace(/[{}.]/g, (c) => `\\${c}`)}(?:\\s|$)[\\s\\S]*configuration reloaded file=\\S+ generation=${generation + 1} `), 10_000);
  }

  async function send(s: Sent): Promise<void> {
    const to = `${b.url}/spawn/${s.id}?n=${LEAVES}`;
    const headers: Record<string, string> = {};
    if (s.traceId) headers.traceparent = `00-${s.traceId}-00f067aa0ba902b7-${s.parentSampled ? '01' : '00'}`;
    const res = await httpRequest(`${a.url}/proxy?to=${encodeURIComponent(to)}`, { headers });
    assert.equal(res.status, 200, `${s.id}: ${res.body}`);
  }

  const pathOf = (s: ReceivedSpan): string =>
    s.kind === 'CLIENT' ? new URL(attributeText(s.attributes['url.full'])).pathname : attributeText(s.attributes['url.path']);

  /**
   * Sends `sent` one after another and checks: each request that must arrive
   * did, whole (7 spans of one trace, parents within it); none other sent a
   * span or an event; the spans not made are counted where they were decided.
   * Returns the trace ids of the requests that arrived.
   */
  async function run(phase: string, sent: Sent[], rootRatio?: number): Promise<void> {
    await collector.clear();
    const before = await counts();
    for (const s of sent) await send(s);

    // the requests' spans: B's /spawn/<id> server span names each request's trace
    const spawnOf = (all: ReceivedSpan[], id: string): ReceivedSpan | undefined => all.find((x) => x.kind === 'SERVER' && pathOf(x) === `/spawn/${id}`);
    const mustArrive = sent.filter((s) => s.expected === true);
    const spansOfTrace = (all: ReceivedSpan[], traceId: string): ReceivedSpan[] => all.filter((x) => x.traceId === traceId);
    // wait for the expected ones, and for the counters of the others (BPF counts at each span's end)
    const settled = async (): Promise<boolean> => {
      const all = await collector.spans();
      const c = await counts();
      const arrived = sent.filter((s) => { const sp = spawnOf(all, s.id); return sp !== undefined && spansOfTrace(all, sp.traceId).length === SPANS_PER_REQUEST; }).length;
      const notMade = c.parent - before.parent + c.sampler - before.sampler;
      return arrived * SPANS_PER_REQUEST + notMade === sent.length * SPANS_PER_REQUEST && mustArrive.every((s) => spawnOf(all, s.id));
    };
    const deadline = Date.now() + 20_000;
    while (!(await settled()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await new Promise((r) => setTimeout(r, 1000)); // stragglers: a surplus span or event fails below

    const all = (await collector.spans()).filter((x) => x.resource['process.pid'] === a.pid || x.resource['process.pid'] === b.pid);
    const after = await counts();
    let arrived = 0;
    let expectParent = 0, expectSampler = 0;
    for (const s of sent) {
      const spawn = spawnOf(all, s.id);
      const got = spawn ? spansOfTrace(all, spawn.traceId) : [];
      const expected = s.expected ?? (spawn !== undefined);
      if (s.expected === undefined) {
        // a root in A with a random trace id: whichever way, by the rule
        if (spawn) assert.ok(ratioKeeps(spawn.traceId, rootRatio!), `${phase} ${s.id}: trace ${spawn.traceId} kept against the rule`);
      }
      if (!expected) {
        assert.equal(spawn, undefined, `${phase} ${s.id}: not sampled, yet its spans arrived`);
        if (s.decidedBy === 'parent') expectParent += SPANS_PER_REQUEST;
        else expectSampler += SPANS_PER_REQUEST;
        continue;
      }
      arrived++;
      assert.ok(spawn, `${phase} ${s.id}: sampled, yet no span arrived`);
      assert.equal(got.length, SPANS_PER_REQUEST, `${phase} ${s.id}: ${got.map((x) => `${x.kind} ${pathOf(x)}`).join(', ')}`);
      if (s.traceId) assert.equal(spawn.traceId, s.traceId, `${phase} ${s.id}: joined the incoming trace`);
      const ids = new Set(got.map((x) => x.spanId));
      const roots = got.filter((x) => !ids.has(x.parentSpanId));
      assert.equal(roots.length, 1, `${phase} ${s.id}: one trace, one entry span (A's server span)`);
      assert.equal(roots[0]!.resource['process.pid'], a.pid);
      assert.equal(got.filter((x) => x.kind === 'CLIENT' && pathOf(x).startsWith(`/leaf/${s.id}-`)).length, LEAVES, `${phase} ${s.id}: the goroutines' calls are in the trace`);
      assert.equal(got.filter((x) => x.resource['process.pid'] === b.pid).length, SPANS_PER_REQUEST - 2, `${phase} ${s.id}: the second process's spans are in the trace`);
    }
    assert.equal(all.length, arrived * SPANS_PER_REQUEST, `${phase}: no span of any other request`);
    assert.equal(after.parent - before.parent, expectParent, `${phase}: spans not made, decided by the incoming parent`);
    assert.equal(after.sampler - before.sampler, expectSampler, `${phase}: spans not made, decided by the sampler`);
    assert.equal(after.events - before.events, arrived * SPANS_PER_REQUEST, `${phase}: the probes sent one event per span made, none for a span not made (before: ${before.byType}; after: ${after.byType})`);
    assert.equal(after.lost, before.lost, `${phase}: no event lost`);
  }

  /** Requests with traceparents of chosen trace ids, sampled flag alternating, then `roots` without. */
  function requests(phase: string, expect: (traceId: string, parentSampled: boolean) => [boolean, 'parent' | 'sampler'], roots: number, rootExpect?: boolean): Sent[] {
    const out: Sent[] = RANDOMNESS.map((r, i) => {
      const traceId = `${phase.padEnd(6, '0').slice(0, 6)}${i.toString(16).padStart(12, '0')}${r}`;
      const parentSampled = i % 2 === 0;
      const [expected, decidedBy] = expect(traceId, parentSampled);
      return { id: `${phase}-${i}`, traceId, parentSampled, expected, decidedBy };
    });
    for (let i = 0; i < roots; i++) out.push({ id: `${phase}-root${i}`, expected: rootExpect, decidedBy: 'sampler' });
    return out;
  }

  test('always_on (set at start): every request, whatever its parent\'s flag', async () => {
    await run('a1a1a1', requests('a1a1a1', () => [true, 'sampler'], 2, true));
  });

  test('always_off: nothing sent from any span; the decision still reaches the goroutines and the second process', async () => {
    await useSampler('{sampler: always_off}', 'AlwaysOffSampler');
    await run('a0a0a0', requests('a0a0a0', () => [false, 'sampler'], 2, false));
  });

  test('traceidratio 0.5: decided by the trace id\'s 56 rightmost bits, the parent\'s flag ignored', async () => {
    await useSampler('{sampler: traceidratio, ratio: 0.5}', 'TraceIdRatioBased{0.5}');
    const sent = requests('7a7a7a', (t) => [ratioKeeps(t, 0.5), 'sampler'], 0);
    // the set chosen has both outcomes, against both flags
    assert.deepEqual(sent.map((s) => `${s.expected}/${s.parentSampled}`).sort(), ['false/false', 'false/false', 'false/true', 'false/true', 'true/false', 'true/false', 'true/true', 'true/true']);
    await run('7a7a7a', sent);
  });

  test('traceidratio 0.5, gRPC: a call\'s traceparent metadata is decided by the same rule', async (t) => {
    const tc = toolchains().find((x) => x.version.startsWith('go1.26'));
    const built = tc ? echoBinary('1.85.0', tc, false) : { skip: 'no go1.26 here' };
    if ('skip' in built) return t.skip(built.skip);
    // the caller stands for another node: not traced, so the call's parent is its metadata
    const callerDir = join(repoRoot, 'build', 'test', 'sampling-untraced');
    mkdirSync(callerDir, { recursive: true });
    copyFileSync(built.binary, join(callerDir, 'grpc-echo'));
    const serverDir = join(copies, 'grpc');
    mkdirSync(serverDir, { recursive: true });
    copyFileSync(built.binary, join(serverDir, 'grpc-echo'));
    const caller = await startGoServer(join(callerDir, 'grpc-echo'));
    const server = await startGoServer(join(serverDir, 'grpc-echo'));
    try {
      await agent.waitTraced(server.pid);
      const addr = (await httpRequest(`${server.url}/addr`)).body.trim();
      // that request's own span (or its count) is done before the counts are taken
      await new Promise((r) => setTimeout(r, 1500));
      await collector.clear();
      const before = await counts();
      const sent = RANDOMNESS.map((r, i) => ({ traceId: `96c96c${i.toString(16).padStart(12, '0')}${r}`, parentSampled: i % 2 === 0 }));
      for (const x of sent) {
        const res = await httpRequest(`${caller.url}/unary?to=${addr}&what=ok&tp=00-${x.traceId}-00f067aa0ba902b7-${x.parentSampled ? '01' : '00'}`);
        assert.equal(res.body.trim(), 'OK=1');
      }
      const kept = sent.filter((x) => ratioKeeps(x.traceId, 0.5));
      assert.equal(kept.length, 4);
      const grpcSpans = async (): Promise<ReceivedSpan[]> => (await collector.spans()).filter((x) => x.resource['process.pid'] === server.pid && x.attributes['rpc.system'] === 'grpc');
      const deadline = Date.now() + 20_000;
      while ((await grpcSpans()).length < kept.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      await new Promise((r) => setTimeout(r, 1000));
      const spans = await grpcSpans();
      assert.deepEqual(spans.map((x) => x.traceId).sort(), kept.map((x) => x.traceId).sort(), 'exactly the calls whose trace id the rule keeps');
      const after = await counts();
      assert.equal(after.sampler - before.sampler, sent.length - kept.length, 'the others counted as not sampled by the sampler');
      assert.equal(after.parent, before.parent);
      assert.equal(after.events - before.events, kept.length, 'one event per kept call, none for the others');
    } finally {
      await caller.stop();
      await server.stop();
    }
  });

  test('parentbased_always_on: the incoming flag decides; roots are sampled', async () => {
    await useSampler('{sampler: parentbased_always_on}', 'ParentBased{root=AlwaysOnSampler}');
    await run('b1b1b1', requests('b1b1b1', (_, p) => [p, 'parent'], 2, true));
  });

  test('parentbased_always_on, HTTP/2: an unsampled request\'s calls carry the decision to the server over h2c (no new trace there)', async () => {
    const h2 = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'httpserver'), ['-h2c']);
    try {
      await agent.waitTraced(h2.pid);
      await collector.clear();
      const before = await counts();
      const calls = 3;
      const proxied = async (flags: string, trace: string): Promise<void> => {
        const res = await httpRequest(`${a.url}/proxy2?to=${encodeURIComponent(h2.url)}&n=${calls}&h2c=1`, { headers: { traceparent: `00-${trace}-00f067aa0ba902b7-${flags}` } });
        assert.equal(res.status, 200, res.body);
        assert.match(res.body, /proto=HTTP\/2\.0/);
      };
      await proxied('00', 'b2b2b2000000000000000000000000a0');
      await proxied('01', 'b2b2b2000000000000000000000000a1');
      // per request: A's server span, the warm-up and `calls` client spans, as many server spans in the h2c server
      const perRequest = 1 + 2 * (calls + 1);
      const deadline = Date.now() + 20_000;
      const mine = async (): Promise<ReceivedSpan[]> => (await collector.spans()).filter((x) => x.resource['process.pid'] === a.pid || x.resource['process.pid'] === h2.pid);
      while ((await mine()).length < perRequest && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      await new Promise((r) => setTimeout(r, 1000));
      const spans = await mine();
      assert.deepEqual([...new Set(spans.map((x) => x.traceId))], ['b2b2b2000000000000000000000000a1'], 'only the sampled request, and no new trace in the h2c server');
      assert.equal(spans.length, perRequest, spans.map((x) => `${x.resource['process.pid'] === a.pid ? 'A' : 'B'} ${x.kind} ${pathOf(x)}`).join(', '));
      assert.equal(spans.filter((x) => x.resource['process.pid'] === h2.pid).length, calls + 1);
      const after = await counts();
      assert.equal(after.parent - before.parent, perRequest, 'every span of the unsampled request counted, the h2c server\'s too');
      assert.equal(after.sampler, before.sampler);
    } finally {
      await h2.stop();
    }
  });

  test('parentbased_always_off: the incoming flag decides; roots are not sampled', async () => {
    await useSampler('{sampler: parentbased_always_off}', 'ParentBased{root=AlwaysOffSampler}');
    await run('b0b0b0', requests('b0b0b0', (_, p) => [p, 'parent'], 2, false));
  });

  test('parentbased_traceidratio 0.5: the incoming flag decides against the ratio; roots by their trace id', async () => {
    await useSampler('{sampler: parentbased_traceidratio, ratio: 0.5}', 'ParentBased{root=TraceIdRatioBased{0.5}}');
    await run('b7b7b7', requests('b7b7b7', (_, p) => [p, 'parent'], 8, undefined), 0.5);
  });
});
