/**
 * A Kubernetes API server for exactly the calls gotrail makes: LIST and WATCH
 * of /api/v1/pods. Replies are scripted per request (a queue for lists, one
 * for watches), so a test decides when a watch streams events, returns
 * 410 Gone, drops its connection, or stays open.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
}

export interface PodSpec {
  name: string;
  uid: string;
  namespace?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  owner?: { kind: string; name: string; uid?: string };
  /** [container name, container id as the runtime reports it] */
  containers?: Array<[string, string]>;
  initContainers?: Array<[string, string]>;
  ephemeralContainers?: Array<[string, string]>;
}

/** A pod object as the API server serves it (the fields gotrail reads, plus some it must ignore). */
export function pod(p: PodSpec): Record<string, unknown> {
  const statuses = (list?: Array<[string, string]>): unknown[] | undefined =>
    list?.map(([name, containerID]) => ({ name, containerID, ready: true, restartCount: 0, image: 'example/app:1' }));
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name: p.name,
      namespace: p.namespace ?? 'default',
      uid: p.uid,
      resourceVersion: p.resourceVersion ?? '1',
      labels: p.labels ?? {},
      annotations: p.annotations,
      ownerReferences: p.owner ? [{ apiVersion: 'apps/v1', kind: p.owner.kind, name: p.owner.name, uid: p.owner.uid ?? `${p.owner.name}-uid`, controller: true, blockOwnerDeletion: true }] : undefined,
    },
    spec: { nodeName: 'node-1', containers: (p.containers ?? []).map(([name]) => ({ name, image: 'example/app:1' })) },
    status: {
      phase: 'Running',
      conditions: [{ type: 'Ready', status: 'True' }],
      containerStatuses: statuses(p.containers),
      initContainerStatuses: statuses(p.initContainers),
      ephemeralContainerStatuses: statuses(p.ephemeralContainers),
    },
  };
}

export type ListReply = { status: number; body?: unknown } | { resourceVersion: string; pods: Array<Record<string, unknown>> };

export interface WatchStream {
  event(type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK', object: Record<string, unknown>): void;
  /** An ERROR event carrying a Status, as the API server sends for an expired resourceVersion. */
  error(code: number, reason: string): void;
  /** Raw bytes, to split an event across chunks. */
  raw(text: string): void;
  /** Ends the response properly (the server's watch timeout). */
  end(): void;
  /** Kills the connection mid-stream. */
  drop(): void;
}

export type WatchReply = { status: number } | ((w: WatchStream) => void | Promise<void>);

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  readonly lists: ListReply[] = [];
  readonly watches: WatchReply[] = [];
  private server: Server | undefined;
  private lastList: ListReply = { resourceVersion: '1', pods: [] };

  /** Listens on a free loopback port; over TLS when given a key and certificate. Returns the base URL. */
  async start(tls?: { key: string | Buffer; cert: string | Buffer }): Promise<string> {
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      const url = new URL(req.url ?? '/', 'http://x');
      this.requests.push({ path: url.pathname, query: url.searchParams, headers: req.headers });
      if (req.method !== 'GET' || url.pathname !== '/api/v1/pods') {
        res.writeHead(404).end();
        return;
      }
      if (url.searchParams.get('watch') === 'true') void this.serveWatch(res);
      else this.serveList(res);
    };
    this.server = tls ? createTlsServer(tls, handler) : createServer(handler);
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `${tls ? 'https' : 'http'}://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  listRequests(): RecordedRequest[] {
    return this.requests.filter((r) => r.query.get('watch') !== 'true');
  }

  watchRequests(): RecordedRequest[] {
    return this.requests.filter((r) => r.query.get('watch') === 'true');
  }

  private serveList(res: ServerResponse): void {
    const reply = this.lists.shift() ?? this.lastList;
    if ('status' in reply) {
      res.writeHead(reply.status, { 'Content-Type': 'application/json' }).end(JSON.stringify(reply.body ?? { kind: 'Status', code: reply.status }));
      return;
    }
    this.lastList = reply;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: reply.resourceVersion }, items: reply.pods }));
  }

  private async serveWatch(res: ServerResponse): Promise<void> {
    const reply = this.watches.shift();
    if (reply === undefined) {
      // nothing scripted: an idle watch, open until the test ends
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.flushHeaders();
      return;
    }
    if (typeof reply !== 'function') {
      res.writeHead(reply.status, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: reply.status, reason: 'Gone' }));
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.flushHeaders();
    await reply({
      event: (type, object) => res.write(JSON.stringify({ type, object }) + '\n'),
      error: (code, reason) => res.write(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason, message: `too old resource version` } }) + '\n'),
      raw: (text) => res.write(text),
      end: () => res.end(),
      drop: () => res.socket?.destroy(),
    });
  }
}

/** Polls `cond` until true; fails after `ms`. */
export async function eventually(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));
