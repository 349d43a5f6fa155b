/**
 * `gotrail inspect` as a user runs it: real binaries of each Go version, a
 * binary whose Go version is past the offsets database, non-Go and broken
 * files, a live pid; checks the output and the exit codes scripts rely on.
 */
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gotrailBin, repoRoot } from '../support/agent-process.ts';
import { startGoServer } from '../support/go-server.ts';
import { buildGo, goToolchains, programDir } from '../support/go-build.ts';

const goBin = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');
const work = join(repoRoot, 'build', 'test-inspect');

function inspect(...args: string[]): { code: number | null; out: string; err: string; json?: any } {
  const r = spawnSync(gotrailBin, ['inspect', ...args], { encoding: 'utf8', timeout: 60_000 });
  let json: unknown;
  if (args.includes('--json') && r.status !== null && r.status <= 4 && r.stdout.trim().startsWith('{')) json = JSON.parse(r.stdout);
  return { code: r.status, out: r.stdout, err: r.stderr, json };
}

/** Rewrites the Go version recorded in a binary's buildinfo (same length), as a newer toolchain would have written it. */
function withGoVersion(src: string, dst: string, from: string, to: string): void {
  assert.equal(from.length, to.length);
  const buf = readFileSync(src);
  let n = 0;
  for (let i = buf.indexOf(from); i >= 0; i = buf.indexOf(from, i + 1)) {
    buf.write(to, i, 'latin1');
    n++;
  }
  assert.ok(n > 0, `${from} found in ${src}`);
  writeFileSync(dst, buf, { mode: 0o755 });
}

