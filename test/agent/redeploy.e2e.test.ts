/**
 * A traced binary rewritten in place and restarted at once, the way many
 * deploy scripts work (`cat new > app`, `cp new app`, `install`): same
 * inode, other code. Uprobes belong to the inode, so the old code's
 * breakpoints would land in the new code. Real processes, real eBPF; the
 * machine's cores are kept busy by other processes meanwhile.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { startBusyLoad, type BusyLoad } from '../support/busy.ts';
import { textDifferences } from '../support/process-text.ts';
import { until } from '../support/wait.ts';

const skip = skipUnlessBpf();
const goBin = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');
const work = join(repoRoot, 'build', 'test-redeploy');
const CYCLES = 16;
const REQUESTS = 60;
const CONCURRENCY = 6;

describe('binary rewritten in place and restarted at once', { skip }, () => {
  let agent: Agent;
  let busy: BusyLoad;
  const spans: ReadableSpan[] = [];

  before(async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    agent = new Agent(createLogger('warn'), {
      exporter: createExporter({ kind: 'none' }),
      selection: { includeExe: [join(work, '*')] },
      onSpan: (s) => spans.push(s),
      // the load comes from this process, which is also the agent's
      skipOwnRequests: false,
    });
    await agent.start();
    busy = startBusyLoad();
  });

  after(async () => {
    await busy?.stop();
    await agent?.stop();
  });

  test(`${CYCLES} cycles alternating Go 1.26 and Go 1.19 builds: no crash, code intact, every request answered and traced`, async (t) => {
    const app = join(work, 'app');
    const builds = [readFileSync(goBin('go1.26', 'plain')), readFileSync(goBin('go1.19', 'pie'))];
    writeFileSync(app, builds[1]!, { mode: 0o755 });
    const ino = statSync(app, { bigint: true }).ino;
    let server: GoServer | undefined = await startGoServer(app);
    // a failed check must not leave the server running (it would keep this test process alive)
    t.after(() => {
      server?.child.kill('SIGKILL');
    });
    await until('first process traced', () => agent.tracedPids().includes(server!.pid), 10_000);
    let repairedCycles = 0;
    for (let i = 0; i < CYCLES; i++) {
      const stopped: GoServer = server;
      await stopped.stop();
      assert.equal(stopped.child.signalCode, 'SIGTERM', `cycle ${i}: the previous process ended by our SIGTERM, not a crash`);
      // in place: O_TRUNC on the same inode, then exec at once
      writeFileSync(app, builds[i % 2]!);
      assert.equal(statSync(app, { bigint: true }).ino, ino, 'the same inode');
      const heldBefore = agent.totals.repairedBytes;
      const starting = startGoServer(app);
      // every other cycle the /proc scan meets the held process before its
      // exec event is read: it must be continued all the same
      if (i % 2) agent.scan();
      server = await starting;
      const pid = server.pid;
      let stderr = '';
      server.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      await until(`cycle ${i}: process traced`, () => agent.tracedPids().includes(pid), 15_000);

      let next = 0;
      const statuses: number[] = [];
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (next < REQUESTS) {
          next++;
          statuses.push((await httpRequest(`${server!.url}/hello`)).status);
        }
      }));
      assert.equal(statuses.length, REQUESTS);
      assert.ok(statuses.every((s) => s === 200), `cycle ${i}: every request answered 200`);
      assert.equal(server.child.exitCode, null, `cycle ${i}: still running`);
      assert.equal(server.child.signalCode, null, `cycle ${i}: not killed by a signal (${stderr})`);

      // the only difference from the file: breakpoints of the link set attached for this content
      const b = agent.attachments()!.binaries().find((x) => x.pids.has(pid));
      assert.ok(b, 'the binary is attached');
      const sites = new Set(b.sites);
      const diffs = textDifferences(pid, app, ino).filter((d) => !(d.memory === 0xcc && sites.has(d.offset)));
      assert.deepEqual(diffs, [], `cycle ${i}: the process runs exactly the code on disk, apart from current breakpoints`);
      if (agent.totals.repairedBytes > heldBefore) repairedCycles++;

      await until(`cycle ${i}: a span for every request`, () => {
        const n = spans.filter((s) => Number(s.resource.attributes['process.pid']) === pid && s.attributes['url.path'] === '/hello').length;
        return n >= REQUESTS;
      }, 15_000).catch(async () => {
        await agent.flush();
      });
      await agent.flush();
      const mine = spans.filter((s) => Number(s.resource.attributes['process.pid']) === pid && s.attributes['url.path'] === '/hello');
      assert.equal(mine.length, REQUESTS, `cycle ${i}: exactly one span per request`);
    }
    await server.stop();
    assert.equal(server.child.signalCode, 'SIGTERM', 'the last process ended by our SIGTERM');
    process.stderr.write(`# ${CYCLES} in-place rewrites: ${agent.totals.staleExecs} execs met stale probes (${agent.totals.heldProcesses} held at exec), ` +
      `${agent.totals.repairedBytes} code bytes repaired in ${repairedCycles} cycles, busy load ${busy.count} processes\n`);
  });
});
