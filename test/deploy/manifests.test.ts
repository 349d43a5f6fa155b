/**
 * The Kubernetes deployment as a cluster would receive it: the kustomize base
 * (deploy/kubernetes/base) and the Helm chart (deploy/helm/gotrail) rendered
 * by the real tools, validated strictly by kubeconform against the Kubernetes
 * schemas (two API versions) and the Prometheus Operator's PodMonitor CRD,
 * and checked for what the agent must and must not be given.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/agent-process.ts';
import { BATCHER_DEFAULTS } from '../../daemon/export/batcher.ts';
import { kubeconform, kubernetesVersions, parseYamlStream, run, runOk, skipUnlessTools, tool, type K8sObject } from './tools.ts';

const skip = skipUnlessTools();
const base = join(repoRoot, 'deploy', 'kubernetes', 'base');
const chart = join(repoRoot, 'deploy', 'helm', 'gotrail');
const capabilities = ['BPF', 'PERFMON', 'SYS_PTRACE', 'KILL', 'DAC_READ_SEARCH', 'SYS_RESOURCE', 'NET_ADMIN', 'SYS_NICE'];

function renderKustomize(): string {
  return runOk(tool('kustomize'), ['build', base]);
}

function renderChart(...set: string[]): string {
  return runOk(tool('helm'), ['template', 'gotrail', chart, '--namespace', 'gotrail', ...set.flatMap((s) => ['--set', s])]);
}

function assertValid(yaml: string, what: string): void {
  for (const v of kubernetesVersions) {
    const r = kubeconform(yaml, v);
    assert.equal(r.status, 0, `${what} against Kubernetes ${v}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /Summary: \d+ resources? found .* - Valid: \d+, Invalid: 0, Errors: 0, Skipped: 0/);
  }
}

function find(objs: K8sObject[], kind: string): K8sObject {
  const o = objs.find((x) => x.kind === kind);
  assert.ok(o, `no ${kind} among ${objs.map((x) => x.kind).join(', ')}`);
  return o;
}

interface Container {
  args: string[];
  env: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean }; fieldRef?: unknown } }>;
  ports: Array<{ name: string; containerPort: number }>;
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  securityContext: {
    privileged: boolean;
    allowPrivilegeEscalation: boolean;
    readOnlyRootFilesystem: boolean;
    capabilities: { drop: string[]; add: string[] };
  };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}

/** What any rendering of the deployment must give the agent, and nothing more. */
function assertLeastPrivilege(objs: K8sObject[]): void {
  const ds = find(objs, 'DaemonSet') as unknown as { spec: { template: { spec: { terminationGracePeriodSeconds: number; hostPID: boolean; hostNetwork?: boolean; serviceAccountName: string; containers: Container[]; volumes: Array<{ name: string; configMap?: { name: string }; hostPath?: { path: string } }> } } } };
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostPID, true, 'every process of the node is visible');
  // the stop's flush gives up after the export timeout; detaching comes after it
  assert.ok(pod.terminationGracePeriodSeconds * 1000 >= BATCHER_DEFAULTS.exportTimeoutMillis + 10_000, `grace period ${pod.terminationGracePeriodSeconds} s leaves time to detach after a flush that times out`);
  assert.notEqual(pod.hostNetwork, true);
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0]!;
  assert.equal(c.securityContext.privileged, false);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.deepEqual([...c.securityContext.capabilities.add].sort(), [...capabilities].sort());
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory, 'requests');
  assert.ok(c.resources.limits.cpu && c.resources.limits.memory, 'limits');
  assert.deepEqual([c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path], ['/healthz', '/readyz']);
  assert.ok(c.ports.some((p) => p.name === c.livenessProbe.httpGet.port), 'probes use the metrics port');
  assert.deepEqual(c.args.slice(0, 3), ['run', '--config', '/etc/gotrail/config.yaml']);
  assert.ok(c.env.some((e) => e.name === 'K8S_NODE_NAME'), 'the agent knows its node');
  const config = c.volumeMounts.find((m) => m.mountPath === '/etc/gotrail');
  assert.ok(config?.readOnly, 'the configuration is mounted read-only at /etc/gotrail');
  const cm = find(objs, 'ConfigMap');
  assert.equal(pod.volumes.find((v) => v.name === config.name)?.configMap?.name, cm.metadata.name);
  assert.match((cm as unknown as { data: Record<string, string> }).data['config.yaml'] ?? '', /exporter:/);
  // host paths: only the kernel's BTF, read-only, where the host has it
  // (not the rest of /sys/kernel: securityfs, debugfs, tracefs)
  const hostPaths = pod.volumes.filter((v) => v.hostPath).map((v) => v.hostPath!);
  assert.deepEqual(hostPaths, [{ path: '/sys/kernel/btf', type: 'Directory' }]);
  const btf = pod.volumes.find((v) => v.hostPath)!.name;
  assert.deepEqual(c.volumeMounts.filter((m) => m.mountPath.startsWith('/sys')), [{ name: btf, mountPath: '/sys/kernel/btf', readOnly: true }]);
  // every peer reaches the metrics port (scrapers, probes); /status and /calibrate only loopback ones unless asked
  const flag = (name: string): string | undefined => {
    const i = c.args.indexOf(name);
    return i < 0 ? undefined : c.args[i + 1];
  };
  assert.equal(flag('--metrics-address'), `0.0.0.0:${c.ports.find((p) => p.name === 'metrics')!.containerPort}`);
  assert.ok(['loopback', 'any'].includes(flag('--admin-access') ?? ''), `--admin-access is given: ${c.args.join(' ')}`);
  // no credential in the ConfigMap or a plain env value
  assert.doesNotMatch((cm as unknown as { data: Record<string, string> }).data['config.yaml'] ?? '', /headers/);
  for (const e of c.env) assert.ok(!/HEADERS/.test(e.name) || e.valueFrom?.secretKeyRef, `${e.name} comes from a Secret`);

  const role = find(objs, 'ClusterRole') as K8sObject & { rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }> };
  assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] }]);
  const binding = find(objs, 'ClusterRoleBinding') as unknown as { roleRef: { name: string }; subjects: Array<{ kind: string; name: string }> };
  assert.equal(binding.roleRef.name, role.metadata.name);
  assert.deepEqual(binding.subjects.map((s) => `${s.kind}/${s.name}`), [`ServiceAccount/${pod.serviceAccountName}`]);
  assert.equal(find(objs, 'ServiceAccount').metadata.name, pod.serviceAccountName);
  assert.equal(objs.filter((o) => o.kind === 'Role' || o.kind === 'ClusterRole').length, 1, 'no other role');

  const svc = find(objs, 'Service') as unknown as { spec: { ports: Array<{ targetPort: string }>; selector: Record<string, string> } };
  assert.equal(svc.spec.ports[0]!.targetPort, 'metrics');
}

