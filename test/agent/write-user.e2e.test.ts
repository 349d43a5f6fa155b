/**
 * Header injection with bpf_probe_write_user, as far as this kernel lets it
 * be tested: where the kernel refuses the helper (lockdown), the injection's
 * object is refused alone — said in /status, the metrics and the log — and
 * every probe traces as before; its programs are verified up to the helper
 * call (the dry-run build, the same programs without it, loads) and, with
 * the dry-run build attached to a real net/http client, decide as designed:
 * the line they would write is the client span's traceparent, a request
 * with its own traceparent and an excluded destination get none, and
 * nothing is written.
 */
import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createMetrics } from '../../daemon/agent/metrics.ts';
import { WRITE_USER_DRY_RUN_OBJECT, type WriteUserStatus } from '../../daemon/agent/write-user.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { kernelFeatures } from '../../daemon/native/index.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { until } from '../support/wait.ts';

const bin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

/** A plain HTTP server (not traced) that records the headers of each request. */
async function recordingServer(host: string): Promise<{ url: string; seen: IncomingHttpHeaders[]; server: Server }> {
  const seen: IncomingHttpHeaders[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers);
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return { url: `http://${host}:${(server.address() as AddressInfo).port}`, seen, server };
}

type Options = ConstructorParameters<typeof Agent>[1];

function newAgent(spans: ReadableSpan[], logs: string[], more: Partial<Options> = {}, exe = bin): Agent {
  return new Agent(createLogger('info', (l) => void logs.push(l)), {
    skipOwnRequests: false,
    exporter: createExporter({ kind: 'none' }),
    selection: { includeExe: [exe] },
    onSpan: (s) => spans.push(s),
    batcher: { scheduledDelayMillis: 100 },
    ...more,
  });
}

function writeUserStatus(agent: Agent): WriteUserStatus & { outcomes: Record<string, number> } {
  const s = agent.status() as { propagation: { bpfProbeWriteUser?: WriteUserStatus & { outcomes: Record<string, number> } } };
  const m = s.propagation.bpfProbeWriteUser;
  assert.ok(m, 'the method is reported');
  return m;
}

const f = kernelFeatures();

