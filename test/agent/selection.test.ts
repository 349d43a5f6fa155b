import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, DEFAULT_TELEMETRY_BACKENDS, INSTALL_ROOT, textGlob, usesKubernetes, validateSelection, type PodView, type ProcessIdentity, type SelectionRules } from '../../daemon/agent/selection.ts';

const CID = '3f'.repeat(32);
const OTHER_CID = 'a1'.repeat(32);

interface Facts {
  pid?: number;
  exe?: string;
  name?: string;
  cmdline?: string;
  env?: Record<string, string> | null;
  container?: string;
  pod?: PodView | 'pending';
}

/** A process with the given facts; `asked` counts which lazy facts the rules read. */
function proc(f: Facts = {}): ProcessIdentity & { asked: Record<string, number> } {
  const asked: Record<string, number> = {};
  const count = <T>(what: string, v: T): T => {
    asked[what] = (asked[what] ?? 0) + 1;
    return v;
  };
  return {
    pid: f.pid ?? 4242,
    exe: f.exe ?? '/srv/bin/api',
    name: f.name ?? 'api',
    cmdline: () => count('cmdline', f.cmdline),
    env: () => count('env', f.env === null ? undefined : new Map(Object.entries(f.env ?? {}))),
    containerId: () => count('container', f.container),
    pod: () => count('pod', f.pod),
    asked,
  };
}

const traced = (rules: SelectionRules, f: Facts = {}): boolean => decide(rules, proc(f)).traced;

describe('defaults', () => {
  test('every Go process is traced without rules', () => {
    const d = decide({}, proc());
    assert.deepEqual(d, { traced: true, reason: 'every Go process is traced by default' });
  });
  test('gotrail itself is never traced, even when an include rule matches', () => {
    const d = decide({ includeExe: ['**'] }, proc({ pid: process.pid }));
    assert.equal(d.traced, false);
    assert.equal(d.reason, 'gotrail itself');
  });
  test("gotrail's own tools (under its install root) are excluded by default", () => {
    const d = decide({}, proc({ exe: `${INSTALL_ROOT}build/collector/otelcol` }));
    assert.equal(d.traced, false);
    assert.match(d.reason, /install root/);
    assert.equal(traced({}, { exe: `${INSTALL_ROOT}.tools/node/bin/node` }), false);
    assert.ok(INSTALL_ROOT.endsWith('/'));
    // a sibling directory sharing the prefix is not under the root
    assert.equal(traced({}, { exe: `${INSTALL_ROOT.slice(0, -1)}-other/bin/api` }), true);
  });
  test('an include rule selects an own tool (the demo and the end-to-end programs)', () => {
    const exe = `${INSTALL_ROOT}build/go/go1.26/plain/httpserver`;
    assert.equal(traced({ includeExe: [`${INSTALL_ROOT}build/go/**`] }, { exe }), true);
    assert.equal(traced({ includeCmdline: ['*httpserver*'] }, { exe, cmdline: exe }), true);
    assert.equal(traced({ includeExe: ['/srv/**'] }, { exe }), false);
  });
  test('ownRoot is configurable and can be turned off', () => {
    assert.equal(traced({ ownRoot: '/opt/tools' }, { exe: '/opt/tools/x' }), false);
    assert.equal(traced({ ownRoot: '/opt/tools' }, { exe: '/opt/toolsx/x' }), true);
    assert.equal(traced({ ownRoot: false }, { exe: `${INSTALL_ROOT}build/go/go1.26/plain/httpserver` }), true);
  });
});

