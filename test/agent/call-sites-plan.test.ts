/**
 * Return sites moved to CALLs the kernel emulates, on the real test binaries
 * of the three Go versions (plain and stripped): the net/http server ends a
 * request at `(*conn).serve`'s CALL of `(*conn).hijacked` (HTTP/1) and at
 * the HTTP/2 stream's deferred CALL of handlerDone (returned) or gorecover
 * (panicked); goroutine ancestry at newproc's CALL of runqput. Each site is
 * a direct CALL (E8 rel32) to that very callee, once per function; and where
 * a binary's code lacks one of the calls, the RET sites are planned instead,
 * whole. A net/http client request that succeeds ends at Transport.roundTrip's
 * JE on the error of its call of (*persistConn).roundTrip, a branch the
 * kernel emulates too, and the RET after it goes unprobed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openGoBinary, type GoBinary } from '../../daemon/analysis/go-binary.ts';
import { planProbe, GOID_FIELD, type ProbePlan } from '../../daemon/agent/binary-plan.ts';
import { httpServerProbe } from '../../daemon/probes/go/net/http/server/descriptor.ts';
import { runtimeProbe } from '../../daemon/probes/go/runtime/descriptor.ts';
import { httpClientProbe } from '../../daemon/probes/go/net/http/client/descriptor.ts';
import type { ProbeDescriptor, ProbedFunction } from '../../daemon/probes/types.ts';
import { repoRoot } from '../support/agent-process.ts';
import { bytesAt } from '../support/file-bytes.ts';

const VERSIONS = ['go1.19', 'go1.26', 'go1.27'];
const bin = (tc: string, kind: string): string => join(repoRoot, 'build', 'go', tc, kind, 'httpserver');
const skip = VERSIONS.some((tc) => !existsSync(bin(tc, 'stripped')) || !existsSync(bin(tc, 'plain'))) ? 'test programs not built: run bash deploy/setup.sh' : false;

function plan(path: string, probe: ProbeDescriptor): ProbePlan {
  const b = openGoBinary(path);
  try {
    const wanted = [GOID_FIELD, ...Object.keys(probe.fields)];
    const types = b.goTypes().fieldOffsets(wanted).offsets;
    return planProbe(b, probe, { types, only: 'types' }, types.get(GOID_FIELD));
  } finally {
    b.close();
  }
}

/** The target of the E8 rel32 CALL at file offset `offset`, as a file offset. */
function callTarget(path: string, offset: number): number | undefined {
  const b = bytesAt(path, offset, 5);
  return b[0] === 0xe8 ? offset + 5 + b.readInt32LE(1) : undefined;
}

/** File offset of the entry of the first of `names` found in the binary. */
function entryOffset(b: GoBinary, names: string[]): number {
  for (const n of names) {
    const f = b.findFunction(n);
    if (f) return b.fileOffset(f.entry);
  }
  throw new Error(`none of ${names.join(', ')} found`);
}

/** The net/http server probe with each preferred function passed through `change` (the code of another Go, simulated). */
const serverWith = (change: (f: ProbedFunction) => ProbedFunction, unless?: string[]): ProbeDescriptor => ({
  ...httpServerProbe,
  preferredSites: { ...httpServerProbe.preferredSites!, functions: httpServerProbe.preferredSites!.functions.map(change), ...(unless ? { unless } : {}) },
});

/** `f` ending HTTP/1 requests at its call of `callee` instead, when it is (*conn).serve. */
const serveCalling = (callee: string) => (f: ProbedFunction): ProbedFunction =>
  f.symbol === 'net/http.(*conn).serve' ? { ...f, atCalls: [{ callee, program: f.atCalls![0]!.program }] } : f;

const sitesOf = (p: ProbePlan, program: string): ProbePlan['sites'] => p.sites.filter((s) => s.program === program);

