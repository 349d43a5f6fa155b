import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decide } from '../../daemon/agent/selection.ts';
import type { PodChange, PodLookup } from '../../daemon/metadata/kubernetes.ts';
import { ProcessMetadata, readCmdline, type PodSource } from '../../daemon/metadata/process.ts';
import { processAttributes } from '../../daemon/spans/resource.ts';

const CID = 'c0'.repeat(32);
const UID = '11111111-2222-3333-4444-555555555555';
let root: string;

function fakeProcess(pid: number, f: { cmdline?: string[]; env?: Record<string, string>; cgroup?: string }): void {
  const dir = join(root, String(pid));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'cmdline'), (f.cmdline ?? ['/srv/bin/api']).map((a) => a + '\0').join(''));
  writeFileSync(join(dir, 'environ'), Object.entries(f.env ?? {}).map(([k, v]) => `${k}=${v}\0`).join(''));
  writeFileSync(join(dir, 'cgroup'), f.cgroup ?? '0::/user.slice/session-1.scope\n');
}

/** A pod source the test fills by hand. */
class Pods implements PodSource {
  readonly byContainer = new Map<string, PodLookup>();
  readonly lookups: Array<[string | undefined, string | undefined]> = [];
  private listener: ((c: PodChange) => void) | undefined;
  lookup(containerId: string | undefined, podUid?: string): PodLookup | undefined {
    this.lookups.push([containerId, podUid]);
    return containerId ? this.byContainer.get(containerId) : undefined;
  }
  onChange(l: (c: PodChange) => void): () => void {
    this.listener = l;
    return () => (this.listener = undefined);
  }
  add(containerId: string, p: PodLookup): void {
    this.byContainer.set(containerId, p);
    this.listener?.({ type: 'added', podUids: [p['k8s.pod.uid']], containerIds: [containerId] });
  }
  delete(containerId: string): void {
    const p = this.byContainer.get(containerId)!;
    this.byContainer.delete(containerId);
    this.listener?.({ type: 'deleted', podUids: [p['k8s.pod.uid']], containerIds: [containerId] });
  }
}

const checkout: PodLookup = {
  'k8s.namespace.name': 'shop', 'k8s.pod.name': 'checkout-5f7c9d-abcde', 'k8s.pod.uid': UID, 'k8s.node.name': 'node-1',
  'k8s.container.name': 'app', 'k8s.deployment.name': 'checkout', 'k8s.replicaset.name': 'checkout-5f7c9d', labels: { app: 'checkout' },
};
const podCgroup = `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replaceAll('-', '_')}.slice/cri-containerd-${CID}.scope\n`;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'gotrail-proc-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

test('readCmdline joins the arguments with spaces', () => {
  fakeProcess(10, { cmdline: ['/srv/bin/api', '--role=api', 'a b'] });
  assert.equal(readCmdline(10, root), '/srv/bin/api --role=api a b');
  assert.equal(readCmdline(11, root), undefined);
  writeFileSync(join(root, '10', 'cmdline'), '');
  assert.equal(readCmdline(10, root), undefined, 'a zombie has no command line');
});

test('two processes of one binary, told apart by command line and environment', () => {
  fakeProcess(20, { cmdline: ['/srv/bin/server', '--role=api'], env: { TRACE_ME: '1' } });
  fakeProcess(21, { cmdline: ['/srv/bin/server', '--role=worker'], env: { GOTRAIL_TRACE: 'false' } });
  const meta = new ProcessMetadata({ procRoot: root });
  const id = (pid: number) => meta.identity({ pid, exe: '/srv/bin/server', name: 'server', startTime: '1' });
  assert.equal(decide({ includeCmdline: ['*--role=api'] }, id(20)).traced, true);
  assert.equal(decide({ includeCmdline: ['*--role=api'] }, id(21)).traced, false);
  assert.equal(decide({}, id(20)).traced, true);
  assert.equal(decide({}, id(21)).traced, false);
  assert.equal(decide({ optInEnv: 'TRACE_ME' }, id(20)).traced, true);
});

test('facts are cached per process lifetime, and a reused pid starts afresh', () => {
  fakeProcess(30, { env: { A: '1' } });
  const meta = new ProcessMetadata({ procRoot: root });
  meta.identity({ pid: 30, exe: '/x', name: 'x', startTime: '100' });
  assert.equal(meta.env(30)?.get('A'), '1');
  fakeProcess(30, { env: { A: '2' } });
  assert.equal(meta.env(30)?.get('A'), '1', 'read once');
  meta.identity({ pid: 30, exe: '/x', name: 'x', startTime: '200' });
  assert.equal(meta.env(30)?.get('A'), '2', 'new process, same pid');
  meta.prune(new Set());
  assert.equal(meta.size(), 0);
});

