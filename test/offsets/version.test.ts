/** Go and module version parsing and ordering. */
import assert from 'node:assert/strict';
import test from 'node:test';
import { compareSemver, formatSemver, mustSemver, parseGoVersion, parseModuleVersion, pseudoVersion } from '../../daemon/offsets/version.ts';

const go = (s: string): string => {
  const p = parseGoVersion(s);
  return p.ok ? formatSemver(p.version) : `error: ${p.reason}`;
};

test('Go toolchain versions', () => {
  assert.equal(go('go1.26.8'), '1.26.8');
  assert.equal(go('go1.22'), '1.22.0');
  assert.equal(go('go1.21rc2'), '1.21.0-rc.2');
  assert.equal(go('go1.9beta2'), '1.9.0-beta.2');
  assert.equal(go('go1.23.1 X:nocoverageredesign'), '1.23.1');
  assert.match(go('devel go1.24-e2fef50 Tue Jan 2 2024'), /development toolchain/);
  assert.match(go('go1.22.O'), /unrecognised/);
  assert.match(go(''), /unrecognised/);
});

test('module versions and the three pseudo-version forms', () => {
  const m = parseModuleVersion('v2.1.0+incompatible');
  assert.ok(m.ok && formatSemver(m.version) === '2.1.0' && m.pseudo === null);
  const none = parseModuleVersion('v0.0.0-20230102150405-abcdef123456');
  assert.ok(none.ok && none.pseudo !== null && none.pseudo.base === null && none.pseudo.timestamp === '20230102150405');
  const after = parseModuleVersion('v1.2.4-0.20230102150405-abcdef123456');
  assert.ok(after.ok && after.pseudo?.base !== null && after.pseudo !== null && formatSemver(after.pseudo.base) === '1.2.3');
  const pre = parseModuleVersion('v1.3.0-rc.1.0.20230102150405-abcdef123456');
  assert.ok(pre.ok && pre.pseudo !== null && formatSemver(pre.pseudo.base!) === '1.3.0-rc.1');
  assert.equal(pseudoVersion(mustSemver('1.2.3-rc.1')), null);
  assert.equal(parseModuleVersion('(devel)').ok, false);
  assert.equal(parseModuleVersion('v1.02.3').ok, false);
});

test('semver precedence, including pre-releases and pseudo-versions by commit time', () => {
  const order = [
    '0.0.0-20200101000000-aaaaaaaaaaaa',
    '0.0.0-20230101000000-aaaaaaaaaaaa',
    '1.0.0-alpha',
    '1.0.0-alpha.1',
    '1.0.0-beta.2',
    '1.0.0-beta.11',
    '1.0.0-rc.1',
    '1.0.0',
    '1.0.1-0.20240101000000-aaaaaaaaaaaa',
    '1.0.1-0.20240201000000-aaaaaaaaaaaa',
    '1.0.1',
    '1.2.0',
    '1.10.0',
  ];
  for (let i = 0; i < order.length; i++) {
    for (let j = 0; j < order.length; j++) {
      const c = Math.sign(compareSemver(mustSemver(order[i]!), mustSemver(order[j]!)));
      assert.equal(c, Math.sign(i - j), `${order[i]} vs ${order[j]}`);
    }
  }
});
