import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../daemon/util/log.ts';
import { inClusterConnection, kubernetesAttributes, nodeNameFromEnv, ownerAttributes, PodWatcher, type PodChange, type PodWatcherOptions } from '../../daemon/metadata/kubernetes.ts';
import { eventually, FakeKubeApi, pod, tick } from './fake-kube-api.ts';

const hex = (c: string): string => c.repeat(64);
const CID = { web: hex('a'), sidecar: hex('b'), init: hex('c'), debug: hex('d'), db: hex('e'), agent: hex('f'), cron: hex('1'), late: hex('2') };

const webPod = (rv = '90', labels: Record<string, string> = {}): Record<string, unknown> =>
  pod({
    name: 'web-7d4b9c8f6d-x2x9q', namespace: 'shop', uid: 'uid-web', resourceVersion: rv,
    labels: { app: 'web', 'pod-template-hash': '7d4b9c8f6d', ...labels },
    owner: { kind: 'ReplicaSet', name: 'web-7d4b9c8f6d', uid: 'rs-uid' },
    containers: [['web', `containerd://${CID.web}`], ['envoy', `containerd://${CID.sidecar}`]],
    initContainers: [['migrate', `containerd://${CID.init}`]],
    ephemeralContainers: [['debugger', `containerd://${CID.debug}`]],
  });
const dbPod = pod({ name: 'db-0', namespace: 'shop', uid: 'uid-db', owner: { kind: 'StatefulSet', name: 'db' }, containers: [['postgres', `cri-o://${CID.db}`]] });
const agentPod = pod({ name: 'logs-abcde', namespace: 'kube-system', uid: 'uid-ds', owner: { kind: 'DaemonSet', name: 'logs' }, containers: [['shipper', `docker://${CID.agent}`]] });

let api: FakeKubeApi;
let watcher: PodWatcher | undefined;
const logLines: string[] = [];
const log = createLogger('debug', (l) => logLines.push(l));

/** Starts a watcher on the fake API; every change it reports, from the first list on, lands in `changes`. */
async function startWatcher(extra: Partial<PodWatcherOptions> = {}, changes: PodChange[] = []): Promise<PodWatcher> {
  const baseUrl = await api.start();
  watcher = new PodWatcher(log, { connection: { baseUrl, token: 'sekret-token' }, nodeName: 'node-1', backoffInitialMs: 10, backoffMaxMs: 50, ...extra });
  watcher.onChange((c) => changes.push(c));
  watcher.start();
  return watcher;
}

beforeEach(() => {
  api = new FakeKubeApi();
  logLines.length = 0;
});
afterEach(async () => {
  await watcher?.stop();
  watcher = undefined;
  await api.close();
});

