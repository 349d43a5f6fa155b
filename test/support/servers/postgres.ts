/**
 * A real PostgreSQL server for the tests, from Debian's `postgresql`
 * package (installed by deploy/setup.sh): a fresh cluster in a temporary
 * directory, listening on a free loopback port, trust authentication, run as
 * the package's `postgres` user (PostgreSQL refuses to run as root), and
 * stopped and removed with {@link PostgresServer.stop}.
 *
 * ```ts
 * const pg = await startPostgres();
 * try { … pg.url … } finally { await pg.stop(); }
 * ```
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PostgresServer {
  host: string;
  port: number;
  /** The database the tests use. */
  database: string;
  /** `postgres://postgres@127.0.0.1:PORT/DATABASE?sslmode=disable` */
  url: string;
  /** Stops the server (fast shutdown) and removes its data directory. */
  stop(): Promise<void>;
}

/** The newest PostgreSQL Debian installed (`/usr/lib/postgresql/<major>/bin`), or why there is none. */
export function postgresBinDir(): string | { skip: string } {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a)) : [];
  const dir = majors.map((m) => join(root, m, 'bin')).find((d) => existsSync(join(d, 'postgres')));
  return dir ?? { skip: 'PostgreSQL is not installed (deploy/setup.sh installs Debian\'s postgresql package)' };
}

/** A TCP port free on loopback now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function userIds(name: string): { uid: number; gid: number } {
  return { uid: Number(execFileSync('id', ['-u', name]).toString()), gid: Number(execFileSync('id', ['-g', name]).toString()) };
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** Starts a PostgreSQL server; rejects with its log when it is not ready within 60 s. */
export async function startPostgres(opts: { database?: string } = {}): Promise<PostgresServer> {
  const bin = postgresBinDir();
  if (typeof bin !== 'string') throw new Error(bin.skip);
  const ids = userIds('postgres');
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-pg-'));
  chownSync(dir, ids.uid, ids.gid);
  const data = join(dir, 'data');
  const asPostgres = { uid: ids.uid, gid: ids.gid, cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } };
  // initdb and createdb run asynchronously: they take seconds on a busy
  // machine, during which the caller's loop (other servers' readiness, an agent) would stand still
  try {
    await run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8'], asPostgres);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const port = await freePort();
  const database = opts.database ?? 'gotrail';
  const child = spawn(join(bin, 'postgres'), [
    '-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200',
  ], { ...asPostgres, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => { live.delete(child); r(); }));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT'); // fast shutdown
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`postgres exited (code ${child.exitCode}):\n${log}`);
    }
    try {
      await run(join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', database], asPostgres);
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`postgres did not accept connections in 60 s: ${(e as Error).message}\n${log}`, { cause: e });
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { host: '127.0.0.1', port, database, url: `postgres://postgres@127.0.0.1:${port}/${database}?sslmode=disable`, stop };
}