for (const tc of VERSIONS) {
  for (const kind of ['plain', 'stripped']) {
    test(`${tc} ${kind}: the net/http server's requests end at CALLs, once per function, to the right callees`, { skip }, () => {
      const path = bin(tc, kind);
      const p = plan(path, httpServerProbe);
      assert.ok(p.attachable, p.reason);
      assert.deepEqual(p.degraded, []);
      assert.equal(p.sites.filter((s) => s.role === 'return').length, 0, 'no RET is probed');
      for (const s of p.sites) assert.ok(s.trapKinds?.every((k) => k === 'emulated'), `${s.symbol} → ${s.program}: ${s.trapKinds?.join(', ')}`);
      const h2 = tc === 'go1.27' ? 'net/http/internal/http2.(*serverConn).runHandler.func1' : 'net/http.(*http2serverConn).runHandler.func1';
      const done = tc === 'go1.27' ? 'net/http/internal/http2.(*responseWriter).handlerDone' : 'net/http.(*http2responseWriter).handlerDone';
      const b = openGoBinary(path);
      try {
        const ends = sitesOf(p, 'gt_http_server_return');
        assert.deepEqual(ends.map((s) => [s.role, s.symbol, s.offsets.length]).sort(), [['at-call', 'net/http.(*conn).serve', 1], ['at-call', h2, 1]].sort());
        const byFn = new Map(ends.map((s) => [s.symbol, s.offsets[0]!]));
        assert.equal(callTarget(path, byFn.get('net/http.(*conn).serve')!), entryOffset(b, ['net/http.(*conn).hijacked']), 'HTTP/1: the CALL of (*conn).hijacked');
        assert.equal(callTarget(path, byFn.get(h2)!), entryOffset(b, [done]), 'HTTP/2: the CALL of handlerDone');
        const panics = sitesOf(p, 'gt_http_server_panic');
        assert.deepEqual(panics.map((s) => [s.role, s.symbol]).sort(), [['at-call', h2], ['entry', 'net/http.(*conn).serve.func1']].sort());
        const recover = panics.find((s) => s.role === 'at-call')!;
        assert.equal(recover.offsets.length, 1);
        assert.equal(callTarget(path, recover.offsets[0]!), entryOffset(b, ['runtime.gorecover']), 'HTTP/2 panic: the CALL of gorecover');
      } finally {
        b.close();
      }
    });

    test(`${tc} ${kind}: goroutine ancestry is read at newproc's CALL of runqput, not at newproc1's RETs`, { skip }, () => {
      const path = bin(tc, kind);
      const p = plan(path, runtimeProbe);
      assert.ok(p.attachable, p.reason);
      assert.deepEqual(sitesOf(p, 'gt_runtime_newproc1_return'), []);
      const at = sitesOf(p, 'gt_runtime_newproc_runqput');
      assert.deepEqual(at.map((s) => [s.role, s.symbol, s.offsets.length, s.trapKinds]), [['at-call', 'runtime.newproc.func1', 1, ['emulated']]]);
      const b = openGoBinary(path);
      try {
        assert.equal(callTarget(path, at[0]!.offsets[0]!), entryOffset(b, ['runtime.runqput']));
      } finally {
        b.close();
      }
    });
  }
}

const ROUND_TRIP = 'net/http.(*Transport).roundTrip';
const PCONN_ROUND_TRIP = 'net/http.(*persistConn).roundTrip';

/** The net/http client probe with its error check after a call of `callee` instead. */
const clientCheckingAfter = (callee: string): ProbeDescriptor => ({
  ...httpClientProbe,
  preferredSites: {
    ...httpClientProbe.preferredSites!,
    functions: httpClientProbe.preferredSites!.functions.map((f) => ({ ...f, atErrCheck: { ...f.atErrCheck!, callee } })),
  },
});

