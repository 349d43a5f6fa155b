/**
 * The deployment validators that set-up builds into build/tools
 * (deploy/tools/tools.mk), and a runner that returns what they print.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../support/agent-process.ts';

export const toolsDir = join(repoRoot, 'build', 'tools');
export const tool = (name: string): string => join(toolsDir, name);
export const kubernetesVersions = ['1.30.0', '1.36.0'];
export const schemasDir = join(toolsDir, 'schemas');

/** Skip reason when set-up has not built the validators (it does before every test run). */
export function skipUnlessTools(): string | false {
  for (const t of ['kubeconform', 'helm', 'kustomize', 'crdschema', 'dashboardcheck', 'yaml2json']) {
    if (!existsSync(tool(t))) return `build/tools/${t} is missing: run deploy/setup.sh`;
  }
  return false;
}

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], input?: string, cwd = repoRoot): Run {
  const r = spawnSync(cmd, args, { cwd, input, encoding: 'utf8', maxBuffer: 64 << 20, env: { ...process.env, HELM_CACHE_HOME: join(toolsDir, 'helm-home', 'cache'), HELM_CONFIG_HOME: join(toolsDir, 'helm-home', 'config'), HELM_DATA_HOME: join(toolsDir, 'helm-home', 'data') } });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs and fails with everything printed unless the exit status is 0. */
export function runOk(cmd: string, args: string[], input?: string): string {
  const r = run(cmd, args, input);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * kubeconform over a YAML stream, strict (unknown fields are errors), against
 * the Kubernetes schemas of `version` and the PodMonitor CRD schema; a kind
 * without a schema is an error too.
 */
export function kubeconform(yaml: string, version: string): Run {
  return run(tool('kubeconform'), [
    '-strict', '-summary', '-output', 'text',
    '-kubernetes-version', version,
    '-schema-location', join(schemasDir, 'kubernetes', '{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}', '{{ .ResourceKind }}{{ .KindSuffix }}.json'),
    '-schema-location', join(schemasDir, 'crd', '{{ .Group }}', '{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'),
    '-',
  ], yaml);
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

export function parseYamlStream(yaml: string): K8sObject[] {
  return JSON.parse(runOk(tool('yaml2json'), [], yaml)) as K8sObject[];
}