describe('telemetry back-ends', () => {
  const backends = [
    '/otelcol', '/otelcol-contrib', '/otelcol-k8s', '/usr/bin/otelcol-otlp', '/awscollector',
    '/cmd/jaeger/jaeger-linux', '/go/bin/jaeger-all-in-one', '/tempo', '/bin/alloy', '/bin/grafana-agent',
    '/usr/bin/loki', '/bin/mimir', '/bin/prometheus', '/bin/thanos', '/victoria-metrics-prod', '/vmagent-prod',
    '/usr/share/apm-server/apm-server',
  ];
  test('well-known back-ends are excluded by default, by their executable, and say so', () => {
    for (const exe of backends) {
      // the kernel cuts the process name to 15 characters: the executable decides
      const d = decide({}, proc({ exe, name: exe.split('/').pop()!.slice(0, 15) }));
      assert.equal(d.traced, false, exe);
      assert.match(d.reason, /^excluded by the default telemetry back-end rule \S+/, exe);
    }
    assert.match(decide({}, proc({ exe: '/otelcol-contrib' })).reason, /rule otelcol\* /);
  });
  test('other programs are not taken for back-ends', () => {
    for (const exe of ['/srv/bin/api', '/usr/local/bin/collector', '/srv/otel-demo/checkout', '/srv/prometheus-app/bin/api', '/bin/lokiwrapper', '/srv/bin/tempo2']) {
      assert.deepEqual(decide({}, proc({ exe })), { traced: true, reason: 'every Go process is traced by default' }, exe);
    }
  });
  test('an include rule on the executable, name or command line opts a back-end back in', () => {
    const f = { exe: '/usr/bin/otelcol-contrib', name: 'otelcol-contrib', cmdline: '/usr/bin/otelcol-contrib --config /etc/otelcol/config.yaml' };
    assert.deepEqual(decide({ includeExe: ['/usr/bin/otelcol-*'] }, proc(f)), { traced: true, reason: 'executable matches include rule /usr/bin/otelcol-*' });
    assert.equal(traced({ includeName: ['otelcol-contrib'] }, f), true);
    assert.equal(traced({ includeCmdline: ['*--config /etc/otelcol/*'] }, f), true);
    // broad rules about where it runs do not: the back-end stays excluded
    const inNs = { ...f, pod: { namespace: 'observability', labels: {} } };
    assert.match(decide({ includeNamespace: ['observability'] }, proc(inNs)).reason, /default telemetry back-end rule/);
    assert.equal(traced({ includeExe: ['/srv/**'] }, f), false);
    // the process's own opt-in does
    assert.equal(traced({ optInEnv: 'TRACE_ME' }, { ...f, env: { TRACE_ME: 'true' } }), true);
    // and excludes still win
    assert.equal(traced({ includeExe: ['/usr/bin/otelcol-*'], excludeName: ['otelcol-*'] }, f), false);
  });
  test('the rule can be turned off or replaced', () => {
    assert.equal(traced({ defaultExcludes: false }, { exe: '/otelcol-contrib' }), true);
    assert.equal(traced({ defaultExcludes: ['my-collector'] }, { exe: '/otelcol-contrib' }), true);
    assert.match(decide({ defaultExcludes: ['my-*'] }, proc({ exe: '/opt/my-collector' })).reason, /default telemetry back-end rule my-\*/);
    assert.ok(DEFAULT_TELEMETRY_BACKENDS.includes('otelcol*'));
  });
});

describe('executable and name', () => {
  test('include and exclude globs, excludes win', () => {
    const rules = { includeExe: ['/srv/**'], excludeName: ['debug-*'] };
    assert.equal(traced(rules, { exe: '/srv/bin/api' }), true);
    assert.equal(traced(rules, { exe: '/usr/bin/api' }), false);
    const d = decide(rules, proc({ exe: '/srv/bin/debug-api', name: 'debug-api' }));
    assert.deepEqual(d, { traced: false, reason: 'process name matches exclude rule debug-*' });
    assert.deepEqual(decide({ includeName: ['api'] }, proc()), { traced: true, reason: 'process name matches include rule api' });
  });
});

describe('command line', () => {
  test('globs cross / and spaces; two processes of one binary get opposite decisions', () => {
    const rules = { includeCmdline: ['*--role=api*'] };
    const api = decide(rules, proc({ cmdline: '/srv/bin/server --role=api --port 8080' }));
    const worker = decide(rules, proc({ cmdline: '/srv/bin/server --role=worker' }));
    assert.deepEqual(api, { traced: true, reason: 'command line matches include rule *--role=api*' });
    assert.deepEqual(worker, { traced: false, reason: 'matches no include rule' });
  });
  test('exclude wins over an executable include', () => {
    const rules = { includeExe: ['/srv/**'], excludeCmdline: ['* --dry-run*'] };
    assert.equal(traced(rules, { cmdline: '/srv/bin/api --dry-run' }), false);
    assert.match(decide(rules, proc({ cmdline: '/srv/bin/api --dry-run' })).reason, /command line matches exclude rule \* --dry-run\*/);
    assert.equal(traced(rules, { cmdline: '/srv/bin/api' }), true);
  });
  test('an unreadable command line matches no command-line rule', () => {
    assert.equal(traced({ includeCmdline: ['*'] }, {}), false);
    assert.equal(traced({ excludeCmdline: ['*'] }, {}), true);
  });
  test('glob characters other than * and ? are literal', () => {
    assert.ok(textGlob('a.b').test('a.b'));
    assert.ok(!textGlob('a.b').test('axb'));
    assert.ok(textGlob('x?z').test('xyz'));
    assert.ok(textGlob('(x)[1]+$').test('(x)[1]+$'));
    assert.ok(textGlob('*').test('multi\nline'));
  });
});

