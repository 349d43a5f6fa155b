/**
 * bench/loadgen, the client of the latency benchmarks, against a server that
 * counts what it receives: closed loop, N timed requests after W warm-up
 * ones, sequential on one keep-alive connection, give N latencies; failed
 * answers are counted, never timed; the open loop still sends rate ×
 * duration requests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../support/agent-process.ts';

const loadgen = join(repoRoot, 'build', 'bench', 'loadgen');

interface Counting { url: string; requests: number; connections: number; maxInFlight: number; close(): Promise<void> }

/** A server answering 200 "ok" (or `status`), counting requests, connections and requests in flight at once. */
async function countingServer(status = 200): Promise<Counting> {
  let inFlight = 0;
  const c = { requests: 0, connections: 0, maxInFlight: 0 };
  const server: Server = createServer((_req, res) => {
    c.requests++;
    c.maxInFlight = Math.max(c.maxInFlight, ++inFlight);
    // answered on a later turn: requests sent at once would overlap here
    setImmediate(() => {
      inFlight--;
      res.writeHead(status, { 'content-type': 'text/plain' }).end('ok\n');
    });
  });
  server.on('connection', () => c.connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const counting: Counting = Object.assign(c, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hello`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  });
  return counting;
}

/** loadgen's JSON; run asynchronously, as the server it loads runs in this process. */
async function runAsync(args: string[]): Promise<Record<string, number | string>> {
  const { stdout } = await promisify(execFile)(loadgen, args, { encoding: 'utf8', timeout: 120_000 });
  return JSON.parse(stdout) as Record<string, number | string>;
}

test('build bench/loadgen', () => {
  mkdirSync(join(repoRoot, 'build', 'bench'), { recursive: true });
  execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });
});

test('closed loop: N requests after W warm-up ones give N latencies, sequential on one connection', async () => {
  const server = await countingServer();
  try {
    const r = await runAsync(['-url', server.url, '-requests', '300', '-warmup', '25']);
    assert.equal(r.mode, 'closed');
    assert.equal(r.requests, 300);
    assert.equal(r.count, 300, 'one latency per timed request');
    assert.equal(r.errors, 0);
    assert.equal(server.requests, 325, 'the warm-up requests are sent, not timed');
    assert.equal(server.connections, 1, 'one keep-alive connection');
    assert.equal(r.connections, 1, 'the client made one connection');
    assert.equal(server.maxInFlight, 1, 'one request at a time');
    const [p50, p99, max] = [r.p50us, r.p99us, r.maxus] as number[];
    assert.ok(p50! > 0 && p50! <= p99! && p99! <= max!, `0 < p50 ${p50} ≤ p99 ${p99} ≤ max ${max}`);
  } finally {
    await server.close();
  }
});

test('closed loop: answers of 500 and above are counted as errors, not timed', async () => {
  const server = await countingServer(503);
  try {
    const r = await runAsync(['-url', server.url, '-requests', '20', '-warmup', '3']);
    assert.equal(r.count, 0);
    assert.equal(r.errors, 20);
    assert.equal(server.requests, 23);
  } finally {
    await server.close();
  }
});

test('open loop: rate × duration requests, all answered', async () => {
  const server = await countingServer();
  try {
    const r = await runAsync(['-url', server.url, '-rate', '200', '-duration', '500ms']);
    assert.equal(r.mode, 'open');
    assert.equal(r.sent, 100);
    assert.equal(r.responses, 100);
    assert.equal(r.ok, 100);
    assert.equal(server.requests, 100);
  } finally {
    await server.close();
  }
});
