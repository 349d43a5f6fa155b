/**
 * Every return probe finds its entry: the scenarios of the server end-to-end
 * suite (every Go toolchain × plain, stripped, PIE; keep-alive and
 * concurrent requests, panics, outgoing calls, HTTP/2), plus processes of one
 * binary restarted back to back (a link set released while the next one is
 * attached), under one agent that records every probe hit. The lost-event
 * counter `no_entry` must stay 0; when it does not, the failure names the
 * cause of each miss from the probe-hit log.
 *
 * Apart from that, a request already running when its process is attached
 * is the one expected miss: it is counted as `no_entry_preattach`, and only
 * there.
 *
 * GOTRAIL_NO_ENTRY_ROUNDS=N repeats the scenario N times (default 1).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:http2';
import { startAgent, repoRoot, type AgentProcess } from '../../../../support/agent-process.ts';
import { h2Status, startGoServer, httpRequest, type GoServer } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { until } from '../../../../support/wait.ts';
import { countByCause, explainMisses, readHits } from '../../../../support/probe-hits.ts';

const skip = skipUnlessBpf();
const toolchains = ['go1.19', 'go1.26', 'go1.27'];
const variants = ['plain', 'stripped', 'pie'];
const binPath = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');
const rounds = Number(process.env['GOTRAIL_NO_ENTRY_ROUNDS'] ?? 1);

async function lostCounters(agent: AgentProcess): Promise<Record<string, number>> {
  const text = (await httpRequest(await agent.metricsUrl())).body;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^gotrail_events_lost_total\{reason="([^"]+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** The misses the probe-hit log explains, for the failure message. */
function explain(path: string): string {
  const misses = explainMisses(readHits(path));
  return `misses by cause: ${JSON.stringify(countByCause(misses))}; first: ${JSON.stringify(misses.slice(0, 3).map((m) => ({ cause: m.cause, hit: m.line.hit, tgid: m.line.tgid, goid: m.line.goid, cookie: m.line.cookie })))}`;
}

async function concurrent(url: string, total: number, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++;
      const r = await httpRequest(`${url}${i % 10 === 0 ? '/status/500' : `/hello?i=${i}`}`);
      assert.ok(r.status === 200 || r.status === 500);
    }
  }));
}

async function exercise(server: GoServer): Promise<void> {
  for (let i = 0; i < 10; i++) assert.equal((await httpRequest(`${server.url}/hello?i=${i}`)).status, 200);
  assert.equal((await httpRequest(`${server.url}/sleep?ms=20`)).status, 200);
  assert.equal((await httpRequest(`${server.url}/echo`, { method: 'POST', body: Buffer.alloc(64 * 1024, 120) })).status, 200);
  assert.equal((await httpRequest(`${server.url}/proxy?to=${encodeURIComponent(server.url + '/status/201')}`)).status, 201);
  assert.equal((await httpRequest(`${server.url}/proxy?to=${encodeURIComponent('http://127.0.0.1:1/refused')}`)).status, 502);
  await assert.rejects(httpRequest(`${server.url}/panic`));
  await concurrent(server.url, 100, 16);
}

async function exerciseH2(server: GoServer): Promise<void> {
  const session = connect(server.url.replace('http://', 'https://'), { rejectUnauthorized: false });
  try {
    const statuses = await Promise.all(['/hello', '/status/503', '/status/201', '/sleep?ms=10'].map((path) => h2Status(session, path)));
    assert.deepEqual(statuses, [200, 503, 201, 200]);
  } finally {
    session.close();
  }
}

describe('return probes find their entries', { skip }, () => {
  let dir: string;
  let failed = false;
  before(() => {
    for (const tc of toolchains) for (const v of variants) assert.ok(existsSync(binPath(tc, v)), `${binPath(tc, v)} missing: run bash deploy/setup.sh`);
    dir = mkdtempSync(join(tmpdir(), 'gotrail-no-entry-'));
  });
  // a failure keeps the probe-hit logs for a closer look
  after(() => void (failed || rmSync(dir, { recursive: true, force: true })));

  for (let round = 1; round <= rounds; round++) {
    test(`round ${round}: every scenario of the server suite, no return without its entry`, async (t) => {
      const hits = join(dir, `hits-${round}.jsonl`);
      const agent = await startAgent(['--exporter', 'none', '--include-exe', join(repoRoot, 'build', 'go', '**'), '--debug-probe-hits', hits]);
      try {
        for (const tc of toolchains) {
          for (const v of variants) {
            const server = await startGoServer(binPath(tc, v));
            try {
              await agent.waitTraced(server.pid);
              await exercise(server);
            } finally {
              await server.stop();
            }
          }
        }
        for (const [tc, v] of [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'pie']] as const) {
          const server = await startGoServer(binPath(tc, v), ['-tls']);
          try {
            await agent.waitTraced(server.pid);
            await exerciseH2(server);
          } finally {
            await server.stop();
          }
        }
        // one binary, processes back to back: the next one is attached while
        // the link set of the last one is being released
        for (let i = 0; i < 6; i++) {
          const server = await startGoServer(binPath('go1.26', 'pie'));
          try {
            await agent.waitTraced(server.pid);
            await concurrent(server.url, i === 5 ? 2000 : 100, 32);
          } finally {
            await server.stop();
          }
        }
        await new Promise((r) => setTimeout(r, 300));
        const lost = await lostCounters(agent);
        failed ||= lost['no_entry'] !== 0;
        t.diagnostic(`lost: ${JSON.stringify(lost)}; ${explain(hits)}`);
        assert.equal(lost['no_entry'], 0, `every return found its entry: ${JSON.stringify(lost)}; ${explain(hits)} (log: ${hits})`);
        assert.equal(lost['no_entry_preattach'], 0, 'no request was running before its process was attached');
      } finally {
        assert.equal(await agent.stop(), 0);
      }
    });
  }

  test('a request running when its process is attached is counted apart, as no_entry_preattach', async () => {
    const server = await startGoServer(binPath('go1.26', 'plain'));
    const hits = join(dir, 'hits-preattach.jsonl');
    let agent: AgentProcess | undefined;
    try {
      // in flight before the agent exists: its entry is never seen. /hold
      // answers at SIGUSR1, sent once the process is traced, so the request
      // spans the attach however long the agent takes to start
      let held = 0;
      server.child.stdout!.on('data', (d: Buffer) => (held += d.toString().split('\n').filter((l) => l === 'held').length));
      const slow = httpRequest(`${server.url}/hold`);
      await until('the request held', () => held === 1, 15_000);
      agent = await startAgent(['--exporter', 'none', '--include-exe', join(repoRoot, 'build', 'go', '**'), '--debug-probe-hits', hits]);
      await agent.waitTraced(server.pid);
      server.child.kill('SIGUSR1');
      assert.equal((await slow).status, 200);
      // the same connection (and goroutine) serves more requests: all paired
      for (let i = 0; i < 5; i++) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
      await new Promise((r) => setTimeout(r, 300));
      const lost = await lostCounters(agent);
      failed ||= lost['no_entry'] !== 0;
      assert.equal(lost['no_entry_preattach'], 1, `the request that began before the agent: ${JSON.stringify(lost)}`);
      assert.equal(lost['no_entry'], 0, `nothing else: ${JSON.stringify(lost)}; ${explain(hits)}`);
    } finally {
      await server.stop();
      if (agent) assert.equal(await agent.stop(), 0);
    }
  });
});
