/**
 * Finding the executable of a process that exited before it was looked at,
 * by the path its exec event gives: a relative path through the working
 * directory of the process or its parent, only ever the very file executed
 * (its device, inode and content), and why not when nothing resolves.
 * Real files, real processes, real /proc; no BPF.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { BinaryKey } from '../../daemon/agent/attachments.ts';
import { GoProcessProbe, releaseProcessInfo } from '../../daemon/agent/discovery.ts';
import { repoRoot } from '../support/agent-process.ts';

const work = join(repoRoot, 'build', 'test-discovery');
const goBinary = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

function keyOf(path: string): BinaryKey {
  const st = statSync(path, { bigint: true });
  return { dev: st.dev, ino: st.ino, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, size: st.size };
}

/** The pid of a process that has exited and been reaped. */
function deadPid(): number {
  const r = spawnSync('true');
  return r.pid;
}

/** A process that stays in `cwd` (the launching shell of a job) until killed. */
function parentIn(cwd: string): ChildProcess {
  return spawn('sleep', ['600'], { cwd, stdio: 'ignore' });
}

test('probeExited: a relative path resolves through the parent\'s working directory, to the file executed only', (t) => {
  const dir = join(work, 'relative');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(goBinary, join(dir, 'job'));
  const key = keyOf(join(dir, 'job'));
  const parent = parentIn(dir);
  t.after(() => parent.kill());
  const probe = new GoProcessProbe();

  const r = probe.probeExited(deadPid(), parent.pid!, './job', key);
  assert.equal(r.kind, 'go');
  if (r.kind === 'go') {
    assert.equal(r.info.exe, join(dir, 'job'), 'named as the agent sees the file');
    assert.deepEqual(r.info.key, key);
    releaseProcessInfo(r.info);
  }
  assert.equal(probe.probeExited(deadPid(), parent.pid!, 'job', key).kind, 'go', 'without ./ as well');

  // another file of the same name by now: never looked at
  copyFileSync(goBinary, join(dir, 'job.new'));
  renameSync(join(dir, 'job.new'), join(dir, 'job'));
  assert.deepEqual(probe.probeExited(deadPid(), parent.pid!, './job', key), { kind: 'unresolved', reason: 'not_found' });
  // nothing there
  assert.deepEqual(probe.probeExited(deadPid(), parent.pid!, './missing', key), { kind: 'unresolved', reason: 'not_found' });
});

test('probeExited: a relative path with neither the process nor its parent there is unresolved (cwd_gone); an empty path is no_path', () => {
  const dir = join(work, 'gone');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(goBinary, join(dir, 'job'));
  const key = keyOf(join(dir, 'job'));
  const probe = new GoProcessProbe();
  assert.deepEqual(probe.probeExited(deadPid(), deadPid(), './job', key), { kind: 'unresolved', reason: 'cwd_gone' });
  assert.deepEqual(probe.probeExited(deadPid(), 0, './job', key), { kind: 'unresolved', reason: 'cwd_gone' });
  assert.deepEqual(probe.probeExited(deadPid(), 0, '', key), { kind: 'unresolved', reason: 'no_path' });
});

test('probeExited: an absolute path is taken as the agent sees it when it is the file executed, else not_found', () => {
  const dir = join(work, 'absolute');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'job');
  copyFileSync(goBinary, path);
  const key = keyOf(path);
  const probe = new GoProcessProbe();
  const r = probe.probeExited(deadPid(), 0, path, key);
  assert.equal(r.kind, 'go');
  if (r.kind === 'go') releaseProcessInfo(r.info);
  // the same file through the parent's root (this process's: its root is /)
  const viaRoot = probe.probeExited(deadPid(), process.pid, path, { ...key, size: (key.size ?? 0n) + 1n });
  assert.deepEqual(viaRoot, { kind: 'unresolved', reason: 'not_found' }, 'the content must match too');
  assert.deepEqual(probe.probeExited(deadPid(), process.pid, join(dir, 'missing'), key), { kind: 'unresolved', reason: 'not_found' });
});

test('probeExited: a non-Go file that is the file executed is not-go, not unresolved', () => {
  const probe = new GoProcessProbe();
  const r = probe.probeExited(deadPid(), process.pid, '/bin/sh', keyOf('/bin/sh'));
  assert.equal(r.kind, 'not-go');
});

test('probeExited: a file only in the parent\'s mount namespace (a container\'s) is found by a relative path through its cwd and by an absolute one through its root', { skip: process.getuid?.() === 0 ? false : 'needs root (a mount namespace)' }, async (t) => {
  const dir = join(work, 'namespace');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // the parent: a shell in a mount namespace of its own, in a directory whose file the agent's namespace does not see
  const parent = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs none ${dir} && cp ${goBinary} ${dir}/job && cd ${dir} && echo ready && exec sleep 600`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => parent.kill());
  await new Promise<void>((resolve, reject) => {
    parent.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    parent.once('exit', (code) => reject(new Error(`the namespaced parent exited with ${code}`)));
  });
  assert.throws(() => statSync(join(dir, 'job')), /ENOENT/, 'not in the agent\'s mount namespace');
  const key = keyOf(`/proc/${parent.pid}/root${dir}/job`);
  const probe = new GoProcessProbe();
  for (const path of ['./job', join(dir, 'job')]) {
    const r = probe.probeExited(deadPid(), parent.pid!, path, key);
    assert.equal(r.kind, 'go', path);
    if (r.kind === 'go') {
      assert.deepEqual(r.info.key, key);
      releaseProcessInfo(r.info);
    }
  }
});
