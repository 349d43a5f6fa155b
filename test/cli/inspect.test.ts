/**
 * `gotrail inspect` as a user runs it: real binaries of each Go version, a
 * binary whose Go version is past the offsets database, non-Go and broken
 * files, a live pid; checks the output and the exit codes scripts rely on.
 */
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gotrailBin, repoRoot } from '../support/agent-process.ts';
import { startGoServer } from '../support/go-server.ts';
import { buildGo, goToolchains, programDir } from '../support/go-build.ts';
import { setupBinary } from '../programs/programs.ts';
import { untracedLibraries } from '../../daemon/probes/untraced.ts';
import { probes } from '../../daemon/probes/registry.ts';
import type { GoModule } from '../../daemon/analysis/buildinfo.ts';

const goBin = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'httpserver');
const TRANSPORT = 'google.golang.org/grpc/internal/transport';
const GRPC_STATUS_S = 'google.golang.org/grpc/internal/status.Status.s';
const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const work = join(repoRoot, 'build', 'test-inspect');

/** The parts of `gotrail inspect --json` these tests read. */
interface InspectProbeJson {
  id: string;
  attachable: boolean;
  reason: string | null;
  degraded: string[];
  unverified: string[];
  sites: { symbol: string; role: string; program: string; fileOffsets: string[]; trapKinds: string[] | null }[];
  offsets: Record<string, { offset: number; source: string }>;
}
interface InspectJson {
  goVersion: string;
  stripped: boolean;
  dwarf: boolean;
  functionSource: string;
  goidOffset: number | null;
  goidSource: string | null;
  typeMetadata: { layout: string | null; error: string | null };
  disagreements: { field: string; offsets: Record<string, number>; chosen: string }[];
  untracedLibraries: { module: string; version: string; calls: string }[];
  probes: InspectProbeJson[];
}

/** Runs `gotrail inspect`; `json` is its --json report (reading it throws when there is none). */
function inspect(...args: string[]): { code: number | null; out: string; err: string; json: InspectJson } {
  const r = spawnSync(gotrailBin, ['inspect', ...args], { encoding: 'utf8', timeout: 60_000 });
  let json: InspectJson | undefined;
  if (args.includes('--json') && r.status !== null && r.status <= 4 && r.stdout.trim().startsWith('{')) json = JSON.parse(r.stdout) as InspectJson;
  return {
    code: r.status,
    out: r.stdout,
    err: r.stderr,
    get json(): InspectJson {
      if (json === undefined) throw new Error(`no JSON report from gotrail inspect ${args.join(' ')}: ${r.stderr}`);
      return json;
    },
  };
}

