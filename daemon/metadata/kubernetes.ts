/**
 * Kubernetes metadata of the pods on this node, kept current by a LIST then
 * WATCH of `/api/v1/pods?fieldSelector=spec.nodeName=<node>` (the only calls
 * made, hence only `list` and `watch` on pods in the RBAC role). Pods are
 * indexed by container id and by pod UID, so a process found through
 * /proc/PID/cgroup can be named by namespace, pod, container and owner.
 *
 * A process may start before its pod's event reaches us (the container's id
 * appears in `status.containerStatuses` only once it runs). Lookups never
 * wait: callers register {@link PodWatcher.onChange} and look again when the
 * pod they missed is added or modified. A callback, rather than a
 * `waitFor(containerId)`, keeps the agent's scan loop free of pending promises
 * and also tells it when labels change on a pod already traced.
 *
 * Protocol points handled: the watch resumes from the last resourceVersion
 * seen (events and bookmarks); `410 Gone` (as an HTTP status or as an ERROR
 * event) means that version left the API server's window, so the pods are
 * listed again and the difference is reported as changes; any other failure
 * (refused, dropped stream, 5xx, 401/403) is retried with exponential backoff
 * from the last version. The list uses `resourceVersion=0`, served from the
 * API server's watch cache rather than etcd, which matters when every node
 * of a large cluster lists at once; a slightly stale answer is caught up by
 * the watch.
 *
 * Memory is bounded: each pod keeps only the fields the lookups need, at most
 * {@link PodWatcherOptions.maxPods} pods are held, and one watch event or list
 * body larger than its limit aborts the stream instead of buffering it.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { hostname } from 'node:os';
import type { Logger } from '../util/log.ts';
import { normalizeContainerId } from './container.ts';
import { podLookup, toRecord, uidsOf, type PodLookup, type PodObject, type PodRecord } from './kubernetes-attributes.ts';

// node:http through getBuiltinModule, not import: an ES import of node:http
// evaluates its lazy WebSocket exports, which loads Node's bundled undici
// (~2 MiB of heap the agent never uses).
const { request: httpRequest } = process.getBuiltinModule('node:http');
const { request: httpsRequest } = process.getBuiltinModule('node:https');

export { kubernetesAttributes, ownerAttributes, type PodLookup } from './kubernetes-attributes.ts';

/** Where Kubernetes mounts a pod's service-account credentials. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubernetesConnection {
  /** API server URL, e.g. `https://10.96.0.1:443`; a path prefix is kept. */
  baseUrl: string;
  /**
   * Bearer token, or a function called before every request: projected
   * service-account tokens are rotated by the kubelet (about hourly), so the
   * in-cluster connection re-reads the file. Default: no Authorization header.
   */
  token?: string | (() => string | undefined);
  /** CA bundle that signs the API server's certificate. Default: the system CAs. */
  ca?: string | Buffer;
}

/**
 * The in-cluster connection: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`
 * and the service-account token. Undefined outside a cluster (either missing),
 * in which case nothing should be attempted.
 */