test('kustomize base: valid for Kubernetes and the PodMonitor CRD, least privilege', { skip }, () => {
  const yaml = renderKustomize();
  assertValid(yaml, 'kustomize build deploy/kubernetes/base');
  const objs = parseYamlStream(yaml);
  assert.deepEqual(objs.map((o) => o.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Namespace', 'PodMonitor', 'Service', 'ServiceAccount']);
  assertLeastPrivilege(objs);
  for (const o of objs) if (!o.kind.startsWith('Cluster') && o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'gotrail', `${o.kind} namespace`);
  const pm = find(objs, 'PodMonitor') as unknown as { spec: { podMetricsEndpoints: Array<{ port: string; path: string }> } };
  assert.deepEqual(pm.spec.podMetricsEndpoints.map((e) => `${e.port}${e.path}`), ['metrics/metrics']);
  const c = containerOf(objs);
  assert.equal(c.args[c.args.indexOf('--admin-access') + 1], 'loopback');
  // OTLP headers from a Secret when one is created, none without it
  assert.deepEqual(c.env.find((e) => e.name === 'OTEL_EXPORTER_OTLP_HEADERS')?.valueFrom, { secretKeyRef: { name: 'gotrail-otlp-headers', key: 'headers', optional: true } });
});

function containerOf(objs: K8sObject[]): Container & { image: string } {
  return (find(objs, 'DaemonSet') as unknown as { spec: { template: { spec: { containers: Array<Container & { image: string }> } } } }).spec.template.spec.containers[0]!;
}

test('Helm chart: helm lint, and the rendered chart is valid and least-privilege with default and non-default values', { skip }, () => {
  const lint = run(tool('helm'), ['lint', '--strict', chart]);
  assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  assert.match(lint.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);

  const defaults = renderChart();
  assertValid(defaults, 'helm template (defaults)');
  const objs = parseYamlStream(defaults);
  assertLeastPrivilege(objs);
  assert.equal(objs.filter((o) => o.kind === 'PodMonitor').length, 0, 'no PodMonitor unless asked (it needs the CRD)');
  assert.equal(objs.filter((o) => o.kind === 'NetworkPolicy').length, 0, 'no NetworkPolicy unless asked');
  const d = containerOf(objs);
  assert.equal(d.args[d.args.indexOf('--admin-access') + 1], 'loopback');
  assert.equal(d.env.find((e) => e.name === 'OTEL_EXPORTER_OTLP_HEADERS'), undefined, 'no headers variable without a Secret');

  const custom = renderChart('metrics.podMonitor.enabled=true', 'metrics.podMonitor.labels.release=prom', 'metrics.port=9500', 'image.tag=1.2.3', 'extraArgs[0]=--log-level=debug');
  assertValid(custom, 'helm template (PodMonitor, port 9500)');
  const objs2 = parseYamlStream(custom);
  assertLeastPrivilege(objs2);
  assert.equal(find(objs2, 'PodMonitor').metadata.labels?.release, 'prom');
  const c = (find(objs2, 'DaemonSet') as unknown as { spec: { template: { spec: { containers: Array<Container & { image: string }> } } } }).spec.template.spec.containers[0]!;
  assert.equal(c.image, 'gotrail:1.2.3');
  assert.deepEqual(c.ports.map((p) => p.containerPort), [9500]);
  assert.deepEqual(c.args.slice(3), ['--metrics-address', '0.0.0.0:9500', '--admin-access', 'loopback', '--log-level=debug']);
});

test('Helm chart: /status opened to every peer on request, OTLP headers from a named Secret, a NetworkPolicy that admits the metrics port only', { skip }, () => {
  const yaml = renderChart('metrics.adminAccess=any', 'metrics.port=9500', 'otlpHeadersSecret.name=otlp-auth', 'otlpHeadersSecret.key=api', 'networkPolicy.enabled=true',
    'networkPolicy.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring', 'networkPolicy.from[0].podSelector.matchLabels.app=prometheus');
  assertValid(yaml, 'helm template (adminAccess any, headers Secret, NetworkPolicy)');
  const objs = parseYamlStream(yaml);
  assertLeastPrivilege(objs);
  const c = containerOf(objs);
  assert.equal(c.args[c.args.indexOf('--admin-access') + 1], 'any');
  assert.deepEqual(c.env.filter((e) => e.name === 'OTEL_EXPORTER_OTLP_HEADERS').map((e) => e.valueFrom), [{ secretKeyRef: { name: 'otlp-auth', key: 'api' } }]);
  const ds = find(objs, 'DaemonSet') as unknown as { spec: { selector: { matchLabels: Record<string, string> } } };
  const np = find(objs, 'NetworkPolicy') as unknown as { spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: Array<{ ports: Array<{ port: number; protocol: string }>; from?: unknown[] }>; egress?: unknown } };
  assert.deepEqual(np.spec.podSelector.matchLabels, ds.spec.selector.matchLabels, 'it selects the agents');
  assert.deepEqual(np.spec.policyTypes, ['Ingress'], 'egress (OTLP export, the API server) is left alone');
  assert.deepEqual(np.spec.ingress, [{
    ports: [{ port: 9500, protocol: 'TCP' }],
    from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } }, podSelector: { matchLabels: { app: 'prometheus' } } }],
  }]);
  // without peers: the metrics port from every source, still nothing else
  const open = find(parseYamlStream(renderChart('networkPolicy.enabled=true')), 'NetworkPolicy') as unknown as typeof np;
  assert.deepEqual(open.spec.ingress, [{ ports: [{ port: 9464, protocol: 'TCP' }] }]);
});