describe('PodWatcher against a fake API server', () => {
  test('lists with the node field selector and bearer token, then watches from the list version', async () => {
    api.lists.push({ resourceVersion: '100', pods: [webPod(), dbPod, agentPod] });
    const w = await startWatcher();
    assert.equal(await w.whenSynced(5000), true);
    await eventually(() => api.watchRequests().length === 1, 'the watch request');
    const [list] = api.listRequests();
    assert.equal(list!.path, '/api/v1/pods');
    assert.equal(list!.query.get('fieldSelector'), 'spec.nodeName=node-1');
    assert.equal(list!.query.get('resourceVersion'), '0');
    assert.equal(list!.headers.authorization, 'Bearer sekret-token');
    const watch = api.watchRequests()[0]!;
    assert.equal(watch.query.get('fieldSelector'), 'spec.nodeName=node-1');
    assert.equal(watch.query.get('resourceVersion'), '100');
    assert.equal(watch.query.get('allowWatchBookmarks'), 'true');
    assert.ok(Number(watch.query.get('timeoutSeconds')) >= 300);
    assert.equal(watch.headers.authorization, 'Bearer sekret-token');
    assert.equal(w.podCount(), 3);
  });

  test('lookups: container names, owners, labels, pod UID fallback', async () => {
    api.lists.push({ resourceVersion: '100', pods: [webPod(), dbPod, agentPod] });
    const w = await startWatcher();
    await w.whenSynced(5000);
    const web = w.lookup(CID.web, 'uid-web');
    assert.deepEqual(web, {
      'k8s.namespace.name': 'shop',
      'k8s.pod.name': 'web-7d4b9c8f6d-x2x9q',
      'k8s.pod.uid': 'uid-web',
      'k8s.node.name': 'node-1',
      'k8s.container.name': 'web',
      'k8s.replicaset.name': 'web-7d4b9c8f6d',
      'k8s.replicaset.uid': 'rs-uid',
      'k8s.deployment.name': 'web',
      labels: { app: 'web', 'pod-template-hash': '7d4b9c8f6d' },
    });
    assert.equal(w.lookup(`containerd://${CID.sidecar}`)?.['k8s.container.name'], 'envoy');
    assert.equal(w.lookup(CID.init)?.['k8s.container.name'], 'migrate');
    assert.equal(w.lookup(CID.debug)?.['k8s.container.name'], 'debugger');
    const db = w.lookup(CID.db);
    assert.equal(db?.['k8s.statefulset.name'], 'db');
    assert.equal(db?.['k8s.container.name'], 'postgres');
    assert.equal(db?.['k8s.deployment.name'], undefined);
    const ds = w.lookup(CID.agent);
    assert.equal(ds?.['k8s.daemonset.name'], 'logs');
    assert.equal(ds?.['k8s.namespace.name'], 'kube-system');
    // container not started yet: the pod is found by its UID, without container facts
    const byUid = w.lookup(CID.late, 'uid-db');
    assert.equal(byUid?.['k8s.pod.name'], 'db-0');
    assert.equal(byUid?.['k8s.container.name'], undefined);
    assert.equal(w.lookup(CID.late), undefined);
    assert.equal(w.lookup(undefined, 'no-such-uid'), undefined);
    assert.deepEqual(Object.keys(kubernetesAttributes(web)).includes('labels'), false);
  });

  test('watch events: added, modified, deleted (split across chunks), with change callbacks', async () => {
    api.lists.push({ resourceVersion: '100', pods: [webPod(), dbPod] });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    api.watches.push(async (s) => {
      await gate;
      const cron = JSON.stringify({ type: 'ADDED', object: pod({ name: 'report-29384756-abcde', namespace: 'batch', uid: 'uid-cron', resourceVersion: '101', owner: { kind: 'Job', name: 'report-29384756' }, containers: [['report', `containerd://${CID.cron}`]] }) }) + '\n';
      s.raw(cron.slice(0, 40));
      await tick(30);
      s.raw(cron.slice(40));
      s.event('MODIFIED', webPod('102', { tier: 'frontend' }));
      s.event('DELETED', { ...dbPod, metadata: { ...(dbPod.metadata as object), resourceVersion: '103' } });
      s.event('BOOKMARK', { kind: 'Pod', metadata: { resourceVersion: '110' } });
    });
    const changes: PodChange[] = [];
    const w = await startWatcher({}, changes);
    await w.whenSynced(5000);
    release();
    await eventually(() => changes.length === 5, 'five changes');
    assert.deepEqual(changes.map((c) => [c.type, c.podUids[0]]), [
      ['added', 'uid-web'], ['added', 'uid-db'], // the list
      ['added', 'uid-cron'], ['modified', 'uid-web'], ['deleted', 'uid-db'],
    ]);
    assert.ok(changes[2]!.containerIds.includes(CID.cron));
    assert.ok(changes[4]!.containerIds.includes(CID.db));
    const cron = w.lookup(CID.cron);
    assert.equal(cron?.['k8s.job.name'], 'report-29384756');
    assert.equal(cron?.['k8s.cronjob.name'], 'report');
    assert.equal(w.lookup(CID.web)?.labels.tier, 'frontend');
    assert.equal(w.lookup(CID.db), undefined, 'a deleted pod is gone');
    assert.equal(w.lookup(undefined, 'uid-db'), undefined);
    assert.equal(w.podCount(), 2);
  });

  test('a MODIFIED event that changes nothing a lookup shows is not reported', async () => {
    api.lists.push({ resourceVersion: '100', pods: [webPod()] });
    api.watches.push((s) => {
      s.event('MODIFIED', webPod('101'));
      s.event('MODIFIED', webPod('102', { version: '2' }));
    });
    const changes: PodChange[] = [];
    const w = await startWatcher({}, changes);
    await eventually(() => w.stats.events === 2, 'two events');
    assert.deepEqual(changes.map((c) => c.type), ['added', 'modified']);
  });

  test('410 Gone as an ERROR event: lists again and reports what changed meanwhile', async () => {
    api.lists.push({ resourceVersion: '10', pods: [webPod(), dbPod] });
    api.lists.push({ resourceVersion: '20', pods: [webPod('15'), agentPod] });
    api.watches.push((s) => s.error(410, 'Expired'));
    const changes: PodChange[] = [];
    const w = await startWatcher({}, changes);
    await eventually(() => api.watchRequests().length === 2, 'a second watch');
    assert.equal(api.listRequests().length, 2);
    assert.equal(w.stats.relists, 1);
    assert.equal(api.watchRequests()[1]!.query.get('resourceVersion'), '20');
    assert.equal(w.lookup(CID.db), undefined, 'deleted while not watching');
    assert.equal(w.lookup(CID.agent)?.['k8s.daemonset.name'], 'logs');
    // web is in both lists, unchanged to a lookup: not reported again
    assert.deepEqual(changes.map((c) => [c.type, c.podUids[0]]), [['added', 'uid-web'], ['added', 'uid-db'], ['deleted', 'uid-db'], ['added', 'uid-ds']]);
  });

  test('410 Gone as the HTTP status of the watch: lists again', async () => {
    api.lists.push({ resourceVersion: '10', pods: [webPod()] });
    api.lists.push({ resourceVersion: '30', pods: [webPod(), dbPod] });
    api.watches.push({ status: 410 });
    const w = await startWatcher();
    await eventually(() => api.watchRequests().length === 2, 'a second watch');
    assert.equal(w.stats.relists, 1);
    assert.equal(api.watchRequests()[1]!.query.get('resourceVersion'), '30');
    assert.equal(w.lookup(CID.db)?.['k8s.pod.name'], 'db-0');
  });

  test('a dropped watch reconnects, with backoff, from the last version seen', async () => {
    api.lists.push({ resourceVersion: '5', pods: [] });
    api.watches.push(async (s) => {
      s.event('ADDED', webPod('6'));
      await tick(20);
      s.drop();
    });
    api.watches.push((s) => s.event('ADDED', { ...dbPod, metadata: { ...(dbPod.metadata as object), resourceVersion: '7' } }));
    const w = await startWatcher();
    await eventually(() => w.lookup(CID.db) !== undefined, 'the pod from the second watch');
    assert.equal(w.lookup(CID.web)?.['k8s.deployment.name'], 'web');
    const watches = api.watchRequests();
    assert.equal(watches.length, 2);
    assert.equal(watches[1]!.query.get('resourceVersion'), '6');
    assert.equal(api.listRequests().length, 1, 'a dropped connection does not relist');
    assert.equal(w.stats.failures, 1);
  });

  test('a watch the server ends normally resumes at once without counting a failure', async () => {
    api.lists.push({ resourceVersion: '5', pods: [] });
    api.watches.push((s) => {
      s.event('ADDED', webPod('8'));
      s.end();
    });
    const w = await startWatcher();
    await eventually(() => api.watchRequests().length === 2, 'the next watch');
    assert.equal(api.watchRequests()[1]!.query.get('resourceVersion'), '8');
    assert.equal(w.stats.failures, 0);
  });

  test('API errors are retried with backoff, and warned about once', async () => {
    api.lists.push({ status: 500 }, { status: 403, body: { kind: 'Status', message: 'pods is forbidden' } }, { status: 503 });
    api.lists.push({ resourceVersion: '3', pods: [dbPod] });
    const w = await startWatcher();
    assert.equal(await w.whenSynced(5000), true);
    assert.equal(api.listRequests().length, 4);
    assert.equal(w.stats.failures, 3);
    assert.equal(w.lookup(CID.db)?.['k8s.pod.name'], 'db-0');
    const warnings = logLines.filter((l) => l.includes(' WARN '));
    assert.equal(warnings.length, 1, warnings.join(''));
    assert.ok(logLines.some((l) => l.includes('Kubernetes API reachable again')));
  });

  test('an unreachable API server is retried until stop, which returns promptly', async () => {
    const unused = new FakeKubeApi();
    const baseUrl = await unused.start();
    await unused.close();
    watcher = new PodWatcher(log, { connection: { baseUrl }, nodeName: 'node-1', backoffInitialMs: 5, backoffMaxMs: 20 });
    watcher.start();
    await eventually(() => watcher!.stats.failures >= 3, 'several retries');
    assert.equal(watcher.synced(), false);
    assert.equal(await watcher.whenSynced(30), false);
    const t0 = Date.now();
    await watcher.stop();
    assert.ok(Date.now() - t0 < 500);
    watcher = undefined;
  });

  test('stop ends an open watch', async () => {
    api.lists.push({ resourceVersion: '5', pods: [] });
    const w = await startWatcher();
    await eventually(() => api.watchRequests().length === 1, 'the watch');
    const t0 = Date.now();
    await w.stop();
    assert.ok(Date.now() - t0 < 500);
    await tick(50);
    assert.equal(api.watchRequests().length, 1, 'no reconnect after stop');
  });

  test('memory is bounded: pods beyond maxPods are dropped, once warned', async () => {
    const pods = Array.from({ length: 5 }, (_, i) => pod({ name: `p${i}`, uid: `u${i}`, containers: [['c', `containerd://${String(i).repeat(64)}`]] }));
    api.lists.push({ resourceVersion: '1', pods });
    const w = await startWatcher({ maxPods: 3 });
    await w.whenSynced(5000);
    assert.equal(w.podCount(), 3);
    assert.equal(w.stats.podsDropped, 2);
    assert.equal(logLines.filter((l) => l.includes('more than 3 pods')).length, 1);
  });

  test('an oversized watch event aborts the stream and the watch resumes', async () => {
    api.lists.push({ resourceVersion: '1', pods: [] });
    api.watches.push((s) => s.raw('{"type":"ADDED","object":' + ' '.repeat(4096)));
    api.watches.push((s) => s.event('ADDED', webPod('2')));
    const w = await startWatcher({ maxEventBytes: 1024 });
    await eventually(() => w.lookup(CID.web) !== undefined, 'the pod after the oversized event');
    assert.equal(w.stats.failures, 1);
  });

  test('static pods are found by the config hash their cgroup carries', async () => {
    const hash = '0c3b4b8e5d8a4f0e9c2a1b3c4d5e6f7a';
    api.lists.push({ resourceVersion: '1', pods: [pod({ name: 'kube-apiserver-node-1', namespace: 'kube-system', uid: 'mirror-uid', annotations: { 'kubernetes.io/config.mirror': hash }, owner: { kind: 'Node', name: 'node-1' } })] });
    const w = await startWatcher();
    await w.whenSynced(5000);
    const l = w.lookup(undefined, hash);
    assert.equal(l?.['k8s.pod.name'], 'kube-apiserver-node-1');
    assert.equal(l?.['k8s.pod.uid'], 'mirror-uid');
  });
});

