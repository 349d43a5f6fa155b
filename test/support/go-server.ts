/** Starts a built Go test server and waits for its "listening on" line. */
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import type { ClientHttp2Session } from 'node:http2';
import https from 'node:https';

export interface GoServer {
  child: ChildProcess;
  pid: number;
  url: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export function startGoServer(bin: string, args: string[] = [], env: Record<string, string> = {}): Promise<GoServer> {
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${bin} did not start in 10 s: ${err}`)), 10_000);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => reject(new Error(`${bin} exited (code ${code}): ${err}`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          child,
          pid: child.pid!,
          url: `http://${m[1]}`,
          stop: () => new Promise<void>((r) => {
            if (child.exitCode !== null || child.signalCode !== null) return r();
            child.once('exit', () => r());
            child.kill('SIGTERM');
          }),
        });
      }
    });
  });
}

export interface HttpResult {
  status: number;
  body: string;
}

export function httpRequest(url: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** The status of a GET of `path` on an open HTTP/2 session, once its response body has been read. */
export function h2Status(session: ClientHttp2Session, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path });
    req.on('response', (h) => {
      req.resume();
      req.on('end', () => resolve(Number(h[':status'])));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The status of a GET of `url` over HTTP/1.1 and TLS on a connection of its own, the (test) certificate unchecked. */
export function httpsStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    https.get(url, { rejectUnauthorized: false, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}
