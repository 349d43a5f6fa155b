/**
 * The Kubernetes deployment as a cluster would receive it: the kustomize base
 * (deploy/kubernetes/base) and the Helm chart (deploy/helm/gotrail) rendered
 * by the real tools, validated strictly by kubeconform against the Kubernetes
 * schemas (two API versions) and the Prometheus Operator's PodMonitor CRD,
 * and checked for what the agent must and must not be given.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
  env: Array<{ name: string }>;
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
  // host paths: only /sys/kernel (BTF), read-only
  const hostPaths = pod.volumes.filter((v) => v.hostPath).map((v) => v.hostPath!.path);
  assert.deepEqual(hostPaths, ['/sys/kernel']);
  assert.ok(c.volumeMounts.find((m) => m.mountPath === '/sys/kernel')?.readOnly);

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
});

test('Helm chart: helm lint, and the rendered chart is valid and least-privilege with default and non-default values', { skip }, () => {
  const lint = run(tool('helm'), ['lint', '--strict', chart]);
  assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  assert.match(lint.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);

  const defaults = renderChart();
  assertValid(defaults, 'helm template (defaults)');
  const objs = parseYamlStream(defaults);
  assertLeastPrivilege(objs);
  assert.equal(objs.filter((o) => o.kind === 'PodMonitor').length, 0, 'no PodMonitor unless asked (it needs the CRD)');

  const custom = renderChart('metrics.podMonitor.enabled=true', 'metrics.podMonitor.labels.release=prom', 'metrics.port=9500', 'image.tag=1.2.3', 'extraArgs[0]=--log-level=debug');
  assertValid(custom, 'helm template (PodMonitor, port 9500)');
  const objs2 = parseYamlStream(custom);
  assertLeastPrivilege(objs2);
  assert.equal(find(objs2, 'PodMonitor').metadata.labels?.release, 'prom');
  const c = (find(objs2, 'DaemonSet') as unknown as { spec: { template: { spec: { containers: Array<Container & { image: string }> } } } }).spec.template.spec.containers[0]!;
  assert.equal(c.image, 'gotrail:1.2.3');
  assert.deepEqual(c.ports.map((p) => p.containerPort), [9500]);
  assert.deepEqual(c.args.slice(3), ['--metrics-address', '0.0.0.0:9500', '--log-level=debug']);
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
