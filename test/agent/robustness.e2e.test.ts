/**
 * The agent keeps serving when processes misbehave around it: a process that
 * becomes Go by exec in the same pid, a binary replaced on disk while a
 * process of the old one runs, non-Go and script executables, processes that
 * exit before they can be attached.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { until } from '../support/wait.ts';
import { binaryLinkSets } from '../support/link-sets.ts';

const goBin = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');
const work = join(repoRoot, 'build', 'test-robustness');


describe('agent robustness', { skip: skipUnlessBpf() }, () => {
  let agent: Agent;
  const spans: ReadableSpan[] = [];
  const logLines: string[] = [];
  const pidSpans = (pid: number): ReadableSpan[] => spans.filter((s) => s.resource.attributes['process.pid'] === pid);

  before(async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    const log = createLogger('debug', (l) => void logLines.push(l));
    agent = new Agent(log, {
      // the test's own requests are the traced programs' traffic
      skipOwnRequests: false,
      exporter: createExporter({ kind: 'none' }),
      selection: { includeExe: [join(work, '*')] },
      onSpan: (s) => spans.push(s),
      batcher: { scheduledDelayMillis: 100 },
    });
    await agent.start();
  });

  after(async () => {
    await agent?.stop();
  });

  test('a process that execs into a Go program keeps its pid and is traced from the exec', async () => {
    const bin = join(work, 'exec-target');
    copyFileSync(goBin('go1.26', 'plain'), bin);
    const child = spawn('sh', ['-c', `sleep 0.3; exec "${bin}"`], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await until('the exec\'d server listens', () => /listening on (\S+)/.test(out));
      await until('the same pid traced after exec', () => agent.tracedPids().includes(child.pid!));
      await httpRequest(`http://${/listening on (\S+)/.exec(out)![1]}/hello`);
      await agent.flush();
      await until('a span from the exec\'d process', () => pidSpans(child.pid!).length === 1);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a binary replaced on disk: old and new processes are both traced, as two binaries', async () => {
    const bin = join(work, 'replaced');
    copyFileSync(goBin('go1.19', 'plain'), bin);
    const old = await startGoServer(bin);
    // replace the file the way package managers do: a new file renamed over the old path
    copyFileSync(goBin('go1.27', 'plain'), `${bin}.new`);
    renameSync(`${bin}.new`, bin);
    const fresh = await startGoServer(bin);
    try {
      await until('both traced', () => agent.tracedPids().includes(old.pid) && agent.tracedPids().includes(fresh.pid));
      const mine = agent.attachments()!.binaries().filter((b) => b.pids.has(old.pid) || b.pids.has(fresh.pid));
      assert.equal(mine.length, 2, 'two distinct binaries behind one path');
      await httpRequest(`${old.url}/hello`);
      await httpRequest(`${fresh.url}/hello`);
      await agent.flush();
      await until('a span from each', () => pidSpans(old.pid).length === 1 && pidSpans(fresh.pid).length === 1);
      assert.match(String(pidSpans(old.pid)[0]!.resource.attributes['process.runtime.version']), /^go1\.19/);
      assert.match(String(pidSpans(fresh.pid)[0]!.resource.attributes['process.runtime.version']), /^go1\.27/);
    } finally {
      await old.stop();
      await fresh.stop();
    }
  });

  test('non-Go programs and scripts are skipped quietly; Go processes keep being traced', async () => {
    const script = join(work, 'script.sh');
    writeFileSync(script, '#!/bin/sh\nsleep 2\n', { mode: 0o755 });
    const sleeper = join(work, 'sleep');
    copyFileSync('/bin/sleep', sleeper);
    const a = spawn(script, [], { stdio: 'ignore' });
    const b = spawn(sleeper, ['2'], { stdio: 'ignore' });
    const bin = join(work, 'alongside');
    copyFileSync(goBin('go1.26', 'stripped'), bin);
    const go = await startGoServer(bin);
    try {
      await until('the Go process traced', () => agent.tracedPids().includes(go.pid));
      assert.ok(!agent.tracedPids().includes(a.pid!) && !agent.tracedPids().includes(b.pid!));
      assert.equal(logLines.filter((l) => /WARN|ERROR/.test(l) && (l.includes(String(a.pid)) || l.includes(String(b.pid)))).length, 0, 'no warnings for non-Go processes');
    } finally {
      a.kill();
      b.kill();
      await go.stop();
    }
  });

  test('a Go program whose ELF section table is corrupt runs untraced, with one warning naming the file and the reason', async () => {
    const bin = join(work, 'corrupt-sections');
    copyFileSync(goBin('go1.26', 'plain'), bin);
    // e_shoff (offset 0x28 in a 64-bit ELF header) past the end: the kernel
    // runs the file by its program headers, section-based reading fails
    const fd = openSync(bin, 'r+');
    const shoff = Buffer.alloc(8);
    shoff.writeBigUInt64LE(0xfffffff0n);
    writeSync(fd, shoff, 0, 8, 0x28);
    closeSync(fd);
    const servers = [await startGoServer(bin), await startGoServer(bin)];
    try {
      const warned = (): string[] => logLines.filter((l) => /WARN/.test(l) && l.includes('cannot read executable') && l.includes(bin));
      await until('a warning for the unreadable executable', () => warned().length > 0);
      for (const p of servers) {
        const r = await httpRequest(`${p.url}/hello`);
        assert.equal(r.status, 200, 'the program serves as before');
        assert.ok(!agent.tracedPids().includes(p.pid));
      }
      agent.scan();
      await agent.flush();
      assert.equal(warned().length, 1, `one warning per file, not per process or scan: ${warned().join('\n')}`);
      assert.match(warned()[0]!, /reason=/);
      assert.equal(pidSpans(servers[0]!.pid).length + pidSpans(servers[1]!.pid).length, 0);
    } finally {
      for (const p of servers) await p.stop();
    }
  });

  test('processes that exit while being attached leave no state behind', async () => {
    const bin = join(work, 'instant');
    copyFileSync(goBin('go1.27', 'stripped'), bin);
    // the exec events a busy machine delays are read after the processes are
    // gone, and may still attach their binary: judged once every one is read
    const execsRead = new Set<number>();
    const onExec = agent['onExec'].bind(agent);
    agent['onExec'] = (...a: Parameters<typeof onExec>): void => {
      execsRead.add(a[0].hdr.tgid);
      onExec(...a);
    };
    const children = Array.from({ length: 50 }, () => spawn(bin, ['-exit-after', '1ms'], { stdio: 'ignore' }));
    try {
      await Promise.all(children.map((c) => new Promise((r) => c.once('exit', r))));
      await until('the exec event of every process read', () => children.every((c) => execsRead.has(c.pid!)));
    } finally {
      agent['onExec'] = onExec;
    }
    agent.scan();
    await until('nothing traced', () => agent.tracedPids().length === 0);
    // their binary's links linger for the next process; gone when let go
    await agent.attachments()!.detachIdle();
    const rt = agent.runtime()!;
    assert.equal(rt.obj.mapCount('gt_processes'), 0);
    const left = binaryLinkSets(rt.obj);
    assert.equal(left.length, 0, `link sets left: ${JSON.stringify(left)}; binaries: ${JSON.stringify(agent.attachments()!.binaries().map((b) => ({ exe: b.exe, pids: [...b.pids], handles: b.handles.length })))}`);
    // and the agent still works
    const s = await startGoServer(bin);
    try {
      await until('traced', () => agent.tracedPids().includes(s.pid));
      await httpRequest(`${s.url}/hello`);
      await agent.flush();
      await until('span', () => pidSpans(s.pid).length === 1);
    } finally {
      await s.stop();
    }
  });
});
