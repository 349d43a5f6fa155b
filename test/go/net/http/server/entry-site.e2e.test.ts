/**
 * Entry probes of a Go 1.19 binary sit on the stack check's branch (`JBE
 * morestack`), which the kernel emulates, not on the `SUB RSP, N` after it,
 * which it single-steps (a second trap per call): every entry site of the
 * plan is a JBE there and is marked for `gt_probe_enter` to skip the hit
 * that grows the stack; a Go 1.26 binary keeps its sites past the check
 * (its `PUSH RBP` is emulated). Traced, N requests (each on its own
 * connection, so each served on a new goroutine with a small stack) still
 * give exactly N entry hits, N return hits and N spans.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:http';
import { planBinaryAt } from '../../../../../daemon/agent/binary-plan.ts';
import { probes } from '../../../../../daemon/probes/registry.ts';
import { repoRoot, startAgent } from '../../../../support/agent-process.ts';
import { startGoServer, httpRequest } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { sleep } from '../../../../support/wait.ts';
import { bytesAt } from '../../../../support/file-bytes.ts';

const binPath = (tc: string): string => join(repoRoot, 'build', 'go', tc, 'plain', 'httpserver');

/** JBE rel8 (76 cb) or JBE rel32 (0f 86 cd). */
const isJbe = (b: Buffer): boolean => b[0] === 0x76 || (b[0] === 0x0f && b[1] === 0x86);

test('Go 1.19: every entry site is the stack check\'s JBE and marked; Go 1.26 keeps the site past the check', () => {
  for (const tc of ['go1.19', 'go1.26']) {
    const { plan, error } = planBinaryAt(binPath(tc), probes);
    assert.ok(plan, `plan ${tc}: ${error?.message}`);
    const entries = plan.probes.filter((p) => p.attachable).flatMap((p) => p.sites.filter((s) => s.role === 'entry' && s.symbol !== 'runtime.goexit1'));
    assert.ok(entries.length >= 3, `${tc}: entry sites ${entries.map((s) => s.symbol).join(', ')}`);
    for (const s of entries) {
      const code = bytesAt(binPath(tc), s.offsets[0]!, 2);
      if (tc === 'go1.19') {
        assert.equal(s.atStackCheck, true, `${tc} ${s.symbol}: marked`);
        assert.ok(isJbe(code), `${tc} ${s.symbol}: a JBE at the site, found ${code.toString('hex')}`);
      } else {
        assert.equal(s.atStackCheck, undefined, `${tc} ${s.symbol}: not marked`);
        assert.ok(!isJbe(code), `${tc} ${s.symbol}: past the check, found ${code.toString('hex')}`);
      }
    }
  }
});

/** One GET on a connection of its own. */
function freshGet(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

test('Go 1.19 traced with entries on the branch: N requests, N entry and return hits, N spans', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-entry-site');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver-go1.19');
  copyFileSync(binPath('go1.19'), bin);
  const server = await startGoServer(bin);
  try {
    const agent = await startAgent(['--include-exe', bin, '--exporter', 'none']);
    try {
      await agent.waitTraced(server.pid, 60_000);
      const N = 300;
      for (let i = 0; i < N; i++) assert.equal(await freshGet(`${server.url}/hello`), 200);
      await sleep(1500);
      const text = (await httpRequest(await agent.metricsUrl())).body;
      const value = (name: string, labels: Record<string, string>): number => {
        for (const line of text.split('\n')) {
          if (line.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
        }
        return 0;
      };
      assert.equal(value('gotrail_probe_hits_total', { site: 'http_server_entry' }), N, 'one entry hit per request');
      assert.equal(value('gotrail_probe_hits_total', { site: 'http_server_return' }), N, 'one return hit per request');
      assert.equal(value('gotrail_events_total', { type: 'net/http/server' }), N, 'one span per request');
      assert.equal(value('gotrail_events_lost_total', { reason: 'no_entry' }), 0, 'no return without its entry');
    } finally {
      await agent.stop();
    }
  } finally {
    await server.stop();
  }
});