/** The chart's NOTES.txt as Helm renders it after an install (`helm template` leaves notes out: rendered here through a copy of the chart that includes them in a manifest). */
function renderNotes(...set: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-chart-'));
  try {
    cpSync(chart, join(dir, 'gotrail'), { recursive: true });
    const t = join(dir, 'gotrail', 'templates');
    writeFileSync(join(t, '_notes.tpl'), `{{- define "gotrail.test.notes" -}}\n${readFileSync(join(t, 'NOTES.txt'), 'utf8')}\n{{- end -}}\n`);
    writeFileSync(join(t, 'notes.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include "gotrail.test.notes" . | toJson }}\n');
    const out = runOk(tool('helm'), ['template', 'gotrail', join(dir, 'gotrail'), '--namespace', 'gotrail', '--show-only', 'templates/notes.yaml', ...set.flatMap((s) => ['--set', s])]);
    return (parseYamlStream(out)[0] as unknown as { data: { notes: string } }).data.notes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('Helm chart notes: the namespace label the pods need, and /status through port-forward', { skip }, () => {
  const notes = renderNotes();
  // no cluster to look the namespace up in: the label is asked for
  assert.match(notes, /^ {2}kubectl label namespace gotrail pod-security\.kubernetes\.io\/enforce=privileged$/m);
  assert.match(notes, /^ {2}kubectl -n gotrail port-forward ds\/gotrail 9464$/m);
  assert.match(notes, /^ {2}curl localhost:9464\/status$/m);
  assert.match(notes, /loopback peers only/);
  assert.match(renderNotes('metrics.adminAccess=any', 'metrics.port=9500'), /every peer[^]*port-forward ds\/gotrail 9500$/m);
});

test('Helm chart: a configuration change changes the ConfigMap only, not the pod template (reloaded, not rolled out)', { skip }, () => {
  const a = parseYamlStream(renderChart());
  const b = parseYamlStream(renderChart('config.exporter.otlp.endpoint=http://other:4318'));
  assert.notDeepEqual(find(a, 'ConfigMap'), find(b, 'ConfigMap'));
  assert.deepEqual(find(a, 'DaemonSet'), find(b, 'DaemonSet'));
});

test('kubeconform rejects what the cluster would: a misspelt field, a PodMonitor field the CRD lacks', { skip }, () => {
  const yaml = renderKustomize();
  const typo = yaml.replace('readOnlyRootFilesystem: true', 'readOnlyRootFileSystem: true');
  assert.notEqual(typo, yaml);
  const r = kubeconform(typo, kubernetesVersions[0]!);
  assert.notEqual(r.status, 0);
  assert.match(r.stdout, /DaemonSet gotrail is invalid: .*readOnlyRootFileSystem/);
  const pm = yaml.replace('podMetricsEndpoints:', 'podMetricEndpoints:');
  const r2 = kubeconform(pm, kubernetesVersions[0]!);
  assert.notEqual(r2.status, 0);
  assert.match(r2.stdout, /PodMonitor gotrail is invalid: .*podMetricEndpoints/);
});
