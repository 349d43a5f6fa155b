/**
 * Process selection and container/Kubernetes metadata with real processes and
 * real eBPF: Go servers started inside cgroups shaped like a kubelet's
 * (cgroupfs driver: /kubepods/<qos>/pod<uid>/<container id>), a local API
 * server for the pods, and the agent in this test process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent, type AgentOptions } from '../../daemon/agent/agent.ts';
import { createMetrics } from '../../daemon/agent/metrics.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { httpRequest, startGoServer, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep, until } from '../support/wait.ts';
import { FakeKubeApi, pod, type WatchStream } from './fake-kube-api.ts';

const server = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

/** A cgroup hierarchy this test may create cgroups in (v1 pids, else v2), or undefined. */
function writableHierarchy(): string | undefined {
  for (const h of ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    try {
      mkdirSync(join(h, 'gotrail-probe-cgroup'));
      rmdirSync(join(h, 'gotrail-probe-cgroup'));
      return h;
    } catch {
      /* not this one */
    }
  }
  return undefined;
}

const skip = skipUnlessBpf() || (process.getuid?.() === 0 && !writableHierarchy() ? 'no writable cgroup hierarchy' : false);
const hierarchy = skip ? '' : writableHierarchy()!;
const top = 'gotrail-test-kubepods';
const created: string[] = [];