test('resource attributes: container id and runtime outside Kubernetes', () => {
  fakeProcess(40, { cgroup: `0::/system.slice/docker-${CID}.scope\n` });
  fakeProcess(41, {});
  const meta = new ProcessMetadata({ procRoot: root });
  assert.deepEqual(meta.resourceAttributes(40), { 'container.id': CID, 'container.runtime.name': 'docker' });
  assert.deepEqual(meta.resourceAttributes(41), {});
});

test('a process whose pod arrives late: pending, then refreshed with its pod', () => {
  fakeProcess(50, { cgroup: podCgroup });
  const now = 1000;
  const pods = new Pods();
  const meta = new ProcessMetadata({ procRoot: root, podWaitMs: 5000, now: () => now });
  meta.setPodSource(pods);
  const refreshed: number[][] = [];
  meta.onRefresh((pids) => refreshed.push(pids));
  const id = meta.identity({ pid: 50, exe: '/srv/bin/api', name: 'api', startTime: '1' });
  assert.equal(decide({ includeNamespace: ['shop'] }, id).pending, true);
  assert.deepEqual(meta.resourceAttributes(50), { 'container.id': CID, 'container.runtime.name': 'containerd' });
  assert.deepEqual(pods.lookups.at(-1), [CID, UID], 'looked up by container id and pod UID');

  pods.add(CID, checkout);
  assert.deepEqual(refreshed, [[50]]);
  assert.deepEqual(decide({ includeNamespace: ['shop'] }, id), { traced: true, reason: 'namespace shop matches include rule shop' });
  const attrs = processAttributes({ pid: 50, executablePath: '/srv/bin/api', goVersion: 'go1.26.0', extra: meta.resourceAttributes(50) });
  assert.equal(attrs['container.id'], CID);
  assert.equal(attrs['k8s.namespace.name'], 'shop');
  assert.equal(attrs['k8s.pod.name'], 'checkout-5f7c9d-abcde');
  assert.equal(attrs['k8s.container.name'], 'app');
  assert.equal(attrs['k8s.deployment.name'], 'checkout');
  assert.equal(attrs['k8s.node.name'], 'node-1');
  assert.equal(attrs['labels'], undefined);

  // the last spans of a process whose pod is being deleted keep its names
  pods.delete(CID);
  assert.deepEqual(refreshed, [[50], [50]]);
  assert.equal(meta.resourceAttributes(50)['k8s.pod.name'], 'checkout-5f7c9d-abcde');
});

test('the wait for a pod is bounded, and only processes of pods wait', () => {
  fakeProcess(60, { cgroup: podCgroup });
  fakeProcess(61, { cgroup: `0::/system.slice/docker-${CID}.scope\n` });
  fakeProcess(62, {});
  let now = 0;
  const meta = new ProcessMetadata({ procRoot: root, podWaitMs: 5000, now: () => now });
  meta.setPodSource(new Pods());
  const id = (pid: number) => meta.identity({ pid, exe: '/srv/bin/api', name: 'api', startTime: '1' });
  const rules = { excludeNamespace: ['kube-system'] };
  assert.equal(decide(rules, id(60)).pending, true);
  assert.equal(decide(rules, id(61)).pending, undefined, 'a plain Docker container is no pod');
  assert.equal(decide(rules, id(62)).pending, undefined, 'a host process is no pod');
  now = 6000;
  assert.deepEqual(decide(rules, id(60)), { traced: true, reason: 'every Go process is traced by default' });
});

test('without a pod source (no cluster) nothing waits', () => {
  fakeProcess(70, { cgroup: podCgroup });
  const meta = new ProcessMetadata({ procRoot: root });
  assert.equal(meta.pod(70), undefined);
  assert.equal(decide({ includeNamespace: ['*'] }, meta.identity({ pid: 70, exe: '/x', name: 'x', startTime: '1' })).traced, false);
});

test("forget drops a process's facts (after exec: same pid and start time, new program)", () => {
  fakeProcess(80, { cmdline: ['/bin/sh', '-c', 'exec /srv/bin/api'] });
  const meta = new ProcessMetadata({ procRoot: root });
  const id = () => meta.identity({ pid: 80, exe: '/srv/bin/api', name: 'api', startTime: '1' });
  assert.equal(id().cmdline!(), '/bin/sh -c exec /srv/bin/api');
  fakeProcess(80, { cmdline: ['/srv/bin/api', '--role=api'] });
  assert.equal(id().cmdline!(), '/bin/sh -c exec /srv/bin/api');
  meta.forget(80);
  assert.equal(id().cmdline!(), '/srv/bin/api --role=api');
});
