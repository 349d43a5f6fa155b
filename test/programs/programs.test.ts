/**
 * Test programs are found, not listed: every folder of test/programs/ is
 * built by set-up or declared as built by the tests that use it, and a new
 * folder is built by set-up with nothing else to edit.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import test from 'node:test';
import { readGoVersion } from '../../daemon/analysis/go-binary.ts';
import { PROGRAMS_DIR, scanPrograms, setupBinary } from './programs.ts';

const REPO_ROOT = join(PROGRAMS_DIR, '..', '..');
const NODE = join(REPO_ROOT, 'deploy', 'node');

function make(target: string, vars: Record<string, string> = {}, extra: string[] = []): string {
  return execFileSync('make', ['--no-print-directory', '-f', join(REPO_ROOT, 'deploy', 'build.mk'), `NODE=${NODE}`, ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), ...extra, target], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 600_000,
  });
}

/** TypeScript sources of the tests and the offsets tooling, where test-built programs must be built. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

test('every folder of test/programs is a program, built by set-up or declared as built by its tests', () => {
  const scan = scanPrograms();
  assert.deepEqual(scan.problems, []);
  const folders = readdirSync(PROGRAMS_DIR, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  assert.deepEqual(scan.programs.map((p) => p.name).sort(), folders);
  assert.ok(scan.programs.some((p) => p.builtBy === 'setup'));

  // A program declared test-built must really be built by some test (or the offsets tooling the tests call).
  const code = [...sources(join(REPO_ROOT, 'test')), ...sources(join(REPO_ROOT, 'offsets-db'))]
    .filter((f) => !f.startsWith(PROGRAMS_DIR))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  for (const p of scan.programs.filter((q) => q.builtBy === 'tests')) {
    const used = code.includes(`programDir('${p.name}')`) || code.includes(`'programs', '${p.name}'`);
    assert.ok(used, `${p.name} is declared built-by = tests, but no test builds it`);
  }
});

test('set-up builds exactly the programs it owns, with their toolchains and variants, and none the tests build', () => {
  const scan = scanPrograms();
  // what make would build for `setup-programs`, from its database (-p) without building anything (-q)
  let db: string;
  try {
    db = make('setup-programs', {}, ['-p', '-q']);
  } catch (err) {
    db = String((err as { stdout?: string }).stdout ?? ''); // -q exits 1 when something is out of date
  }
  const line = db.split('\n').find((l) => l.startsWith('setup-programs:'));
  assert.ok(line, 'make knows setup-programs');
  const targets = line.slice('setup-programs:'.length).trim().split(/\s+/).filter((t) => t !== 'program-notes').sort();
  const expected = scan.programs
    .filter((p) => p.builtBy === 'setup')
    .flatMap((p) => p.toolchains.flatMap((t) => p.variants.map((v) => setupBinary(p.name, t, v))))
    .sort();
  assert.deepEqual(targets, expected);
  for (const p of scan.programs.filter((q) => q.builtBy === 'tests')) {
    assert.ok(!targets.some((t) => t.endsWith(`/${p.name}`)), `set-up would build ${p.name}, which its tests build`);
  }
  // set-up has run: its binaries are there, each built by the toolchain its path names
  for (const bin of expected) {
    assert.ok(existsSync(bin), `${relative(REPO_ROOT, bin)} missing: run deploy/setup.sh`);
    const toolchain = relative(join(REPO_ROOT, 'build', 'go'), bin).split('/')[0]!;
    assert.match(readGoVersion(bin)?.goVersion ?? '', new RegExp(`^${toolchain.replace('.', '\\.')}(\\.|$)`), relative(REPO_ROOT, bin));
  }
});

test('a program of older modules for Go 1.19 (name-go119) runs its sibling\'s code: the same main.go', () => {
  const scan = scanPrograms();
  const older = scan.programs.filter((p) => p.name.endsWith('-go119'));
  assert.ok(older.length > 0);
  for (const p of older) {
    const sibling = scan.programs.find((q) => q.name === p.name.slice(0, -'-go119'.length));
    assert.ok(sibling, `${p.name} has no sibling program`);
    assert.equal(readFileSync(join(p.dir, 'main.go'), 'utf8'), readFileSync(join(sibling.dir, 'main.go'), 'utf8'), `${p.name}/main.go differs from ${sibling.name}/main.go`);
  }
});

test('a new folder is built by set-up without a list; a toolchain older than its go.mod is skipped with a note', (t) => {
  const work = mkdtempSync(join(tmpdir(), 'gotrail-programs-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const dir = join(work, 'programs');
  const program = (name: string, goVersion: string, conf?: string): void => {
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'go.mod'), `module example.com/${name}\n\ngo ${goVersion}\n`);
    writeFileSync(join(dir, name, 'main.go'), `package main\n\nfunc main() { println("${name}") }\n`);
    if (conf !== undefined) writeFileSync(join(dir, name, 'program.conf'), conf);
  };
  program('hello', '1.19', 'toolchains = go1.26\nvariants = plain\n');
  program('newer', '1.21', '# uses a Go 1.21 feature\ntoolchains = go1.19 go1.26\nvariants = plain\n');
  program('helper', '1.19', 'built-by = tests\n');
  mkdirSync(join(dir, 'notes'));
  writeFileSync(join(dir, 'notes', 'README'), 'not a program\n');

  const out = join(work, 'out');
  const log = make('setup-programs', { PROGRAMS_DIR: dir, GO_OUT: out });
  assert.match(log, /building test program hello \(go1\.26, plain\)/);
  assert.match(log, /note: test program newer is not built with go1\.19: go\.mod says go 1\.21, newer than go1\.19/);
  assert.match(log, /note: not a test program: .*notes has no go\.mod/);
  assert.equal(readGoVersion(join(out, 'go1.26', 'plain', 'hello'))?.goVersion.startsWith('go1.26'), true);
  assert.ok(existsSync(join(out, 'go1.26', 'plain', 'newer')));
  assert.ok(!existsSync(join(out, 'go1.19')), 'nothing built with go1.19');
  assert.ok(!readdirSync(out, { recursive: true }).some((f) => String(f).endsWith('helper')), 'a test-built program is left to its tests');

  // a second run builds nothing
  assert.doesNotMatch(make('setup-programs', { PROGRAMS_DIR: dir, GO_OUT: out }), /building test program/);
  // a folder added later is picked up by the next run
  program('later', '1.19', 'toolchains = go1.26\nvariants = stripped\n');
  assert.match(make('setup-programs', { PROGRAMS_DIR: dir, GO_OUT: out }), /building test program later \(go1\.26, stripped\)/);
  assert.ok(existsSync(join(out, 'go1.26', 'stripped', 'later')));
});

test('program.conf mistakes are reported with the file and line', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-programs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const program = (name: string, conf: string): void => {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'go.mod'), `module example.com/${name}\n\ngo 1.19\n`);
    writeFileSync(join(dir, name, 'program.conf'), conf);
  };
  program('a', 'toolchain = go1.26\n');
  program('b', 'toolchains = go1.18 go1.26\nvariants = plain\n');
  program('c', 'built-by = tests\nvariants = plain\n');
  program('d', 'just words\n');
  const scan = scanPrograms(dir);
  assert.equal(scan.problems.length, 4, scan.problems.join('\n'));
  assert.match(scan.problems[0]!, /a\/program\.conf:1: unknown key "toolchain"/);
  assert.match(scan.problems[1]!, /b\/program\.conf: unknown toolchain go1\.18/);
  assert.match(scan.problems[2]!, /c\/program\.conf: a program built by tests takes no toolchains or variants/);
  assert.match(scan.problems[3]!, /d\/program\.conf:1: expected "key = value"/);
  assert.deepEqual(scan.programs.find((p) => p.name === 'b')?.toolchains, ['go1.26']);
});