for (const tc of VERSIONS) {
  for (const kind of ['plain', 'stripped']) {
    test(`${tc} ${kind}: a net/http client request that succeeds ends at roundTrip's JE on the error of its call of (*persistConn).roundTrip; the RET only that edge reaches is not probed`, { skip }, () => {
      const path = bin(tc, kind);
      const p = plan(path, httpClientProbe);
      assert.ok(p.attachable, p.reason);
      assert.deepEqual(p.degraded, []);
      const done = sitesOf(p, 'gt_http_client_done');
      assert.deepEqual(done.map((s) => [s.role, s.symbol, s.offsets.length, s.trapKinds]), [['at-err-check', ROUND_TRIP, 1, ['emulated']]]);
      const at = done[0]!.offsets[0]!;
      // CALL (*persistConn).roundTrip; NOPW 0(AX)(AX*1); TEST RBX, RBX; JE rel32
      const b = openGoBinary(path);
      let rets: number[];
      try {
        assert.equal(callTarget(path, at - 14), entryOffset(b, [PCONN_ROUND_TRIP]), 'the CALL of (*persistConn).roundTrip');
        rets = b.retSites(b.findFunction(ROUND_TRIP)!);
      } finally {
        b.close();
      }
      assert.deepEqual([...bytesAt(path, at - 9, 11)], [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x48, 0x85, 0xdb, 0x0f, 0x84]);
      // the nil-error edge: JE's target; the first RET after it is `return resp, nil`
      const success = at + 6 + bytesAt(path, at + 2, 4).readInt32LE(0);
      const successRet = rets.filter((r) => r > success).sort((x, y) => x - y)[0]!;
      const returns = sitesOf(p, 'gt_http_client_return');
      assert.deepEqual(returns.map((s) => s.role), ['return']);
      assert.deepEqual(rets.filter((r) => !returns[0]!.offsets.includes(r)), [successRet], 'one RET unprobed: the one after the JE\'s target');
      assert.equal(returns[0]!.offsets.length, rets.length - 1);
      assert.ok(returns[0]!.offsets.every((o) => bytesAt(path, o, 1)[0] === 0xc3));
      // the recovered panic's landing (CALL runtime.deferreturn; ...; RET), which no branch reaches, keeps its probe
      if (tc !== 'go1.19') assert.ok(returns[0]!.offsets.includes(Math.max(...rets)), 'the last RET, after deferreturn, stays probed');
    });
  }
}

test('a client whose error check is not found (the call is not there, or not once) gets every RET of roundTrip, and no done site', { skip }, () => {
  const path = bin('go1.26', 'plain');
  const b = openGoBinary(path);
  let all: number[];
  let twice: string | undefined;
  try {
    const rt = b.findFunction(ROUND_TRIP)!;
    all = b.retSites(rt);
    for (const name of ['runtime.newobject', 'runtime.convTstring', 'fmt.Errorf']) {
      const callee = b.findFunction(name);
      if (callee && b.callSites(rt, callee).length > 1) {
        twice = name;
        break;
      }
    }
  } finally {
    b.close();
  }
  assert.ok(twice, 'a callee roundTrip calls more than once');
  // removeIdleConn returns a bool (TEST AL, AL); connectMethodForRequest's error is tested later,
  // not in RBX; getConn's is (TEST RBX, RBX; JNE), but its nil-error path loops back to it (retries)
  for (const callee of ['net/http.noSuchFunction', twice, 'net/http.(*Transport).removeIdleConn', 'net/http.(*Transport).connectMethodForRequest', 'net/http.(*Transport).getConn']) {
    const p = plan(path, clientCheckingAfter(callee));
    assert.ok(p.attachable, `${callee}: ${p.reason}`);
    assert.deepEqual(sitesOf(p, 'gt_http_client_done'), [], callee);
    const returns = sitesOf(p, 'gt_http_client_return');
    assert.deepEqual(returns.map((s) => [s.role, s.symbol, s.offsets]), [['return', ROUND_TRIP, all]], callee);
    assert.ok(returns[0]!.trapKinds?.every((k) => k === 'single_stepped'));
  }
});

test('a binary without one of the preferred calls gets the RET sites instead, whole', { skip }, () => {
  const path = bin('go1.26', 'plain');
  // the same probe, as if Go had inlined (*conn).hijacked away
  const p = plan(path, serverWith(serveCalling('net/http.(*conn).noSuchFunction')));
  assert.ok(p.attachable, p.reason);
  assert.deepEqual(p.sites.filter((s) => s.role === 'at-call'), [], 'none of the preferred sites is kept, HTTP/2 ones included');
  const rets = sitesOf(p, 'gt_http_server_return');
  assert.deepEqual(rets.map((s) => [s.role, s.symbol]), [['return', 'net/http.serverHandler.ServeHTTP']]);
  assert.ok(rets[0]!.offsets.length >= 1);
  assert.ok(rets[0]!.trapKinds?.every((k) => k === 'single_stepped'), 'RETs are single-stepped');
  const panics = sitesOf(p, 'gt_http_server_panic').map((s) => [s.role, s.symbol]).sort();
  assert.deepEqual(panics, [['entry', 'net/http.(*conn).serve.func1'], ['entry', 'net/http.(*http2serverConn).runHandler.func1']]);
  // the entry is planned once, whichever set is chosen
  assert.equal(sitesOf(p, 'gt_http_server_entry').length, 1);
});