export function inClusterConnection(env: NodeJS.ProcessEnv = process.env, serviceAccountDir: string = SERVICE_ACCOUNT_DIR): KubernetesConnection | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  const tokenPath = `${serviceAccountDir}/token`;
  if (!host || !port || !existsSync(tokenPath)) return undefined;
  let ca: Buffer | undefined;
  try {
    ca = readFileSync(`${serviceAccountDir}/ca.crt`);
  } catch {
    ca = undefined; // API server with a publicly trusted certificate
  }
  const token = (): string | undefined => {
    try {
      return readFileSync(tokenPath, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  return { baseUrl: `https://${host.includes(':') ? `[${host}]` : host}:${port}`, token, ca };
}

/** This node's name as the API server knows it: `K8S_NODE_NAME` (set from `spec.nodeName`), else the hostname. */
export function nodeNameFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.K8S_NODE_NAME || hostname();
}

export interface PodChange {
  type: 'added' | 'modified' | 'deleted';
  /** The pod's UID, plus the static-pod config hash (the UID its cgroup carries) for mirror pods. */
  podUids: string[];
  /** Container ids of the pod, before and after the change. */
  containerIds: string[];
}

export interface PodWatcherOptions {
  connection: KubernetesConnection;
  /** Default: {@link nodeNameFromEnv}. */
  nodeName?: string;
  /** First retry delay after a failure; doubles per consecutive failure, with jitter. Default 500 ms. */
  backoffInitialMs?: number;
  /** Longest retry delay. Default 30 000 ms. */
  backoffMaxMs?: number;
  /**
   * Server-side duration of one watch request (the API server then ends it and
   * we resume from the last version). Jittered up to twice this so that the
   * agents of a cluster do not reconnect in step. Default 300 s.
   */
  watchTimeoutSeconds?: number;
  /** Timeout of one list request. Default 30 000 ms. */
  listTimeoutMs?: number;
  /** Most pods held (the kubelet's default limit is 110 per node). Default 2000. */
  maxPods?: number;
  /** Largest list response body. Default 64 MiB. */
  maxListBytes?: number;
  /** Largest single watch event. Default 8 MiB. */
  maxEventBytes?: number;
}

export interface PodWatcherStats {
  pods: number;
  lists: number;
  /** lists after the first: 410 Gone or an ERROR event. */
  relists: number;
  watches: number;
  /** watch or list attempts that failed and were retried */
  failures: number;
  events: number;
  /** pods not held because of maxPods */
  podsDropped: number;
}

class HttpStatusError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The watch window moved past our resourceVersion: list again. */
class ExpiredError extends Error {}

const GONE = 410;

/**
 * Pods of one node, from the Kubernetes API. {@link start} begins listing in
 * the background; lookups answer from memory at any time.
 */
export class PodWatcher {
  readonly nodeName: string;
  private readonly log: Logger;
  private readonly conn: KubernetesConnection;
  private readonly o: Required<Omit<PodWatcherOptions, 'connection' | 'nodeName'>>;
  private readonly pods = new Map<string, PodRecord>();
  private readonly byContainer = new Map<string, string>();
  private readonly byMirror = new Map<string, string>();
  private readonly listeners = new Set<(c: PodChange) => void>();
  private resourceVersion = '';
  private isSynced = false;
  private readonly syncWaiters = new Set<() => void>();
  private stopped = true;
  private loop: Promise<void> | undefined;
  private inflight: ClientRequest | undefined;
  private wake: (() => void) | undefined;
  private consecutiveFailures = 0;
  readonly stats: PodWatcherStats = { pods: 0, lists: 0, relists: 0, watches: 0, failures: 0, events: 0, podsDropped: 0 };

  constructor(log: Logger, opts: PodWatcherOptions) {
    this.log = log;
    this.conn = opts.connection;
    this.nodeName = opts.nodeName ?? nodeNameFromEnv();
    this.o = {
      backoffInitialMs: opts.backoffInitialMs ?? 500,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
      listTimeoutMs: opts.listTimeoutMs ?? 30_000,
      maxPods: opts.maxPods ?? 2000,
      maxListBytes: opts.maxListBytes ?? 64 * 1024 * 1024,
      maxEventBytes: opts.maxEventBytes ?? 8 * 1024 * 1024,
    };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.log.info('watching Kubernetes pods of this node', { api: this.conn.baseUrl, node: this.nodeName });
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.inflight?.destroy();
    this.wake?.();
    await this.loop;
    this.loop = undefined;
    for (const w of this.syncWaiters) w();
  }

  /** Whether the first list has completed. */
  synced(): boolean {
    return this.isSynced;
  }

  /** Resolves true once the first list has completed, false after `timeoutMs` or on stop. */
  whenSynced(timeoutMs: number): Promise<boolean> {
    if (this.isSynced) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.syncWaiters.delete(done);
        resolve(this.isSynced);
      };
      const t = setTimeout(done, timeoutMs);
      this.syncWaiters.add(done);
    });
  }

  /** Calls `listener` for every pod added, deleted, or modified in what lookups return. Returns its removal. */
  onChange(listener: (c: PodChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The pod of a container (any id form: `containerd://…` or bare), else the
   * pod with UID `podUid` (also a static pod's config hash) without container
   * facts. Undefined when neither is known (yet).
   */
  lookup(containerId: string | undefined, podUid?: string): PodLookup | undefined {
    let uid: string | undefined;
    let container: string | undefined;
    if (containerId) {
      const id = normalizeContainerId(containerId);
      uid = this.byContainer.get(id);
      if (uid) container = this.pods.get(uid)?.containers.get(id);
    }
    if (!uid && podUid) uid = this.pods.has(podUid) ? podUid : this.byMirror.get(podUid);
    const pod = uid ? this.pods.get(uid) : undefined;
    if (!pod) return undefined;
    return podLookup(pod, this.nodeName, container);
  }

  podCount(): number {
    return this.pods.size;
  }

  private async run(): Promise<void> {
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        const started = Date.now();
        const events = this.stats.events;
        await this.watch();
        // a healthy watch ends after its timeout; one that ends at once with
        // nothing to say would spin, so it counts as a failure
        if (this.stats.events === events && Date.now() - started < 1000) throw new Error('watch ended immediately');
        this.recovered();
      } catch (e) {
        if (this.stopped) break;
        if (e instanceof ExpiredError) {
          this.log.debug('pod watch expired; listing again', { resourceVersion: this.resourceVersion, reason: e.message });
          needList = true;
          continue;
        }
        this.failed(e as Error);
        await this.sleep(this.backoff());
      }
    }
  }

  private recovered(): void {
    if (this.consecutiveFailures > 0) this.log.info('Kubernetes API reachable again', { after: this.consecutiveFailures });
    this.consecutiveFailures = 0;
  }

  private failed(e: Error): void {
    this.stats.failures++;
    this.consecutiveFailures++;
    const status = e instanceof HttpStatusError ? e.status : undefined;
    const fields = { api: this.conn.baseUrl, error: e.message, retry: this.consecutiveFailures };
    // one warning per outage, not per retry
    if (this.consecutiveFailures > 1) this.log.debug('Kubernetes API still failing', fields);
    else if (status === 401 || status === 403) this.log.warn('Kubernetes API refused the pod list/watch: the service account needs list and watch on pods', fields);
    else this.log.warn('Kubernetes API request failed; retrying with backoff', fields);
  }

  private backoff(): number {
    const exp = Math.min(this.o.backoffMaxMs, this.o.backoffInitialMs * 2 ** Math.min(this.consecutiveFailures - 1, 30));
    return exp / 2 + Math.random() * (exp / 2);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private query(extra: Record<string, string>): string {
    const q = new URLSearchParams({ fieldSelector: `spec.nodeName=${this.nodeName}`, ...extra });
    return `/api/v1/pods?${q.toString()}`;
  }

  private async list(): Promise<void> {
    const res = await this.request(this.query({ resourceVersion: '0' }), this.o.listTimeoutMs);
    const body = await readBody(res, this.o.maxListBytes);
    if (res.statusCode === GONE) throw new ExpiredError('list: 410 Gone');
    if (res.statusCode !== 200) throw new HttpStatusError(res.statusCode ?? 0, `list pods: HTTP ${res.statusCode}: ${body.slice(0, 200)}`);
    const parsed = JSON.parse(body) as { metadata?: { resourceVersion?: string }; items?: PodObject[] };
    const rv = parsed.metadata?.resourceVersion;
    if (!rv) throw new Error('list pods: response without metadata.resourceVersion');
    if (this.stats.lists > 0) this.stats.relists++;
    this.stats.lists++;
    this.replaceAll(parsed.items ?? []);
    this.resourceVersion = rv;
    this.recovered();
    if (!this.isSynced) {
      this.isSynced = true;
      this.log.debug('Kubernetes pods listed', { pods: this.pods.size, resourceVersion: rv });
      for (const w of [...this.syncWaiters]) w();
    }
  }

  private async watch(): Promise<void> {
    const base = this.o.watchTimeoutSeconds;
    const timeoutSeconds = Math.round(base * (1 + Math.random()));
    const path = this.query({ watch: 'true', resourceVersion: this.resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) });
    // the server ends the watch itself; silence well past that is a dead connection
    const res = await this.request(path, (timeoutSeconds + 30) * 1000);
    this.stats.watches++;
    if (res.statusCode === GONE) {
      res.resume();
      throw new ExpiredError('watch: HTTP 410 Gone');
    }
    if (res.statusCode !== 200) {
      const body = await readBody(res, 64 * 1024).catch(() => '');
      throw new HttpStatusError(res.statusCode ?? 0, `watch pods: HTTP ${res.statusCode}: ${body.slice(0, 200)}`);
    }
    let pending = '';
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        pending += chunk.toString('utf8');
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (line) this.applyEvent(line);
        }
        if (pending.length > this.o.maxEventBytes) throw new Error(`watch pods: one event exceeds ${this.o.maxEventBytes} bytes`);
      }
    } catch (e) {
      res.destroy();
      throw e;
    }
    if (!res.complete) throw new Error('watch pods: connection dropped');
    if (pending.trim()) this.applyEvent(pending.trim());
  }

  private applyEvent(line: string): void {
    let ev: { type?: string; object?: PodObject & { code?: number; message?: string; reason?: string } };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      throw new Error('watch pods: malformed event');
    }
    const obj = ev.object;
    if (ev.type === 'ERROR') {
      if (obj?.code === GONE) throw new ExpiredError(`watch: ERROR ${obj.reason ?? ''} ${obj.message ?? ''}`.trim());
      throw new HttpStatusError(obj?.code ?? 0, `watch pods: ERROR event: ${obj?.message ?? line.slice(0, 200)}`);
    }
    this.stats.events++;
    const rv = obj?.metadata?.resourceVersion;
    if (ev.type === 'ADDED' || ev.type === 'MODIFIED') {
      if (obj) this.upsert(obj);
    } else if (ev.type === 'DELETED') {
      const uid = obj?.metadata?.uid;
      if (uid) this.remove(uid);
    }
    // BOOKMARK carries only a version
    if (rv) this.resourceVersion = rv;
  }

  private replaceAll(items: PodObject[]): void {
    const seen = new Set<string>();
    for (const item of items) {
      const uid = item.metadata?.uid;
      if (uid) seen.add(uid);
    }
    // pods deleted while we were not watching
    for (const uid of [...this.pods.keys()]) if (!seen.has(uid)) this.remove(uid);
    for (const item of items) this.upsert(item);
  }

  private upsert(o: PodObject): void {
    const rec = toRecord(o);
    if (!rec) return;
    const old = this.pods.get(rec.uid);
    if (old && old.signature === rec.signature) return;
    if (!old && this.pods.size >= this.o.maxPods) {
      this.stats.podsDropped++;
      this.log.once('k8s.maxPods', `more than ${this.o.maxPods} pods on this node: the others get no Kubernetes metadata`, { node: this.nodeName });
      return;
    }
    if (old) this.unindex(old);
    this.pods.set(rec.uid, rec);
    for (const id of rec.containers.keys()) this.byContainer.set(id, rec.uid);
    if (rec.mirrorOf) this.byMirror.set(rec.mirrorOf, rec.uid);
    this.stats.pods = this.pods.size;
    const ids = new Set(rec.containers.keys());
    for (const id of old?.containers.keys() ?? []) ids.add(id);
    this.emit({ type: old ? 'modified' : 'added', podUids: uidsOf(rec), containerIds: [...ids] });
  }

  private remove(uid: string): void {
    const old = this.pods.get(uid);
    if (!old) return;
    this.unindex(old);
    this.pods.delete(uid);
    this.stats.pods = this.pods.size;
    this.emit({ type: 'deleted', podUids: uidsOf(old), containerIds: [...old.containers.keys()] });
  }

  private unindex(rec: PodRecord): void {
    for (const id of rec.containers.keys()) if (this.byContainer.get(id) === rec.uid) this.byContainer.delete(id);
    if (rec.mirrorOf && this.byMirror.get(rec.mirrorOf) === rec.uid) this.byMirror.delete(rec.mirrorOf);
  }

  private emit(c: PodChange): void {
    for (const l of this.listeners) {
      try {
        l(c);
      } catch (e) {
        this.log.once('k8s.listener', 'a pod change listener failed', { error: (e as Error).message });
      }
    }
  }

  private request(path: string, idleTimeoutMs: number): Promise<IncomingMessage> {
    const url = new URL(this.conn.baseUrl.replace(/\/+$/, '') + path);
    const token = typeof this.conn.token === 'function' ? this.conn.token() : this.conn.token;
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': 'gotrail' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const opts: RequestOptions & { ca?: string | Buffer } = { method: 'GET', headers };
    if (this.conn.ca) opts.ca = this.conn.ca;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      if (this.stopped) {
        reject(new Error('stopped'));
        return;
      }
      const req = send(url, opts, (res) => {
        res.on('close', () => {
          if (this.inflight === req) this.inflight = undefined;
        });
        resolve(res);
      });
      this.inflight = req;
      req.setTimeout(idleTimeoutMs, () => req.destroy(new Error(`no data from the API server for ${idleTimeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    });
  }
}

async function readBody(res: IncomingMessage, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      res.destroy();
      throw new Error(`response larger than ${max} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