/** A self-signed certificate for 127.0.0.1, or undefined without the openssl tool. */
function selfSigned(): { key: Buffer; cert: Buffer } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('PodWatcher over TLS', () => {
  const tls = selfSigned();
  test('trusts the API server through the given CA only', { skip: !tls && 'no openssl' }, async () => {
    api.lists.push({ resourceVersion: '1', pods: [dbPod] });
    const baseUrl = await api.start(tls);
    assert.ok(baseUrl.startsWith('https://'));
    const untrusting = new PodWatcher(log, { connection: { baseUrl }, nodeName: 'node-1', backoffInitialMs: 5, backoffMaxMs: 10 });
    untrusting.start();
    await eventually(() => untrusting.stats.failures > 0, 'a refused certificate');
    assert.equal(untrusting.synced(), false);
    await untrusting.stop();
    watcher = new PodWatcher(log, { connection: { baseUrl, ca: tls!.cert, token: () => 'from-file' }, nodeName: 'node-1' });
    watcher.start();
    assert.equal(await watcher.whenSynced(5000), true);
    assert.equal(watcher.lookup(CID.db)?.['k8s.pod.name'], 'db-0');
    assert.equal(api.listRequests().at(-1)?.headers.authorization, 'Bearer from-file');
  });
});

describe('owner inference', () => {
  test('ReplicaSet with pod-template-hash → Deployment', () => {
    assert.deepEqual(ownerAttributes([{ kind: 'ReplicaSet', name: 'api-server-5f7c9d', uid: 'u', controller: true }], { 'pod-template-hash': '5f7c9d' }), {
      'k8s.replicaset.name': 'api-server-5f7c9d', 'k8s.replicaset.uid': 'u', 'k8s.deployment.name': 'api-server',
    });
  });
  test('a bare ReplicaSet (no hash label, or another hash) has no Deployment', () => {
    assert.deepEqual(ownerAttributes([{ kind: 'ReplicaSet', name: 'api-server-5f7c9d', controller: true }], {}), { 'k8s.replicaset.name': 'api-server-5f7c9d' });
    assert.equal(ownerAttributes([{ kind: 'ReplicaSet', name: 'api-server-5f7c9d' }], { 'pod-template-hash': 'abc' })['k8s.deployment.name'], undefined);
    assert.equal(ownerAttributes([{ kind: 'ReplicaSet', name: '5f7c9d' }], { 'pod-template-hash': '5f7c9d' })['k8s.deployment.name'], undefined);
  });
  test('StatefulSet, DaemonSet, Job; CronJob only from its controller naming', () => {
    assert.deepEqual(ownerAttributes([{ kind: 'StatefulSet', name: 'db', controller: true }], {}), { 'k8s.statefulset.name': 'db' });
    assert.deepEqual(ownerAttributes([{ kind: 'DaemonSet', name: 'logs', controller: true }], {}), { 'k8s.daemonset.name': 'logs' });
    assert.deepEqual(ownerAttributes([{ kind: 'Job', name: 'migrate-2', controller: true }], {}), { 'k8s.job.name': 'migrate-2' });
    assert.deepEqual(ownerAttributes([{ kind: 'Job', name: 'nightly-report-29384756', controller: true }], {}), { 'k8s.job.name': 'nightly-report-29384756', 'k8s.cronjob.name': 'nightly-report' });
  });
  test('the controller reference wins; unknown kinds and no owner give nothing', () => {
    assert.deepEqual(ownerAttributes([{ kind: 'ConfigMap', name: 'x' }, { kind: 'DaemonSet', name: 'logs', controller: true }], {}), { 'k8s.daemonset.name': 'logs' });
    assert.deepEqual(ownerAttributes([{ kind: 'Node', name: 'node-1', controller: true }], {}), {});
    assert.deepEqual(ownerAttributes(undefined, {}), {});
  });
});

