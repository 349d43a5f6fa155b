/**
 * The overhead estimate prices each probe hit by the kind of trap its site
 * takes (daemon/agent/overhead.ts): the kernel emulates some probed
 * instructions (one trap) and single-steps the others (two). Hand-built hit
 * counts against known costs, and the kinds of real Go binaries' sites.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CALIBRATION_HELPER, OverheadEstimator, calibrationSiteOffsets, estimateHits, hitSiteKinds, siteOfProgram, type HitCostCalibration, type HitSource } from '../../daemon/agent/overhead.ts';
import { trapKind } from '../../daemon/analysis/instructions.ts';
import { planBinaryAt } from '../../daemon/agent/binary-plan.ts';
import { probes } from '../../daemon/probes/registry.ts';
import { BpfPrograms, HitSite } from '../../daemon/generated/layouts.ts';
import { repoRoot } from '../support/agent-process.ts';
import { bytesAt } from '../support/file-bytes.ts';

const ENTRY = HitSite.GT_HIT_HTTP_SERVER_ENTRY;
const RETURN = HitSite.GT_HIT_HTTP_SERVER_RETURN;
const PANIC = HitSite.GT_HIT_HTTP_SERVER_PANIC;
const TRAP = { emulated: 0.5e-6, single_stepped: 16e-6 };

test('each hit costs the trap of its site\'s kind plus its program\'s BPF run time', () => {
  const bpf = new Map([[BpfPrograms.gt_http_server_entry, 2e-6], [BpfPrograms.gt_http_server_return, 1e-6]]);
  const kinds = new Map([[ENTRY, 'emulated' as const], [RETURN, 'single_stepped' as const]]);
  const e = estimateHits(new Map([[ENTRY, 1000], [RETURN, 1000]]), kinds, TRAP, bpf);
  assert.deepEqual(e.hits, { emulated: 1000, single_stepped: 1000 });
  // 1000 × (0.5 + 2) µs + 1000 × (16 + 1) µs
  assert.ok(Math.abs(e.seconds - 19.5e-3) < 1e-12, `${e.seconds}`);

  // the same hits, both sites emulated (a return probed at a CALL): 1000 × 2.5 + 1000 × 1.5 µs
  const cheap = estimateHits(new Map([[ENTRY, 1000], [RETURN, 1000]]), new Map([[ENTRY, 'emulated'], [RETURN, 'emulated']]), TRAP, bpf);
  assert.deepEqual(cheap.hits, { emulated: 2000, single_stepped: 0 });
  assert.ok(Math.abs(cheap.seconds - 4e-3) < 1e-12, `${cheap.seconds}`);
});

test('a site of unknown kind costs a single-step; before calibration only BPF run time counts', () => {
  const bpf = new Map([[BpfPrograms.gt_http_server_panic, 3e-6]]);
  const e = estimateHits(new Map([[PANIC, 10]]), new Map([[ENTRY, 'emulated']]), TRAP, bpf);
  assert.deepEqual(e.hits, { emulated: 0, single_stepped: 10 });
  assert.ok(Math.abs(e.seconds - 10 * 19e-6) < 1e-12, `${e.seconds}`);
  assert.deepEqual(estimateHits(new Map([[PANIC, 10]]), undefined, TRAP, bpf).hits, { emulated: 0, single_stepped: 10 });
  const uncalibrated = estimateHits(new Map([[PANIC, 10]]), undefined, undefined, bpf);
  assert.ok(Math.abs(uncalibrated.seconds - 10 * 3e-6) < 1e-12, `${uncalibrated.seconds}`);
  assert.equal(estimateHits(new Map([[ENTRY, 0]]), undefined, TRAP, bpf).seconds, 0);
});

test('a hit site is emulated only where every instruction its programs are attached at is', () => {
  const sql = HitSite.GT_HIT_SQL_ENTRY;
  assert.equal(siteOfProgram(BpfPrograms.gt_sql_query_entry), sql);
  assert.equal(siteOfProgram(BpfPrograms.gt_sql_exec_entry), sql);
  assert.equal(siteOfProgram(BpfPrograms.gt_dispatch), undefined);
  const kinds = hitSiteKinds([
    { program: BpfPrograms.gt_http_server_entry, offsets: [0x1000], trapKinds: ['emulated'] },
    { program: BpfPrograms.gt_http_server_return, offsets: [0x1100, 0x1200], trapKinds: ['emulated', 'single_stepped'] },
    // two programs that count one site, at instructions of both kinds
    { program: BpfPrograms.gt_sql_query_entry, offsets: [0x2000], trapKinds: ['emulated'] },
    { program: BpfPrograms.gt_sql_exec_entry, offsets: [0x3000], trapKinds: ['single_stepped'] },
    { program: BpfPrograms.gt_sql_query_return, offsets: [0x2100], trapKinds: ['emulated'] },
    { program: BpfPrograms.gt_sql_exec_return, offsets: [0x3100], trapKinds: ['emulated'] },
    // instructions unknown
    { program: BpfPrograms.gt_http_server_panic, offsets: [0x4000] },
  ]);
  assert.deepEqual(Object.fromEntries(kinds), {
    [ENTRY]: 'emulated',
    [RETURN]: 'single_stepped',
    [sql]: 'single_stepped',
    [HitSite.GT_HIT_SQL_RETURN]: 'emulated',
    [PANIC]: 'single_stepped',
  });
  // the order of the sets does not matter
  assert.equal(hitSiteKinds([
    { program: BpfPrograms.gt_sql_exec_entry, offsets: [0x3000], trapKinds: ['single_stepped'] },
    { program: BpfPrograms.gt_sql_query_entry, offsets: [0x2000], trapKinds: ['emulated'] },
  ]).get(sql), 'single_stepped');
});

test('real binaries: RET sites are single-stepped, entry sites (a PUSH past the stack check, or its JBE) emulated', () => {
  for (const tc of ['go1.19', 'go1.26']) {
    const bin = join(repoRoot, 'build', 'go', tc, 'plain', 'httpserver');
    const { plan, error } = planBinaryAt(bin, probes);
    assert.ok(plan, `plan ${tc}: ${error?.message}`);
    const sets = plan.probes.filter((p) => p.attachable).flatMap((p) => p.sites);
    assert.ok(sets.length >= 4, `${tc}: ${sets.length} site sets`);
    for (const s of sets) {
      assert.equal(s.trapKinds?.length, s.offsets.length, `${tc} ${s.program}: a kind per site`);
      s.offsets.forEach((o, i) => {
        const code = bytesAt(bin, o, 2);
        const kind = s.trapKinds![i];
        if (code[0] === 0xc3) assert.equal(kind, 'single_stepped', `${tc} ${s.program} RET at ${o.toString(16)}`);
        else if (code[0] === 0x55 || code[0] === 0x76 || (code[0] === 0x0f && code[1] === 0x86)) assert.equal(kind, 'emulated', `${tc} ${s.program} PUSH RBP or JBE at ${o.toString(16)}`);
        if (s.role === 'return') assert.equal(code[0], 0xc3, `${tc} ${s.program}: a return site is a RET`);
      });
    }
    const kinds = hitSiteKinds(sets);
    assert.equal(kinds.get(ENTRY), 'emulated', `${tc}: net/http server entry`);
    for (const site of kinds.keys()) {
      const mine = sets.filter((s) => siteOfProgram(s.program) === site);
      if (mine.every((s) => s.role === 'return')) assert.equal(kinds.get(site), 'single_stepped', `${tc}: site ${site} probed at RETs`);
    }
  }
});

test('the calibration helper\'s two probe sites are one of each kind', () => {
  const [entry, ret] = calibrationSiteOffsets();
  assert.deepEqual([entry, ret].map((o) => trapKind(bytesAt(CALIBRATION_HELPER, o, 15), o)), ['emulated', 'single_stepped']);
});

test('a service\'s hit and estimate sums never go back when one of its processes stops being traced', () => {
  // two processes of one service; per-process hit counts as the BPF maps would hold them
  const counts = new Map<number, Map<number, number>>([[101, new Map([[ENTRY, 4000]])], [102, new Map([[ENTRY, 100]])]]);
  const source = {
    obj: { programStats: () => [] },
    probeHits: (pids?: Set<number>) => new Map([...counts].filter(([pid]) => !pids || pids.has(pid))),
  } as unknown as HitSource;
  const est = new OverheadEstimator(source, 0, () => new Map([[101, new Map([[ENTRY, 'emulated' as const]])], [102, new Map([[ENTRY, 'emulated' as const]])]]));
  est.hitCost = { secondsPerHit: TRAP } as HitCostCalibration;
  const traced = new Map([[101, 'app'], [102, 'app']]);
  const sums = () => OverheadEstimator.byService(est.sample(traced, Date.now()), est.goneByService()).get('app')!;
  const first = sums();
  assert.equal(first.hits['http_server_entry'], 4100);
  assert.ok(Math.abs(first.estimatedSeconds - 4100 * 0.5e-6) < 1e-12, `${first.estimatedSeconds}`);

  // the busy one counts 500 more, then exits before the next sample: its last hits are read as it goes
  counts.get(101)!.set(ENTRY, 4500);
  est.processGone(101);
  counts.delete(101);
  traced.delete(101);
  counts.get(102)!.set(ENTRY, 150);
  const after = sums();
  assert.equal(after.hits['http_server_entry'], 4650, 'what the exited process counted stays in the sum, its last hits included');
  assert.ok(Math.abs(after.estimatedSeconds - 4650 * 0.5e-6) < 1e-12, `${after.estimatedSeconds}`);
  assert.equal(after.secondsPerSecond >= 0, true);

  // one that leaves the traced set without processGone keeps what the last sample saw
  traced.delete(102);
  counts.delete(102);
  const none = sums();
  assert.equal(none.hits['http_server_entry'], 4650);
  assert.equal(est.sample(traced, Date.now()).length, 0, 'no process traced');
});
