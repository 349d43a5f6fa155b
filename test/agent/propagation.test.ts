import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroup2Root, parseDestination } from '../../daemon/agent/propagation.ts';
import { resolveRunConfig, RunConfigError } from '../../daemon/config/resolve.ts';

const hex = (b: Buffer): string => b.toString('hex');

test('destination rules: CIDRs become IPv4-mapped LPM keys, host globs exact names or parent domains', () => {
  assert.deepEqual(parseDestination('10.1.0.0/16').map((r) => r.kind === 'cidr' && [hex(r.addr), r.prefixLen]), [['00000000000000000000ffff0a010000', 112]]);
  assert.deepEqual(parseDestination('192.0.2.7').map((r) => r.kind === 'cidr' && [hex(r.addr), r.prefixLen]), [['00000000000000000000ffffc0000207', 128]]);
  assert.deepEqual(parseDestination('fd00::/8').map((r) => r.kind === 'cidr' && [hex(r.addr), r.prefixLen]), [['fd000000000000000000000000000000', 8]]);
  assert.deepEqual(parseDestination('2001:db8::1:2').map((r) => r.kind === 'cidr' && hex(r.addr)), ['20010db8000000000000000000010002']);
  assert.deepEqual(parseDestination('*').map((r) => r.kind === 'cidr' && r.prefixLen), [96, 0], '* is every IPv4 and IPv6 address');
  assert.deepEqual(parseDestination('API.Example.com'), [{ kind: 'host', name: 'api.example.com', subdomains: false }]);
  assert.deepEqual(parseDestination('*.third-party.example'), [{ kind: 'host', name: 'third-party.example', subdomains: true }]);
  for (const bad of ['api-*.example.com', '10.0.0.0/33', '10.0.0.0/', 'a..b', `${'x'.repeat(64)}.com`, '*.']) {
    assert.throws(() => parseDestination(bad), new RegExp(`destination "${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`), bad);
  }
});

test('propagation settings: on by default, flags and file keys, an invalid destination refused by flag name', () => {
  assert.deepEqual(resolveRunConfig({}, {}, {}).propagation, { inject: true, allow: [], deny: [], excludeExe: [], localLinking: true });
  const cfg = resolveRunConfig({ 'no-local-linking': true, 'inject-deny': ['10.0.0.0/8'] }, {}, { propagation: { inject: false, allow: ['*.svc.cluster.local'], deny: ['x.example'] } });
  assert.deepEqual(cfg.propagation, { inject: false, allow: ['*.svc.cluster.local'], deny: ['10.0.0.0/8'], excludeExe: [], localLinking: false });
  assert.equal(cfg.sources['propagation.deny'], '--inject-deny');
  assert.throws(() => resolveRunConfig({ 'inject-allow': ['api-*.example.com'] }, {}, {}), (e: unknown) => e instanceof RunConfigError && /^--inject-allow: destination "api-\*\.example\.com"/.test(e.message));
});

test('the cgroup v2 root is found in mountinfo, whatever the hierarchy layout', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-mountinfo-'));
  const hybrid = join(dir, 'hybrid');
  writeFileSync(hybrid, [
    '25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
    '26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate',
    '27 25 0:25 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu',
  ].join('\n'));
  assert.equal(cgroup2Root(hybrid), '/sys/fs/cgroup/unified');
  const none = join(dir, 'none');
  writeFileSync(none, '27 25 0:25 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu\n');
  assert.equal(cgroup2Root(none), undefined);
  rmSync(dir, { recursive: true, force: true });
});