describe('in-cluster configuration', () => {
  test('outside a cluster nothing is configured', () => {
    assert.equal(inClusterConnection({}, '/nonexistent'), undefined);
    assert.equal(inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, '/nonexistent'), undefined, 'no token');
  });
  test('inside: URL from the service env, CA and a token re-read per request (rotation)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gotrail-sa-'));
    try {
      writeFileSync(join(dir, 'token'), 'first\n');
      writeFileSync(join(dir, 'ca.crt'), 'CA PEM');
      writeFileSync(join(dir, 'namespace'), 'gotrail');
      const c = inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, dir);
      assert.equal(c?.baseUrl, 'https://10.96.0.1:443');
      assert.equal(String(c?.ca), 'CA PEM');
      assert.equal(typeof c?.token, 'function');
      const token = c.token as () => string;
      assert.equal(token(), 'first');
      writeFileSync(join(dir, 'token'), 'rotated');
      assert.equal(token(), 'rotated');
      assert.equal(inClusterConnection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, dir)?.baseUrl, 'https://[fd00::1]:443');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
  test('node name from K8S_NODE_NAME, else the hostname', () => {
    assert.equal(nodeNameFromEnv({ K8S_NODE_NAME: 'node-7' }), 'node-7');
    assert.ok(nodeNameFromEnv({}).length > 0);
  });
});
