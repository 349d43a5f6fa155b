/**
 * A real Redis server (Debian's `redis-server`) for a test suite: on
 * loopback, on a free port, its data in a temporary directory, without
 * persistence; stopped and its directory removed by `stop()`.
 *
 * ```ts
 * const redis = await startRedis();   // redis.addr: '127.0.0.1:PORT'
 * …
 * await redis.stop();
 * ```
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where set-up installs it (Debian's redis-server package). */
export const REDIS_SERVER = '/usr/bin/redis-server';

export interface RedisServer {
  /** `127.0.0.1:PORT` */
  addr: string;
  port: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** A TCP port free on loopback right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Starts redis-server and resolves once it accepts connections (10 s at most). */
export async function startRedis(): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-redis-'));
  const port = await freePort();
  const child = spawn(REDIS_SERVER, [
    '--bind', '127.0.0.1', '--port', String(port), '--dir', dir,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'notice', '--logfile', '',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killOnExit = (): void => { child.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  let log = '';
  const ready = new Promise<void>((resolve, reject) => {
    // the deadline is judged after the loop has read what the server wrote:
    // a start-up that held the loop past it (another server's synchronous
    // set-up) must not count a ready server as late
    const timer = setTimeout(() => setImmediate(() => reject(new Error(`redis-server did not start in 10 s:\n${log}`))), 10_000);
    const onData = (d: Buffer): void => {
      log += d.toString();
      if (/Ready to accept connections/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (code ${code}):\n${log}`));
    });
  });
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((r) => {
        child.once('exit', () => r());
        child.kill('SIGTERM');
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await ready;
  } catch (e) {
    // not left running: its open pipes would keep the caller's process alive
    await stop();
    throw e;
  }
  return {
    addr: `127.0.0.1:${port}`,
    port,
    child,
    stop,
  };
}