describe('environment', () => {
  test('GOTRAIL_TRACE=false or 0 opts a process out, over any include', () => {
    for (const v of ['false', '0', 'FALSE', ' False ']) {
      const d = decide({ includeExe: ['/srv/**'] }, proc({ env: { GOTRAIL_TRACE: v } }));
      assert.equal(d.traced, false, v);
      assert.equal(d.reason, `its environment sets GOTRAIL_TRACE=${v}`);
    }
    assert.equal(traced({}, { env: { GOTRAIL_TRACE: 'true' } }), true);
    assert.equal(traced({}, { env: { GOTRAIL_TRACE: '' } }), true);
    assert.equal(traced({}, { env: null }), true, 'an unreadable environment does not opt out');
  });
  test('two processes of one binary, opposite opt-out', () => {
    assert.equal(traced({}, { env: { GOTRAIL_TRACE: '0' } }), false);
    assert.equal(traced({}, { env: { OTHER: '0' } }), true);
  });
  test('opt-in: only NAME=true or 1 is traced', () => {
    const rules = { optInEnv: 'TRACE_ME' };
    assert.deepEqual(decide(rules, proc({ env: { TRACE_ME: 'true' } })), { traced: true, reason: 'opted in with TRACE_ME' });
    assert.equal(traced(rules, { env: { TRACE_ME: '1' } }), true);
    assert.equal(traced(rules, { env: { TRACE_ME: 'TRUE' } }), true);
    assert.deepEqual(decide(rules, proc({ env: {} })), { traced: false, reason: 'opt-in required: TRACE_ME is not set in its environment (needs true or 1)' });
    assert.match(decide(rules, proc({ env: { TRACE_ME: 'yes' } })).reason, /TRACE_ME is "yes"/);
    assert.equal(traced(rules, { env: null }), false, 'unreadable: not opted in');
  });
  test('opt-in combines with includes: both needed', () => {
    const rules = { optInEnv: 'TRACE_ME', includeExe: ['/srv/**'] };
    assert.match(decide(rules, proc({ env: { TRACE_ME: '1' } })).reason, /executable matches include rule \/srv\/\*\* \(opted in with TRACE_ME=1\)/);
    assert.equal(traced(rules, { exe: '/usr/bin/x', env: { TRACE_ME: '1' } }), false);
    assert.equal(traced(rules, { env: {} }), false);
  });
  test('opt-out wins over opt-in', () => {
    assert.equal(traced({ optInEnv: 'TRACE_ME' }, { env: { TRACE_ME: '1', GOTRAIL_TRACE: 'false' } }), false);
  });
});

describe('container', () => {
  test('id prefixes, with or without a runtime scheme', () => {
    assert.match(decide({ includeContainer: ['3f3f3f'] }, proc({ container: CID })).reason, /^container 3f3f3f3f3f3f matches include rule 3f3f3f$/);
    assert.equal(traced({ includeContainer: ['containerd://3F3F'] }, { container: CID }), true);
    assert.equal(traced({ includeContainer: ['3f3f'] }, { container: OTHER_CID }), false);
    assert.equal(traced({ includeContainer: ['3f3f'] }, {}), false, 'a host process is in no container');
    assert.equal(traced({ excludeContainer: ['3f'] }, { container: CID }), false);
    assert.equal(traced({ excludeContainer: ['3f'] }, {}), true);
  });
  test('exclude wins over include', () => {
    assert.equal(traced({ includeContainer: [''.padEnd(4, '3f')], excludeContainer: [CID] }, { container: CID }), false);
  });
});

describe('Kubernetes namespace and pod labels', () => {
  const shop: PodView = { namespace: 'shop-prod', labels: { app: 'checkout', tier: 'backend', canary: 'true' } };
  test('namespace globs', () => {
    assert.match(decide({ includeNamespace: ['shop-*'] }, proc({ pod: shop })).reason, /namespace shop-prod matches include rule shop-\*/);
    assert.equal(traced({ includeNamespace: ['kube-*'] }, { pod: shop }), false);
    assert.match(decide({ excludeNamespace: ['*-prod'] }, proc({ pod: shop })).reason, /namespace shop-prod matches exclude rule \*-prod/);
  });
  test('label rules: key=value, key=glob, key alone', () => {
    assert.match(decide({ includePodLabel: ['app=checkout'] }, proc({ pod: shop })).reason, /pod label app=checkout matches include rule app=checkout/);
    assert.equal(traced({ includePodLabel: ['app=check*'] }, { pod: shop }), true);
    assert.equal(traced({ includePodLabel: ['app=cart'] }, { pod: shop }), false);
    assert.equal(traced({ includePodLabel: ['canary'] }, { pod: shop }), true);
    assert.equal(traced({ includePodLabel: ['stable'] }, { pod: shop }), false);
    assert.equal(traced({ includePodLabel: ['app=checkout'], excludePodLabel: ['canary=true'] }, { pod: shop }), false);
  });
  test('processes outside Kubernetes match no pod rule', () => {
    assert.equal(traced({ includeNamespace: ['*'] }, {}), false);
    assert.equal(traced({ excludeNamespace: ['*'] }, {}), true);
  });
  test('a pod not known yet leaves the decision pending, unless another rule decides first', () => {
    const d = decide({ excludeNamespace: ['kube-system'] }, proc({ pod: 'pending' }));
    assert.equal(d.pending, true);
    assert.equal(d.traced, false);
    assert.equal(decide({ includeNamespace: ['shop'] }, proc({ pod: 'pending' })).pending, true);
    // decided without the pod: an exclude that already matched, an include that already matched
    assert.equal(decide({ excludeExe: ['/srv/**'], excludeNamespace: ['x'] }, proc({ pod: 'pending' })).pending, undefined);
    assert.deepEqual(decide({ includeExe: ['/srv/**'], includeNamespace: ['x'] }, proc({ pod: 'pending' })), { traced: true, reason: 'executable matches include rule /srv/**' });
    // no pod rule: the pod is never asked for
    const p = proc({ pod: 'pending' });
    assert.equal(decide({}, p).traced, true);
    assert.equal(p.asked.pod, undefined);
  });
});