test('a binary whose HTTP/2 server is not found (nethttpomithttp2) gets the RET sites, which end HTTP/1 and HTTP/2 requests alike', { skip }, () => {
  const path = bin('go1.27', 'stripped');
  const p = plan(path, serverWith((f) => (f.symbol.includes('runHandler') ? { ...f, symbol: 'net/http.noSuchHTTP2.func1', alternativeSymbols: [] } : f)));
  assert.ok(p.attachable, p.reason);
  assert.deepEqual(p.sites.filter((s) => s.role === 'at-call'), []);
  assert.deepEqual(sitesOf(p, 'gt_http_server_return').map((s) => [s.role, s.symbol]), [['return', 'net/http.serverHandler.ServeHTTP']]);
});

for (const tc of ['go1.26', 'go1.27']) {
  test(`${tc}: a coroutine's goroutine (iter.Pull) is read right after newcoro's call of newproc1, and newproc's CALL of runqput stays`, { skip }, () => {
    const path = join(repoRoot, 'build', 'go', tc, 'plain', 'goroutines');
    const p = plan(path, runtimeProbe);
    assert.ok(p.attachable, p.reason);
    assert.deepEqual(p.degraded, []);
    const after = sitesOf(p, 'gt_runtime_newproc1_return');
    assert.deepEqual(after.map((s) => [s.role, s.symbol, s.offsets.length]), [['after-call', 'runtime.newcoro.func1', 1]]);
    assert.deepEqual(sitesOf(p, 'gt_runtime_newproc_runqput').map((s) => [s.role, s.symbol]), [['at-call', 'runtime.newproc.func1']]);
    // the site follows the CALL of newproc1: its 5 bytes end there
    const b = openGoBinary(path);
    try {
      assert.equal(callTarget(path, after[0]!.offsets[0]! - 5), entryOffset(b, ['runtime.newproc1']));
    } finally {
      b.close();
    }
  });
}

test('a preferred call found more than once is no single site: the RET sites are planned instead', { skip }, () => {
  // a callee that (*conn).serve calls at more than one place
  const b = openGoBinary(bin('go1.26', 'plain'));
  let twice: string | undefined;
  try {
    for (const name of ['net/http.(*conn).setState', 'net/http.(*conn).close', 'runtime.gcWriteBarrier2']) {
      const serve = b.findFunction('net/http.(*conn).serve')!;
      const callee = b.findFunction(name);
      if (callee && b.callSites(serve, callee).length > 1) {
        twice = name;
        break;
      }
    }
  } finally {
    b.close();
  }
  assert.ok(twice, 'a callee (*conn).serve calls more than once');
  const p = plan(bin('go1.26', 'plain'), serverWith(serveCalling(twice)));
  assert.ok(p.attachable, p.reason);
  assert.deepEqual(p.sites.filter((s) => s.role === 'at-call'), []);
});

test('a binary that links golang.org/x/net/http2\'s server gets the RET sites, which end its HTTP/2 requests too', { skip }, () => {
  // stands in for x/net's runHandler: a function every test binary links
  const p = plan(bin('go1.26', 'stripped'), serverWith((f) => f, ['net/http.(*conn).hijacked']));
  assert.ok(p.attachable, p.reason);
  assert.deepEqual(p.sites.filter((s) => s.role === 'at-call'), []);
  assert.deepEqual(sitesOf(p, 'gt_http_server_return').map((s) => [s.role, s.symbol]), [['return', 'net/http.serverHandler.ServeHTTP']]);
  assert.deepEqual(httpServerProbe.preferredSites!.unless, ['golang.org/x/net/http2.(*serverConn).runHandler']);
});