test('where the kernel refuses bpf_probe_write_user, the injection alone is refused and every probe traces', { skip: skipUnlessBpf() || (f.probeWriteUser ? 'this kernel allows bpf_probe_write_user' : false) }, async () => {
  const spans: ReadableSpan[] = [];
  const logs: string[] = [];
  const agent = newAgent(spans, logs);
  const upstream = await recordingServer('127.0.0.1');
  await agent.start();
  const server = await startGoServer(bin);
  try {
    const st = writeUserStatus(agent);
    assert.equal(st.state, 'refused');
    if (f.lockdown === 'integrity') assert.equal(st.reason, 'lockdown=integrity');
    // the kernel's exact answer: the verifier removes the helper from the program's set
    assert.match(st.error ?? '', /^EINVAL \(errno 22\): program of this type cannot use helper bpf_probe_write_user#36$/);
    assert.equal(st.verifiedWithoutHelper, true, 'the same programs without the helper call load');
    assert.deepEqual(Object.keys((agent.status() as { disabledProbes: object }).disabledProbes), [], 'no probe is disabled');
    assert.ok(logs.some((l) => /header injection with bpf_probe_write_user refused; every other probe runs/.test(l) && /lockdown|refuses/.test(l)));
    const inspect = execFileSync(join(repoRoot, 'daemon', 'bin', 'gotrail'), ['inspect', bin], { encoding: 'utf8' });
    assert.match(inspect, new RegExp(`header injection with bpf_probe_write_user: refused \\(${f.lockdown === 'integrity' ? 'lockdown=integrity' : '[^)]+'}\\)`));
    const text = await createMetrics(agent).metrics();
    assert.match(text, /gotrail_propagation_method_state\{method="bpf_probe_write_user",state="refused"\} 1/);
    assert.match(text, /gotrail_propagation_method_state\{method="bpf_probe_write_user",state="active"\} 0/);

    await until('traced', () => agent.tracedPids().includes(server.pid));
    const r = await httpRequest(`${server.url}/proxy?to=${encodeURIComponent(`${upstream.url}/refused`)}`);
    assert.equal(r.status, 200);
    await agent.flush();
    await until('server and client spans', () => spans.some((s) => s.attributes['url.path'] === '/proxy') && spans.some((s) => String(s.attributes['url.full']).endsWith('/refused')));
    // the socket-level injection, loaded with the probes, still runs
    const client = spans.find((s) => String(s.attributes['url.full']).endsWith('/refused'))!;
    assert.equal(upstream.seen.length, 1);
    assert.equal(upstream.seen[0]!.traceparent, `00-${client.spanContext().traceId}-${client.spanContext().spanId}-01`, 'the socket-level injection still runs');
  } finally {
    await server.stop();
    await agent.stop();
    upstream.server.close();
  }
});

// Go 1.19 and 1.27 with DWARF; 1.26 stripped (offsets from Go's type metadata)
for (const [go, build] of [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'plain']] as const) test(`the injection's programs, attached without the helper call, decide as designed and write nothing (${go}, ${build})`, { skip: skipUnlessBpf() }, async () => {
  const spans: ReadableSpan[] = [];
  const logs: string[] = [];
  const exe = join(repoRoot, 'build', 'go', go, build, 'httpserver');
  const allowed = await recordingServer('127.0.0.1');
  const excluded = await recordingServer('127.0.0.2');
  // with the socket-level injection, and the destination rules both share:
  // what it puts on the wire is what this path would have written, and it
  // finds no traceparent before it (the dry run writes nothing)
  const agent = newAgent(spans, logs, { writeUser: { objectPath: WRITE_USER_DRY_RUN_OBJECT }, propagation: { deny: ['127.0.0.2/32'] } }, exe);
  await agent.start();
  const server = await startGoServer(exe);
  try {
    assert.equal(writeUserStatus(agent).state, 'dry-run');
    await until('traced', () => agent.tracedPids().includes(server.pid));
    const results = (): Record<string, number> => writeUserStatus(agent).outcomes;
    const proxy = (to: string, extra = ''): Promise<{ status: number }> => httpRequest(`${server.url}/proxy?to=${encodeURIComponent(to)}${extra}`);

    assert.equal((await proxy(`${allowed.url}/marked`)).status, 200);
    await until('decided', () => results().would_inject === 1);
    await agent.flush();
    await until('client span', () => spans.some((s) => String(s.attributes['url.full']).endsWith('/marked')));
    const client = spans.find((s) => String(s.attributes['url.full']).endsWith('/marked'))!;
    const want = `Traceparent: 00-${client.spanContext().traceId}-${client.spanContext().spanId}-01`;
    assert.equal(agent.writeUserLastLine(server.pid), want, 'the line it would append is the client span\'s traceparent');
    assert.equal(`Traceparent: ${String(allowed.seen[0]!.traceparent)}`, want, 'the socket-level injection\'s header is the same');
    assert.match(await createMetrics(agent).metrics(), /gotrail_propagation_inject_total\{outcome="injected"\} 1\n/, 'the dry run wrote nothing: the socket-level path found no traceparent');

    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    assert.equal((await proxy(`${allowed.url}/own`, `&traceparent=${own}`)).status, 200);
    await until('own traceparent seen', () => results().has_traceparent === 1);
    assert.equal(allowed.seen[1]!.traceparent, own, 'the request\'s own header is untouched');

    assert.equal((await proxy(`${excluded.url}/excluded`)).status, 200);
    await until('excluded', () => results().excluded === 1);
    assert.equal(excluded.seen.length, 1);
    assert.equal(excluded.seen[0]!.traceparent, undefined, 'an excluded destination gets no header');
    assert.equal(results().would_inject, 1, 'neither of the last two');
    assert.equal(results().injected, 0);

    // a header block longer than the scan window, then one that does not
    // fit the connection's 4 KiB buffer (flushed while it was written)
    assert.equal((await proxy(`${allowed.url}/long`, '&pad=2500')).status, 200);
    await until('too long', () => results().too_long === 1);
    assert.equal((await proxy(`${allowed.url}/flushed`, '&pad=6000')).status, 200);
    await until('flushed', () => results().flushed === 1);
    assert.equal(allowed.seen.at(-1)!['x-pad']!.length, 6000, 'the request is intact');
    assert.equal(results().would_inject, 1, 'none of them');
    const text = await createMetrics(agent).metrics();
    assert.match(text, /gotrail_propagation_write_user_total\{outcome="would_inject"\} 1/);
    assert.match(text, /gotrail_propagation_write_user_total\{outcome="excluded"\} 1/);
  } finally {
    await server.stop();
    await agent.stop();
    allowed.server.close();
    excluded.server.close();
  }
});
