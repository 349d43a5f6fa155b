/**
 * The words `npm run bench` prints around its latency tables: how many
 * rounds back each median (one round has no spread to judge), and the
 * machine and its load average, printed with the tables and not only in
 * bench/README.md, since figures taken on a busy host say little.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { environmentLine, roundsLine, tracedLine } from '../../bench/report.ts';

test('the rounds behind the medians: one round is said to have no spread, several are medians', () => {
  assert.equal(roundsLine(1), '1 round per mode, alternating in one run: one round has no spread to judge (use --rounds 3 or more before comparing)');
  assert.equal(roundsLine(2), '2 rounds per mode, alternating in one run (medians over rounds)');
  assert.equal(roundsLine(5), '5 rounds per mode, alternating in one run (medians over rounds)');
});

test('the requests the agent saw name the warm-up they include', () => {
  // 1 round of 500 timed requests after a 200-request warm-up
  assert.equal(tracedLine(700, 500, 200, 1), 'requests traced 700 (1 round × (200 warm-up + 500 timed))');
  assert.equal(tracedLine(15600, 5000, 200, 3), 'requests traced 15600 (3 rounds × (200 warm-up + 5000 timed))');
});

test('the environment line names the machine and its load average at start and end', () => {
  const line = environmentLine({
    date: '2026-12-02T02:28:56.848Z', kernel: '6.18.44', cpu: 'AMD EPYC', cores: 2, memoryGiB: 23.5, virtualisation: 'docker',
    node: 'v24.22.3', go: 'go version go1.26.8 linux/amd64', libbpf: '1.1.2', gotrail: 'f27123b',
    loadAverageAtStart: [9.94, 12.08, 9.48], loadAverageAtEnd: [9.34, 11.88, 9.44],
  });
  assert.equal(line, '2026-12-02T02:28:56.848Z · Linux 6.18.44 · AMD EPYC × 2 · 23.5 GiB · virtualisation: docker · Node v24.22.3 · go version go1.26.8 linux/amd64 · libbpf 1.1.2 · gotrail f27123b · load average 9.94 12.08 9.48 at start, 9.34 11.88 9.44 at end');
});