/** The report's entry for one probe. */
function probe(json: InspectJson, id: string): InspectProbeJson {
  const p = json.probes.find((x) => x.id === id);
  assert.ok(p, `probe ${id} in the report`);
  return p;
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
      const p = probe(r.json, 'net/http/server');
      assert.equal(p.attachable, true);
      assert.equal(p.offsets['net/http.Request.Method']?.source, 'dwarf');
      // requests end at CALLs the kernel emulates, not at RETs
      // (test/agent/call-sites-plan.test.ts checks their callees)
      const h2 = tc === 'go1.27' ? 'net/http/internal/http2.(*serverConn).runHandler.func1' : 'net/http.(*http2serverConn).runHandler.func1';
      assert.deepEqual(p.sites.map((s) => `${s.role} ${s.symbol} ${s.program}`).sort(), [
        'entry net/http.(*conn).serve.func1 gt_http_server_panic',
        'entry net/http.serverHandler.ServeHTTP gt_http_server_entry',
        'at-call net/http.(*conn).serve gt_http_server_return',
        // HTTP/2's end and recover: net/http's bundled copy before Go 1.27
        `at-call ${h2} gt_http_server_return`,
        `at-call ${h2} gt_http_server_panic`,
      ].sort());
      assert.ok(p.sites.every((s) => s.fileOffsets.length > 0));
      // what a hit costs: the entry past the stack check (a PUSH, or the check's JBE) is emulated, a RET single-stepped
      assert.ok(p.sites.every((s) => s.trapKinds?.length === s.fileOffsets.length), JSON.stringify(p.sites));
      assert.deepEqual(p.sites.find((s) => s.role === 'entry' && s.symbol === 'net/http.serverHandler.ServeHTTP')!.trapKinds, ['emulated']);
      // and so is every site where a request ends: CALLs, no RET
      for (const s of p.sites) assert.ok(s.trapKinds!.every((k) => k === 'emulated'), JSON.stringify(s));
    });

    test(`${tc}: stripped binary — functions from pclntab, offsets from the type metadata, the database agreeing`, () => {
      const r = inspect(goBin(tc, 'stripped'), '--json');
      assert.equal(r.code, 0, r.err);
      assert.equal(r.json.stripped, true);
      assert.equal(r.json.dwarf, false);
      assert.equal(r.json.functionSource, 'pclntab');
      assert.equal(r.json.typeMetadata.error, null);
      assert.deepEqual(r.json.disagreements, []);
      const p = probe(r.json, 'net/http/server');
      assert.equal(p.attachable, true);
      assert.deepEqual(p.degraded, [], 'traceparent, node-local linking and HTTP/2 status all available');
      for (const [f, o] of Object.entries(p.offsets)) assert.equal(o.source, 'types', f);
      // Each source alone, side by side: the same offsets.
      const db = probe(inspect(goBin(tc, 'stripped'), '--json', '--offsets-from', 'db').json, 'net/http/server');
      const plainDwarf = probe(inspect(goBin(tc, 'plain'), '--json', '--offsets-from', 'dwarf').json, 'net/http/server');
      const offsets = (q: InspectProbeJson): Record<string, number> => Object.fromEntries(Object.entries(q.offsets).map(([k, v]) => [k, v.offset]));
      assert.deepEqual(offsets(db), offsets(p));
      assert.deepEqual(offsets(plainDwarf), offsets(p));
      assert.ok(Object.values(db.offsets).every((o) => o.source === 'db'));
      assert.ok(Object.values(plainDwarf.offsets).every((o) => o.source === 'dwarf'));
      assert.match(inspect(goBin(tc, 'stripped')).out, /offset net\/http\.response\.status = \d+ \(types\)/);
      // the same sites as the unstripped build of the same toolchain
      const plain = probe(inspect(goBin(tc, 'plain'), '--json').json, 'net/http/server').sites;
      assert.deepEqual(p.sites.map((s) => s.fileOffsets.length), plain.map((s) => s.fileOffsets.length));
    });
  }

  test('a Go version past the database: offsets from the type metadata, every probe attaches; the database alone disables the server probe', () => {
    const bin = join(work, 'httpserver-go1.30');
    withGoVersion(goBin('go1.27', 'stripped'), bin, 'go1.27.3', 'go1.30.1');
    const r = inspect(bin, '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.json.goVersion, 'go1.30.1');
    assert.equal(r.json.typeMetadata.layout, 'go1.27', 'the newest known layout, validated');
    assert.equal(r.json.goidSource, 'types');
    const server = probe(r.json, 'net/http/server');
    assert.equal(server.attachable, true, server.reason ?? undefined);
    assert.deepEqual(server.degraded, []);
    assert.deepEqual(server.unverified, []);
    for (const [f, o] of Object.entries(server.offsets)) assert.equal(o.source, 'types', f);
    assert.equal(server.offsets['net/http.response.status']?.offset, 128);

    // The database alone cannot say (it knows up to go1.27.3): the affected probe alone is disabled.
    const dbOnly = inspect(bin, '--json', '--offsets-from', 'db');
    assert.equal(dbOnly.code, 0, `exit 0: a probe still attaches\n${dbOnly.out}${dbOnly.err}`);
    const s2 = probe(dbOnly.json, 'net/http/server');
    assert.equal(s2.attachable, false);
    assert.match(s2.reason ?? '', /net\/http\.response\.status/);
    assert.match(s2.reason ?? '', /go1\.30\.1/);
    const client = probe(dbOnly.json, 'net/http/client');
    assert.equal(client.attachable, true, 'fields stable over the last releases are carried forward');
    assert.ok(client.unverified.length > 0, 'and marked unverified');
    const text = inspect(bin, '--offsets-from', 'db');
    assert.match(text.out, /✘ net\/http\/server/);
    assert.match(text.out, /not attachable: .*net\/http\.response\.status.*go1\.30\.1/);
    assert.match(text.out, /✔ net\/http\/client/);
  });

  test('a patch release past the database (go1.27.4): the database covers its minor line', () => {
    const bin = join(work, 'httpserver-go1.27.4');
    withGoVersion(goBin('go1.27', 'stripped'), bin, 'go1.27.3', 'go1.27.4');
    const r = inspect(bin, '--json', '--offsets-from', 'db');
    assert.equal(r.code, 0, r.err);
    const server = probe(r.json, 'net/http/server');
    assert.equal(server.attachable, true, server.reason ?? undefined);
    assert.equal(server.offsets['net/http.response.status']?.offset, 128);
    assert.equal(server.offsets['net/http.response.status']?.source, 'db');
    assert.deepEqual(server.unverified, []);
  });

  test('a binary whose recorded version lies about its layout: type metadata refused (detected), DWARF and database disagreement reported', () => {
    // A go1.26 build claiming go1.27.3: read with the go1.27 layout, its type metadata does not fit.
    const bin = join(work, 'httpserver-go1.26-as-1.27');
    withGoVersion(goBin('go1.26', 'plain'), bin, 'go1.26.8', 'go1.27.3');
    const r = inspect(bin, '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.json.typeMetadata.layout, null);
    assert.match(r.json.typeMetadata.error ?? '', /type metadata: .*go1\.27 layout/);
    const d = r.json.disagreements.find((x) => x.field === 'net/http.response.status');
    assert.deepEqual(d, { field: 'net/http.response.status', offsets: { dwarf: 120, db: 128 }, chosen: 'dwarf' });
    const server = probe(r.json, 'net/http/server');
    assert.equal(server.offsets['net/http.response.status']?.offset, 120);
    const text = inspect(bin);
    assert.match(text.out, /types: +unusable: .*LAYOUT|types: +unusable: .*layout/);
    assert.match(text.out, /DISAGREEMENT net\/http\.response\.status: dwarf says 120, db says 128; using dwarf/);
    assert.equal(inspect(bin, '--offsets-from', 'nowhere').code, 2);
  });

  test('a live process by pid', async () => {
    const s = await startGoServer(goBin('go1.27', 'pie'));
    try {
      const r = inspect(String(s.pid));
      assert.equal(r.code, 0, r.err);
      // the executable by its real path, not the /proc link
      assert.match(r.out, new RegExp(`^binary: +${esc(goBin('go1.27', 'pie'))} \\(run by process ${s.pid}\\)\n`));
      assert.match(r.out, /go:\s+go1\.27\.3/);
      assert.match(r.out, /pie:\s+yes/);
      assert.match(r.out, /✔ net\/http\/server/);
    } finally {
      await s.stop();
    }
  });

  test('a live process whose executable was replaced since it started: the path, "(deleted)" and what that means', async () => {
    const bin = join(work, 'replaced-server');
    copyFileSync(goBin('go1.26', 'plain'), bin);
    chmodSync(bin, 0o755);
    const s = await startGoServer(bin);
    try {
      // a deploy that renames a new file over the old one: the process keeps the old, now nameless, file
      const next = `${bin}.new`;
      copyFileSync(goBin('go1.26', 'plain'), next);
      renameSync(next, bin);
      const r = inspect(String(s.pid));
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`^binary: +${esc(bin)} \\(deleted\\) \\(run by process ${s.pid}\\)\n`));
      assert.match(r.out, /replaced or removed after the process started: it still runs the old\s+code/);
      assert.match(r.out, /✔ net\/http\/server/);
      const j = inspect(String(s.pid), '--json');
      assert.equal((j.json as unknown as { path: string }).path, bin);
      assert.deepEqual((j.json as unknown as { process: unknown }).process, { pid: s.pid, deleted: true });
    } finally {
      await s.stop();
      rmSync(bin, { force: true });
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

  test('a FIFO, a directory or a device: exit 1, not a regular file, at once (a FIFO used to be opened for reading, which waits for a writer forever)', () => {
    const fifo = join(work, 'fifo');
    rmSync(fifo, { force: true });
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    for (const path of [fifo, work, '/dev/null']) {
      const r = spawnSync(gotrailBin, ['inspect', path], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 1, `${path}: ${r.error?.message ?? r.stderr}`);
      assert.equal(r.stderr, `gotrail: ${path}: not a regular file\n`);
    }
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
    const client = probe(serverOnly.json, 'net/http/client');
    assert.equal(client.attachable, false);
    assert.equal(client.reason, 'net/http is linked, but this program never sends client requests through http.Transport (function net/http.(*Transport).roundTrip not found)');
    assert.equal(probe(serverOnly.json, 'net/http/server').attachable, true);
    // goroutine ancestry serves client spans only: a program that makes no calls does not pay for it
    const ancestry = probe(serverOnly.json, 'runtime/goroutines');
    assert.equal(ancestry.attachable, false);
    assert.equal(ancestry.reason, 'it serves net/http/client and google.golang.org/grpc/client, none of which attaches to this program');

    const noHttp = inspect(buildGo({ toolchain: tc, srcDir: programDir('inspect-no-http'), variant: 'plain' }));
    assert.equal(noHttp.code, 4, 'no probe attaches');
    assert.match(noHttp.out, /not attachable: net\/http is not linked into this program \(function net\/http\.serverHandler\.ServeHTTP not found\)/);
    assert.doesNotMatch(noHttp.out, /not traced \(gotrail has no probe/);
  });

  test('a gRPC server program: the gRPC server probe attaches, the client probe says why not; gRPC is not named as untraced', () => {
    const tc = goToolchains().find((t) => t.name === 'go1.26') ?? goToolchains()[0]!;
    const bin = buildGo({ toolchain: tc, srcDir: programDir('inspect-grpc'), variant: 'plain' });
    const r = inspect(bin, '--json');
    assert.deepEqual(r.json.untracedLibraries, []);
    assert.equal(r.json.probes.find((x) => x.id === 'google.golang.org/grpc/server')?.attachable, true);
    const text = inspect(bin);
    assert.doesNotMatch(text.out, /not traced \(gotrail has no probe/);
    assert.match(text.out, /net\/http is linked, but this program never serves requests with http\.Server/);
  });

  test('a grpc-go version outside the offsets database (v1.19.1, stripped): which field is unknown, and what is lost', () => {
    const bin = setupBinary('inspect-grpc-old', 'go1.26', 'stripped');
    const r = inspect(bin, '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.json.stripped, true);
    assert.equal(r.json.dwarf, false);
    assert.match(inspect(bin).out, /google\.golang\.org\/grpc v1\.19\.1/);
    const server = probe(r.json, 'google.golang.org/grpc/server');
    assert.equal(server.attachable, true, server.reason ?? undefined);
    // the binary's own type metadata supplies the transport's fields, the database's range notwithstanding
    assert.equal(server.offsets[`${TRANSPORT}.http2Server.conn`]?.source, 'types');
    assert.equal(server.offsets[`${TRANSPORT}.Stream.method`]?.source, 'types');
    // grpc-go v1.19 has no internal/status package: the status code is what is lost
    assert.ok(server.degraded.some((d) => new RegExp(`^gRPC server spans carry no status code: no offset for ${esc(GRPC_STATUS_S)} at v1\\.19\\.1 \\(known up to [^;]+; the field does not exist from 1\\.0\\.0 until 1\\.20\\.0\\)$`).test(d)), server.degraded.join('\n'));
    assert.equal(server.offsets[GRPC_STATUS_S], undefined);
    const client = probe(r.json, 'google.golang.org/grpc/client');
    assert.equal(client.attachable, false);
    assert.equal(client.reason, 'google.golang.org/grpc is linked, but this grpc-go version predates newClientStreamWithParams (added in v1.37.0), whose returned stream the client probe reads: its gRPC calls are not traced (function google.golang.org/grpc.newClientStreamWithParams not found)');

    // A binary whose type metadata does not reach the transport gets the database alone,
    // which starts at v1.20.0 for http2Server.conn: that field is unknown, and only what needs it is off.
    const dbOnly = inspect(bin, '--json', '--offsets-from', 'db');
    assert.equal(dbOnly.code, 0, dbOnly.err);
    const s2 = probe(dbOnly.json, 'google.golang.org/grpc/server');
    assert.equal(s2.attachable, true, 'the server probe still attaches');
    assert.equal(s2.offsets[`${TRANSPORT}.http2Server.conn`], undefined);
    assert.equal(s2.offsets[`${TRANSPORT}.Stream.method`]?.source, 'db', 'span names still known');
    const conn = new RegExp(`^client\\.\\*, server\\.\\* and network\\.peer\\.\\* are not reported, and calls from traced clients on this node are not linked to them: no offset for ${esc(TRANSPORT)}\\.http2Server\\.conn at v1\\.19\\.1 \\(known up to [^;]+; older than the data \\(from 1\\.20\\.0\\)\\)$`);
    assert.ok(s2.degraded.some((d) => conn.test(d)), s2.degraded.join('\n'));
    const text = inspect(bin, '--offsets-from', 'db');
    assert.match(text.out, /✔ google\.golang\.org\/grpc\/server/);
    assert.match(text.out, /degraded: client\.\*, server\.\* and network\.peer\.\* are not reported, .*http2Server\.conn at v1\.19\.1 .*older than the data \(from 1\.20\.0\)/);
  });

  test('a kafka-go program, stripped: the Writer and Reader probes attach with offsets from the type metadata and from the database alike', () => {
    for (const tc of ['go1.19', 'go1.27'] as const) {
      const bin = setupBinary('kafka-client', tc, 'stripped');
      const r = inspect(bin, '--json');
      const db = inspect(bin, '--json', '--offsets-from', 'db');
      assert.deepEqual(r.json.untracedLibraries, []);
      for (const id of ['github.com/segmentio/kafka-go/writer', 'github.com/segmentio/kafka-go/reader']) {
        const fromTypes = probe(r.json, id);
        const fromDb = probe(db.json, id);
        assert.equal(fromTypes.attachable, true, `${tc} ${id}`);
        assert.equal(fromDb.attachable, true, `${tc} ${id} from the database`);
        for (const [field, o] of Object.entries(fromTypes.offsets)) {
          if (field === 'runtime.g.goid') continue;
          assert.equal(o.source, 'types', `${field}: from the type metadata`);
          assert.equal(fromDb.offsets[field]?.offset, o.offset, `${field}: the database agrees`);
        }
      }
    }
  });

  test('a library gotrail has no probe for yet (from the buildinfo module list) is named', () => {
    const modules = [
      { path: 'google.golang.org/grpc', version: 'v1.50.1' },
      { path: 'github.com/segmentio/kafka-go', version: 'v0.4.47' },
      { path: 'github.com/IBM/sarama', version: 'v1.45.1' },
      { path: 'github.com/redis/go-redis/v9', version: 'v9.5.1' },
      // database/sql drivers: traced through database/sql
      { path: 'github.com/lib/pq', version: 'v1.12.3' },
      { path: 'github.com/go-sql-driver/mysql', version: 'v1.9.3' },
      { path: 'github.com/go-redis/redis/v8', version: 'v8.11.5' },
    ] as GoModule[];
    // go-redis v9 and kafka-go have their probes; v8 (another module) and sarama have none
    assert.deepEqual(untracedLibraries(modules, probes), [
      { module: 'github.com/IBM/sarama', version: 'v1.45.1', calls: 'Kafka messages' },
      { module: 'github.com/go-redis/redis/v8', version: 'v8.11.5', calls: 'Redis commands' },
    ]);
  });
});

test('a pid that names no readable executable says which case it is: no such process, or one without an executable (a zombie)', async () => {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  const none = inspect(String(pidMax + 1));
  assert.equal(none.code, 1);
  assert.equal(none.err, `gotrail: no process ${pidMax + 1}\n`);
  // a child that exits (after its shell became \`sleep 30\`, which never reaps it) stays a zombie, whose /proc/PID/exe reads ENOENT
  const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const zombie = Number(await new Promise<string>((r) => parent.stdout.once('data', (d: Buffer) => r(d.toString()))));
    await until(() => /^\d+ \(\S+\) Z /.test(readFileSync(`/proc/${zombie}/stat`, 'utf8')));
    const z = inspect(String(zombie));
    assert.equal(z.code, 1);
    assert.equal(z.err, `gotrail: process ${zombie} (sleep) has no executable: a kernel thread, or a process that has exited (a zombie)\n`);
  } finally {
    parent.kill('SIGKILL');
  }
});

async function until(ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !ok(); ) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a pid that is no process id (-1, 0) is a usage error saying what a pid is, not an unknown option', () => {
  for (const a of ['-1', '0', '-42']) {
    const r = inspect(a);
    assert.equal(r.code, 2, r.err);
    assert.equal(r.err, `gotrail: "${a}" is not a process id: a pid is a whole number from 1 (see ps or pgrep); for a file of that name, put it after --: gotrail inspect -- ${a}\n`);
  }
  // after --, a file of that name
  const file = inspect('--', '-1');
  assert.equal(file.code, 1);
  assert.equal(file.err, 'gotrail: -1: no such file\n');
});

test('a process whose executable this one may not read: says it takes CAP_SYS_PTRACE and what to run instead', { skip: process.getuid?.() === 0 ? false : 'needs root, to start a process another user cannot read and to drop capabilities' }, async () => {
  // a process of root's, which root without its capabilities, and another user, may not read
  const sleeper = spawn('/bin/sleep', ['30'], { stdio: 'ignore' });
  try {
    const pid = sleeper.pid!;
    await until(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('/bin/sleep'));
    const asUser = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', gotrailBin, 'inspect', String(pid)], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(asUser.status, 1, asUser.stderr);
    assert.equal(asUser.stderr, `gotrail: cannot read the executable of process ${pid} (sleep): permission denied: reading the executable of another user's process, or of a more privileged one, takes CAP_SYS_PTRACE (root has it): run it as root (sudo gotrail inspect ${pid}), or inspect the file its command line names: gotrail inspect /bin/sleep\n`);
    const noCaps = spawnSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', gotrailBin, 'inspect', '--json', String(pid)], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(noCaps.status, 1, noCaps.stderr);
    assert.deepEqual(JSON.parse(noCaps.stdout), {
      error: `cannot read the executable of process ${pid} (sleep): permission denied: reading the executable of another user's process, or of a more privileged one, takes CAP_SYS_PTRACE, which this process lacks although it runs as root (dropped from its capabilities): run it with CAP_SYS_PTRACE, or inspect the file its command line names: gotrail inspect /bin/sleep`,
      exitCode: 1,
    });
  } finally {
    sleeper.kill('SIGKILL');
  }
});

test('with --json every error is one JSON object on stdout, {error, exitCode}, with the exit code it has without --json, and nothing on stderr', () => {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  const cases: Array<[string[], number, string]> = [
    [['--json'], 2, 'inspect takes one binary path or pid'],
    [['--json', 'a', 'b'], 2, 'inspect takes one binary path or pid'],
    [['--json', '-1'], 2, '"-1" is not a process id: a pid is a whole number from 1 (see ps or pgrep); for a file of that name, put it after --: gotrail inspect -- -1'],
    [['--json', '--offsets-from', 'dwarves', '/bin/true'], 2, '--offsets-from takes dwarf, types or db, not "dwarves"'],
    [['--bogus', '--json'], 2, 'Unknown option \'--bogus\'. To specify a positional argument starting with a \'-\', place it at the end of the command after \'--\', as in \'-- "--bogus"'],
    [['--json', String(pidMax + 1)], 1, `no process ${pidMax + 1}`],
    [['--json', '/nonexistent/gotrail-inspect'], 1, '/nonexistent/gotrail-inspect: no such file'],
    [['--json', '/dev/null'], 1, '/dev/null: not a regular file'],
  ];
  for (const [args, code, error] of cases) {
    const r = spawnSync(gotrailBin, ['inspect', ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, code, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, '', args.join(' '));
    assert.deepEqual(JSON.parse(r.stdout), { error, exitCode: code }, args.join(' '));
    // the same run without --json: the same exit code, the message on stderr
    const plain = spawnSync(gotrailBin, ['inspect', ...args.filter((a) => a !== '--json')], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(plain.status, code, `${args.join(' ')} without --json: ${plain.stderr}`);
    assert.equal(plain.stdout, '');
  }
  // not a Go program: the analysis's error, as JSON
  const notGo = spawnSync(gotrailBin, ['inspect', '--json', '/bin/true'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(notGo.status, 1);
  assert.match((JSON.parse(notGo.stdout) as { error: string }).error, /^\/bin\/true: .*Go/);
});
