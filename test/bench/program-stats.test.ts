/**
 * The BPF time the benchmarks charge to traced requests: every gotrail
 * program that ran between two scrapes (net/http, gRPC, database/sql,
 * goroutines, the socket programs alike), not the start-up calibration nor
 * the node-wide tracepoints that fire for every process on the node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProgramStats, perRequestBpfSeconds } from '../../bench/lib/program-stats.ts';

const scrape = (runs: Record<string, [number, number]>): string =>
  [
    '# HELP gotrail_probe_runs_total Times each BPF program ran',
    '# TYPE gotrail_probe_runs_total counter',
    ...Object.entries(runs).map(([p, [n]]) => `gotrail_probe_runs_total{program="${p}"} ${n}`),
    '# TYPE gotrail_probe_run_seconds_total counter',
    ...Object.entries(runs).map(([p, [, s]]) => `gotrail_probe_run_seconds_total{program="${p}"} ${s}`),
    'gotrail_probe_hits_total{service="x",site="net/http.serverHandler.ServeHTTP entry"} 7',
  ].join('\n') + '\n';

test('every program that ran for the requests counts, whatever its package; calibration and node-wide tracepoints do not', () => {
  const before = scrape({
    gt_http_server_entry: [10, 0.00001], gt_sql_query_entry: [0, 0], gt_runtime_newproc1_return: [5, 0.000002], gt_inject_sockops: [0, 0],
    gt_calibration_empty: [2000, 0.0004], gt_process_exec: [30, 0.0001], gt_self_sock_state: [4, 0.000001], gt_grpc_server_entry: [3, 0.000003],
  });
  const after = scrape({
    gt_http_server_entry: [110, 0.00021], gt_sql_query_entry: [100, 3e-4], gt_runtime_newproc1_return: [105, 0.000102], gt_inject_sockops: [2, 4e-6],
    gt_calibration_empty: [4000, 0.0008], gt_process_exec: [90, 0.0003], gt_self_sock_state: [8, 0.000002], gt_grpc_server_entry: [3, 0.000003],
  });
  const d = perRequestBpfSeconds(before, after);
  assert.deepEqual([...d.keys()], ['gt_sql_query_entry', 'gt_http_server_entry', 'gt_runtime_newproc1_return', 'gt_inject_sockops'], 'those that ran, most first');
  assert.ok(Math.abs(d.get('gt_http_server_entry')! - 0.0002) < 1e-12);
  assert.ok(Math.abs(d.get('gt_sql_query_entry')! - 0.0003) < 1e-12);
});

test('a program loaded after the first scrape counts from zero', () => {
  const d = perRequestBpfSeconds(scrape({}), scrape({ gt_redis_process_entry: [1, 5e-7] }));
  assert.deepEqual([...d], [['gt_redis_process_entry', 5e-7]]);
});

test('parseProgramStats reads runs and seconds per program', () => {
  assert.deepEqual(parseProgramStats(scrape({ gt_http_server_entry: [3, 1.5e-6] })), new Map([['gt_http_server_entry', { runs: 3, seconds: 1.5e-6 }]]));
});
