/**
 * OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME of a traced process, read as
 * the OpenTelemetry resource SDK specification says: keys and values
 * percent-decoded; on any error the whole value is discarded and the problem
 * reported (without the values, which may be secrets).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseResourceAttributes, processAttributes } from '../../daemon/spans/resource.ts';

test('keys and values are percent-decoded and trimmed; empty members are skipped; + stays +', () => {
  assert.deepEqual(parseResourceAttributes('team=platform, tier = test%20tier ,a%3Db=x%2Cy%3Dz,,note=1+1,empty=,'), {
    ok: true,
    attributes: { team: 'platform', tier: 'test tier', 'a=b': 'x,y=z', note: '1+1', empty: '' },
  });
  assert.deepEqual(parseResourceAttributes('deployment.environment.name=%E6%97%A5%E6%9C%AC,k=v=w'), { ok: true, attributes: { 'deployment.environment.name': '日本', k: 'v=w' } });
  assert.deepEqual(parseResourceAttributes(''), { ok: true, attributes: {} });
});

test('any malformed member discards the whole value; the problem names the member, never a value', () => {
  const cases: [string, string][] = [
    ['team=platform,secret-token-abc,tier=x', 'member 2 is not key=value (no "=")'],
    ['team=platform,=orphan', 'member 2 has an empty key'],
    ['team=platform, =x', 'member 2 has an empty key'],
    ['team=platform,token=abc%2', 'member 2 ("token"): its value is not valid percent-encoded UTF-8'],
    ['token=abc%zzdef,team=platform', 'member 1 ("token"): its value is not valid percent-encoded UTF-8'],
    ['token=%FF', 'member 1 ("token"): its value is not valid percent-encoded UTF-8'],
    ['a=1,b%2=2', 'member 2: its key is not valid percent-encoded UTF-8'],
  ];
  for (const [value, problem] of cases) {
    const r = parseResourceAttributes(value);
    assert.deepEqual(r, { ok: false, problem }, value);
    if (!r.ok) for (const secret of ['abc', 'orphan', 'platform', 'zzdef']) assert.ok(!r.problem.includes(secret), `${value}: ${r.problem}`);
  }
});

test('a traced process: a malformed OTEL_RESOURCE_ATTRIBUTES is left out whole and reported; OTEL_SERVICE_NAME wins over service.name', () => {
  const facts = (env: Record<string, string>): Parameters<typeof processAttributes>[0] => ({ pid: 7, executablePath: '/srv/bin/api', goVersion: 'go1.26.0', env: new Map(Object.entries(env)) });
  const problems: string[] = [];
  const report = (p: string): void => void problems.push(p);

  const good = processAttributes(facts({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs,team=plat%2Cform' }), report);
  assert.equal(good['service.name'], 'from-attrs');
  assert.equal(good['team'], 'plat,form');
  assert.equal(processAttributes(facts({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs', OTEL_SERVICE_NAME: 'from-name' }), report)['service.name'], 'from-name');
  assert.equal(processAttributes(facts({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs', OTEL_SERVICE_NAME: '' }), report)['service.name'], 'from-attrs', 'an empty variable counts as unset');
  assert.deepEqual(problems, []);

  const bad = processAttributes(facts({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs,team=platform,broken' }), report);
  assert.equal(bad['service.name'], 'api', 'service.name falls back to the executable name');
  assert.equal(bad['team'], undefined, 'no member of a discarded value is kept');
  assert.deepEqual(problems, ['member 3 is not key=value (no "=")']);
  assert.equal(processAttributes(facts({ OTEL_RESOURCE_ATTRIBUTES: 'broken', OTEL_SERVICE_NAME: 'svc' }), report)['service.name'], 'svc');
});