describe('gotrail inspect', () => {
  before(() => mkdirSync(work, { recursive: true }));

  for (const tc of ['go1.19', 'go1.26', 'go1.27']) {
    test(`${tc}: unstripped binary — offsets from DWARF, every site listed`, () => {
      const r = inspect(goBin(tc, 'plain'), '--json');
      assert.equal(r.code, 0, r.err);
      assert.match(r.json.goVersion, new RegExp(`^${tc.replace('.', '\\.')}\\.`));
      assert.equal(r.json.dwarf, true);
      assert.equal(r.json.stripped, false);
      assert.equal(r.json.goidOffset, 152);
      const p = r.json.probes.find((x: any) => x.id === 'net/http/server');
      assert.equal(p.attachable, true);
      assert.equal(p.offsets['net/http.Request.Method'].source, 'dwarf');
      assert.deepEqual(p.sites.map((s: any) => `${s.role} ${s.symbol}`).sort(), [
        'entry net/http.(*conn).serve.func1',
        'entry net/http.serverHandler.ServeHTTP',
        'return net/http.serverHandler.ServeHTTP',
      ]);
      assert.ok(p.sites.every((s: any) => s.fileOffsets.length > 0));
    });

    test(`${tc}: stripped binary — functions from pclntab, offsets from the database`, () => {
      const r = inspect(goBin(tc, 'stripped'), '--json');
      assert.equal(r.code, 0, r.err);
      assert.equal(r.json.stripped, true);
      assert.equal(r.json.dwarf, false);
      assert.equal(r.json.functionSource, 'pclntab');
      const p = r.json.probes.find((x: any) => x.id === 'net/http/server');
      assert.equal(p.attachable, true);
      assert.equal(p.offsets['net/http.response.status'].source, 'db');
      // the same sites as the unstripped build of the same toolchain
      const plain = inspect(goBin(tc, 'plain'), '--json').json.probes[0].sites;
      assert.deepEqual(p.sites.map((s: any) => s.fileOffsets.length), plain.map((s: any) => s.fileOffsets.length));
    });
  }

  test('a Go version past the database: the affected probe alone is disabled, the others attach unverified', () => {
    const bin = join(work, 'httpserver-go1.30');
    withGoVersion(goBin('go1.26', 'stripped'), bin, 'go1.26.8', 'go1.30.1');
    const r = inspect(bin, '--json');
    assert.equal(r.code, 0, `exit 0: a probe still attaches\n${r.out}${r.err}`);
    assert.equal(r.json.goVersion, 'go1.30.1');
    const server = r.json.probes.find((x: any) => x.id === 'net/http/server');
    assert.equal(server.attachable, false);
    assert.match(server.reason, /net\/http\.response\.status/);
    assert.match(server.reason, /go1\.30\.1/);
    const client = r.json.probes.find((x: any) => x.id === 'net/http/client');
    assert.equal(client.attachable, true, 'fields stable over the last releases are carried forward');
    assert.ok(client.unverified.length > 0, 'and marked unverified');
    const text = inspect(bin);
    assert.match(text.out, /✘ net\/http\/server/);
    assert.match(text.out, /not attachable: .*net\/http\.response\.status.*go1\.30\.1/);
    assert.match(text.out, /✔ net\/http\/client/);
  });

  test('a live process by pid', async () => {
    const s = await startGoServer(goBin('go1.27', 'pie'));
    try {
      const r = inspect(String(s.pid));
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /go:\s+go1\.27\.3/);
      assert.match(r.out, /pie:\s+yes/);
      assert.match(r.out, /✔ net\/http\/server/);
    } finally {
      await s.stop();
    }
  });

  test('not a Go binary, not an ELF file, truncated, missing: exit 1 with the reason', () => {
    const notGo = inspect('/bin/true');
    assert.equal(notGo.code, 1);
    assert.match(notGo.err, /not a Go (binary|program)|no Go build information|\.go\.buildinfo/i);
    const text = join(work, 'script.sh');
    writeFileSync(text, '#!/bin/sh\necho hi\n');
    const notElf = inspect(text);
    assert.equal(notElf.code, 1);
    assert.match(notElf.err, /ELF/);
    const trunc = join(work, 'truncated');
    writeFileSync(trunc, readFileSync(goBin('go1.26', 'plain')).subarray(0, 4096));
    const t = inspect(trunc);
    assert.equal(t.code, 1);
    assert.match(t.err, /truncated|past the end|shorter/i);
    const missing = inspect(join(work, 'does-not-exist'));
    assert.equal(missing.code, 1);
    assert.match(missing.err, /no such file/);
  });

  test('usage errors exit 2, --help exits 0', () => {
    assert.equal(inspect().code, 2);
    assert.equal(inspect('a', 'b').code, 2);
    assert.equal(inspect('--bogus').code, 2);
    const h = inspect('--help');
    assert.equal(h.code, 0);
    assert.match(h.out, /Usage: gotrail inspect/);
  });

  test('a function that is not there: says whether its package is linked at all, and what its absence means', () => {
    const tc = goToolchains().find((t) => t.name === 'go1.26') ?? goToolchains()[0]!;
    const serverOnly = inspect(buildGo({ toolchain: tc, srcDir: programDir('inspect-server-only'), variant: 'stripped' }), '--json');
    assert.equal(serverOnly.code, 0, serverOnly.err);
    const client = serverOnly.json.probes.find((x: any) => x.id === 'net/http/client');
    assert.equal(client.attachable, false);
    assert.equal(client.reason, 'net/http is linked, but this program never sends client requests through http.Transport (function net/http.(*Transport).roundTrip not found)');
    assert.equal(serverOnly.json.probes.find((x: any) => x.id === 'net/http/server').attachable, true);

    const noHttp = inspect(buildGo({ toolchain: tc, srcDir: programDir('inspect-no-http'), variant: 'plain' }));
    assert.equal(noHttp.code, 4, 'no probe attaches');
    assert.match(noHttp.out, /not attachable: net\/http is not linked into this program \(function net\/http\.serverHandler\.ServeHTTP not found\)/);
    assert.doesNotMatch(noHttp.out, /not traced \(gotrail has no probe/);
  });

  test('a library gotrail has no probe for yet (from the buildinfo module list) is named', () => {
    const tc = goToolchains().find((t) => t.name === 'go1.26') ?? goToolchains()[0]!;
    const bin = buildGo({ toolchain: tc, srcDir: programDir('inspect-grpc'), variant: 'plain' });
    const r = inspect(bin, '--json');
    assert.deepEqual(r.json.untracedLibraries, [{ module: 'google.golang.org/grpc', version: 'v1.50.1', calls: 'gRPC calls' }]);
    const text = inspect(bin);
    assert.match(text.out, /not traced \(gotrail has no probe for these libraries yet\):\n  ✘ google\.golang\.org\/grpc v1\.50\.1 — its gRPC calls make no spans/);
    assert.match(text.out, /net\/http is linked, but this program never serves requests with http\.Server/);
  });
});