/** A kubelet-shaped cgroup for one container of one pod. */
function podCgroup(podUid: string, containerId: string): string {
  const parts = [top, 'besteffort', `pod${podUid}`, containerId];
  let dir = hierarchy;
  for (const p of parts) {
    dir = join(dir, p);
    try {
      mkdirSync(dir);
      created.push(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  return dir;
}

/** Starts the Go server inside `cgroup` from its first instruction: a shell joins the cgroup, then execs it. */
function startIn(cgroup: string | undefined, args: string[] = [], env: Record<string, string> = {}): Promise<GoServer> {
  if (!cgroup) return startGoServer(server, args, env);
  return startGoServer('/bin/sh', ['-c', `echo $$ > ${cgroup}/cgroup.procs && exec "$0" "$@"`, server, ...args], env);
}

const hex = (c: string): string => c.repeat(64);
const uid = (n: number): string => `0000000${n}-1111-2222-3333-444444444444`;

function shopPod(n: number, containerId: string, namespace = 'shop'): Record<string, unknown> {
  return pod({
    name: `checkout-5f7c9d-pod${n}`, namespace, uid: uid(n), resourceVersion: String(10 + n),
    labels: { app: 'checkout', 'pod-template-hash': '5f7c9d' },
    owner: { kind: 'ReplicaSet', name: 'checkout-5f7c9d' },
    containers: [['app', `containerd://${containerId}`]],
  });
}

interface Rig {
  agent: Agent;
  api: FakeKubeApi;
  spans: ReadableSpan[];
  watch: () => WatchStream;
  servers: GoServer[];
}

async function rig(opts: Partial<AgentOptions>, listed: Array<Record<string, unknown>>): Promise<Rig> {
  const api = new FakeKubeApi();
  api.lists.push({ resourceVersion: '1', pods: listed });
  let stream: WatchStream | undefined;
  api.watches.push((s) => {
    stream = s;
    return new Promise<void>(() => undefined); // open until the server closes
  });
  const baseUrl = await api.start();
  const spans: ReadableSpan[] = [];
  const agent = new Agent(createLogger('warn'), {
    // the test's own requests are the traced programs' traffic
    skipOwnRequests: false,
    exporter: createExporter({ kind: 'none' }),
    onSpan: (s) => spans.push(s),
    batcher: { scheduledDelayMillis: 100 },
    // far beyond the test: any decision taken in time came from exec or pod events
    scanIntervalMs: 60_000,
    kubernetes: { connection: { baseUrl, token: 't' }, nodeName: 'node-1' },
    ...opts,
  });
  await agent.start();
  await until('the pod watch', () => stream !== undefined);
  return { agent, api, spans, watch: () => stream!, servers: [] };
}

async function teardown(r: Rig | undefined): Promise<void> {
  await Promise.all(r?.servers.map((s) => s.stop()) ?? []);
  await r?.agent.stop();
  await r?.api.close();
}

after(() => {
  for (const dir of created.reverse()) {
    try {
      rmdirSync(dir);
    } catch {
      /* a process still inside; the test run reports the failure elsewhere */
    }
  }
});

async function spanOf(r: Rig, s: GoServer, path: string): Promise<ReadableSpan> {
  await httpRequest(`${s.url}${path}`);
  let found: ReadableSpan | undefined;
  await until(`a span for ${path}`, () => (found = r.spans.find((x) => x.resource.attributes['process.pid'] === s.pid && String(x.attributes['url.path']) === path)) !== undefined);
  return found!;
}

describe('container and Kubernetes resource attributes', { skip }, () => {
  let r: Rig | undefined;
  before(async () => {
    r = await rig({ selection: { includeExe: [server] } }, [shopPod(1, hex('a'))]);
  });
  after(() => teardown(r));

  test('a process in a listed pod: container.id and k8s.* on its spans', async () => {
    const s = await startIn(podCgroup(uid(1), hex('a')));
    r!.servers.push(s);
    await until('traced', () => r!.agent.tracedPids().includes(s.pid));
    const attrs = (await spanOf(r!, s, '/listed')).resource.attributes;
    assert.equal(attrs['container.id'], hex('a'));
    assert.equal(attrs['k8s.namespace.name'], 'shop');
    assert.equal(attrs['k8s.pod.name'], 'checkout-5f7c9d-pod1');
    assert.equal(attrs['k8s.pod.uid'], uid(1));
    assert.equal(attrs['k8s.container.name'], 'app');
    assert.equal(attrs['k8s.deployment.name'], 'checkout');
    assert.equal(attrs['k8s.replicaset.name'], 'checkout-5f7c9d');
    assert.equal(attrs['k8s.node.name'], 'node-1');
    const text = await createMetrics(r!.agent).metrics();
    assert.match(text, /^gotrail_kubernetes_pods 1$/m, 'the listed pod is counted');
    assert.match(text, /^gotrail_kubernetes_watch_failures_total 0$/m);
  });

  test('a process that starts before its pod is known gets the pod attributes when the pod arrives', async () => {
    const s = await startIn(podCgroup(uid(2), hex('b')));
    r!.servers.push(s);
    await until('traced', () => r!.agent.tracedPids().includes(s.pid));
    const before = (await spanOf(r!, s, '/before')).resource.attributes;
    assert.equal(before['container.id'], hex('b'));
    assert.equal(before['k8s.pod.name'], undefined);
    r!.watch().event('ADDED', shopPod(2, hex('b')));
    // the event and the next span race; the resource must change within a few requests
    let afterPod: ReadableSpan | undefined;
    for (let i = 0; i < 50 && afterPod?.resource.attributes['k8s.pod.name'] === undefined; i++) afterPod = await spanOf(r!, s, `/after-${i}`);
    const attrs = afterPod!.resource.attributes;
    assert.equal(attrs['k8s.pod.name'], 'checkout-5f7c9d-pod2');
    assert.equal(attrs['k8s.deployment.name'], 'checkout');
    assert.equal(attrs['k8s.container.name'], 'app');
  });

  test('a host process has no container or Kubernetes attributes', async () => {
    const s = await startIn(undefined);
    r!.servers.push(s);
    await until('traced', () => r!.agent.tracedPids().includes(s.pid));
    const attrs = (await spanOf(r!, s, '/host')).resource.attributes;
    assert.equal(attrs['container.id'], undefined);
    assert.equal(attrs['k8s.pod.name'], undefined);
  });
});

describe('selection by namespace, label, environment and command line', { skip }, () => {
  let r: Rig | undefined;
  before(async () => {
    r = await rig({ selection: { includeNamespace: ['shop'], includeCmdline: ['*-tag=wanted*'], excludePodLabel: ['tracing=off'] } }, [shopPod(4, hex('d'), 'other')]);
  });
  after(() => teardown(r));

  test('a process waits for its pod, then is traced once the pod shows its namespace matches', async () => {
    const s = await startIn(podCgroup(uid(3), hex('c')));
    r!.servers.push(s);
    await sleep(500);
    assert.ok(!r!.agent.tracedPids().includes(s.pid), 'pending while the pod is unknown');
    r!.watch().event('ADDED', shopPod(3, hex('c')));
    await until('traced after the pod event', () => r!.agent.tracedPids().includes(s.pid), 5000);
  });

  test('a process of a pod in another namespace is not traced', async () => {
    const s = await startIn(podCgroup(uid(4), hex('d')));
    r!.servers.push(s);
    await sleep(500);
    assert.ok(!r!.agent.tracedPids().includes(s.pid));
  });

  test('a label added to a traced pod stops its tracing', async () => {
    const s = await startIn(podCgroup(uid(5), hex('e')));
    r!.servers.push(s);
    r!.watch().event('ADDED', shopPod(5, hex('e')));
    await until('traced', () => r!.agent.tracedPids().includes(s.pid), 5000);
    const relabelled = shopPod(5, hex('e'));
    (relabelled.metadata as { labels: Record<string, string>; resourceVersion: string }).labels.tracing = 'off';
    (relabelled.metadata as { resourceVersion: string }).resourceVersion = '99';
    r!.watch().event('MODIFIED', relabelled);
    await until('released', () => !r!.agent.tracedPids().includes(s.pid), 5000);
  });

  test('two processes of one binary on the host: command line and GOTRAIL_TRACE decide', async () => {
    const wanted = await startIn(undefined, ['-tag=wanted']);
    const other = await startIn(undefined, ['-tag=other']);
    const optedOut = await startIn(undefined, ['-tag=wanted'], { GOTRAIL_TRACE: 'false' });
    r!.servers.push(wanted, other, optedOut);
    await until('the wanted one traced', () => r!.agent.tracedPids().includes(wanted.pid));
    await sleep(300);
    assert.ok(!r!.agent.tracedPids().includes(other.pid), 'command line matches no include');
    assert.ok(!r!.agent.tracedPids().includes(optedOut.pid), 'opted out by its environment');
  });
});
