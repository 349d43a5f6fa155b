/**
 * The handler of the benchmarks' http-sql scenario (test/programs/http-sql),
 * traced as `npm run bench` traces it: each GET /work?to=<its own /hello>,
 * sent by bench/loadgen's closed loop, answers "200 teapot" and gives one
 * trace of four spans: the /work SERVER span, its HTTP CLIENT span and SQL
 * CLIENT span (SELECT items, sqlite), and the /hello SERVER span under the
 * HTTP client span; GET /call (the http-client scenario's) makes the call
 * alone. Built by set-up for Go 1.26 and 1.27.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ReceivedSpan } from '../support/collector.ts';
import { repoRoot } from '../support/agent-process.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { freshCopy, tracedCollector } from '../support/traced-collector.ts';

const N = 25;
const TOOLCHAINS = ['go1.26', 'go1.27'] as const;
const copies = join(repoRoot, 'build', 'e2e-http-sql');
const loadgen = join(repoRoot, 'build', 'bench', 'loadgen');

describe('http-sql: the benchmark handler with an HTTP call and a SQL query, traced', { skip: skipUnlessBpf() }, () => {
  const traced = tracedCollector(['--include-exe', `${copies}/**`]);

  for (const tc of TOOLCHAINS) {
    test(`${tc}: ${N} closed-loop requests, each one trace of /work, its HTTP and SQL calls and /hello; /call without SQL`, async () => {
      const built = join(repoRoot, 'build', 'go', tc, 'plain', 'http-sql');
      assert.ok(existsSync(built), `${built} missing: run bash deploy/setup.sh`);
      mkdirSync(join(repoRoot, 'build', 'bench'), { recursive: true });
      execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });
      const server = await startGoServer(freshCopy(copies, tc, 'plain', 'http-sql'));
      try {
        await traced.agent.waitTraced(server.pid);
        const to = encodeURIComponent(`${server.url}/hello`);
        const url = `${server.url}/work?to=${to}`;
        const alone = await httpRequest(`${server.url}/call?to=${to}`);
        assert.equal(alone.status, 200, alone.body);
        assert.equal(alone.body, '200\n');
        const one = await httpRequest(url);
        assert.equal(one.status, 200, one.body);
        assert.equal(one.body, '200 teapot\n');
        const { stdout } = await promisify(execFile)(loadgen, ['-url', url, '-requests', String(N - 1)], { encoding: 'utf8', timeout: 120_000 });
        const load = JSON.parse(stdout) as { count: number; errors: number; connections: number };
        assert.deepEqual({ count: load.count, errors: load.errors, connections: load.connections }, { count: N - 1, errors: 0, connections: 1 });

        const servers = await traced.serverSpans(server, 2 * N + 2);
        const all = (await traced.collector.spans()).filter((s) => s.resource['process.pid'] === server.pid);
        const byId = new Map(all.map((s) => [s.spanId, s]));
        const children = (p: ReceivedSpan): ReceivedSpan[] => all.filter((s) => s.parentSpanId === p.spanId && s.traceId === p.traceId);
        const work = servers.filter((s) => s.attributes['url.path'] === '/work');
        const hello = servers.filter((s) => s.attributes['url.path'] === '/hello');
        assert.equal(work.length, N, 'one /work SERVER span per request');
        assert.equal(hello.length, N + 1, 'one /hello SERVER span per call');
        const callSpans = servers.filter((s) => s.attributes['url.path'] === '/call');
        assert.equal(callSpans.length, 1);
        assert.deepEqual(children(callSpans[0]!).map((s) => [s.kind, s.attributes['http.request.method']]), [['CLIENT', 'GET']], '/call: the HTTP call, no query');
        for (const w of work) {
          assert.equal(w.parentSpanId, '', '/work is a root: loadgen is not traced');
          const kids = children(w);
          const http = kids.filter((s) => s.kind === 'CLIENT' && s.attributes['http.request.method'] === 'GET');
          const sql = kids.filter((s) => s.kind === 'CLIENT' && s.attributes['db.system.name'] === 'sqlite');
          assert.equal(http.length, 1, `one HTTP CLIENT child of /work: ${kids.map((k) => k.name).join(', ')}`);
          assert.equal(sql.length, 1, `one SQL CLIENT child of /work: ${kids.map((k) => k.name).join(', ')}`);
          assert.equal(kids.length, 2, 'no other child');
          assert.equal(sql[0]!.name, 'SELECT items');
          const called = children(http[0]!);
          assert.equal(called.length, 1, 'the call reaches one /hello SERVER span');
          assert.equal(called[0]!.attributes['url.path'], '/hello');
        }
        for (const h of hello) assert.equal(byId.get(h.parentSpanId)?.kind, 'CLIENT', '/hello is the HTTP call\'s child');
      } finally {
        await server.stop();
      }
    });
  }
});