describe('precedence and laziness', () => {
  test('any exclude wins over any include', () => {
    const f: Facts = { cmdline: '/srv/bin/api -x', container: CID, pod: { namespace: 'shop', labels: { app: 'a' } }, env: {} };
    const includeAll: SelectionRules = { includeExe: ['/srv/**'], includeName: ['api'], includeCmdline: ['*'], includeContainer: ['3f'], includeNamespace: ['*'], includePodLabel: ['app'] };
    assert.equal(traced(includeAll, f), true);
    for (const ex of [{ excludeExe: ['/srv/**'] }, { excludeName: ['a*'] }, { excludeCmdline: ['*-x'] }, { excludeContainer: ['3f'] }, { excludeNamespace: ['shop'] }, { excludePodLabel: ['app=a'] }]) {
      const d = decide({ ...includeAll, ...ex }, proc(f));
      assert.equal(d.traced, false, JSON.stringify(ex));
      assert.match(d.reason, /exclude rule/);
    }
  });
  test('facts are read only when a rule needs them, once', () => {
    const p = proc({ cmdline: 'x' });
    decide({}, p);
    assert.deepEqual(p.asked, { env: 1 }, 'the opt-out needs the environment; nothing else is read');
    const q = proc({ cmdline: 'x' });
    decide({ excludeExe: ['/srv/**'], excludeCmdline: ['y'] }, q);
    assert.deepEqual(q.asked, {}, 'an executable exclude decides before any read');
    const r = proc({ cmdline: 'x', container: CID });
    decide({ excludeCmdline: ['y'], includeCmdline: ['x'], includeContainer: ['3f'] }, r);
    assert.deepEqual(r.asked, { env: 1, cmdline: 1 });
  });
  test('rules are validated', () => {
    assert.deepEqual(validateSelection({ includePodLabel: ['app=x', 'tier'], includeContainer: ['docker://abc'], optInEnv: 'TRACE_ME' }), []);
    assert.equal(validateSelection({ includePodLabel: ['=x'] }).length, 1);
    assert.equal(validateSelection({ excludeContainer: ['not-hex'] }).length, 1);
    assert.equal(validateSelection({ includeContainer: [''] }).length, 1);
    assert.equal(validateSelection({ optInEnv: 'A-B' }).length, 1);
  });
  test('an executable rule that can match no executable path (a relative one) is refused, not left to select nothing or exclude nothing', () => {
    // the rules match /proc/PID/exe, always absolute: "build/go/**" or "./app" never matched, and an exclude of it let the program be traced
    assert.deepEqual(validateSelection({ includeExe: ['build/go/**'], excludeExe: ['./debug-tool'] }), [
      'executable rule "build/go/**": expected a glob of an absolute path (executables are matched by their absolute path): e.g. "/srv/**", or "**/build/go/**" in any directory',
      'executable rule "./debug-tool": expected a glob of an absolute path (executables are matched by their absolute path): e.g. "/srv/**", or "**/debug-tool" in any directory',
    ]);
    assert.deepEqual(validateSelection({ includeExe: ['/srv/**', '**/app', '*/x', '{/a,/b}/**', '?srv/app', '[/]srv/**'] }), []);
  });
  test('usesKubernetes tells whether pod metadata is needed', () => {
    assert.equal(usesKubernetes({ includeExe: ['x'] }), false);
    assert.equal(usesKubernetes({ excludePodLabel: ['a'] }), true);
    assert.equal(usesKubernetes({ includeNamespace: ['a'] }), true);
  });
});
