/**
 * The OpenTelemetry resource of a traced process, read from /proc: the
 * process's own OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (as its SDK would
 * have used them), else the executable's name.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { Attributes } from '@opentelemetry/api';

export const AGENT_NAME = 'gotrail';
export const AGENT_VERSION = '0.1.0';

/** Parses OTEL_RESOURCE_ATTRIBUTES (`k=v,k2=v2`, values percent-encoded). Malformed pairs are skipped, as the SDKs do. */
export function parseResourceAttributes(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of value.split(',')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const key = pair.slice(0, eq).trim();
    let v = pair.slice(eq + 1).trim();
    try {
      v = decodeURIComponent(v);
    } catch {
      continue;
    }
    if (key) out[key] = v;
  }
  return out;
}

/** Reads a process's environment; undefined when unreadable (gone, or not ours to read). */
export function readProcessEnv(pid: number, procRoot = '/proc'): Map<string, string> | undefined {
  let raw: Buffer;
  try {
    raw = readFileSync(`${procRoot}/${pid}/environ`);
  } catch {
    return undefined;
  }
  const env = new Map<string, string>();
  for (const entry of raw.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

export interface ProcessFacts {
  pid: number;
  executablePath: string;
  goVersion: string;
  env?: Map<string, string>;
  /** Extra attributes from discovery (container, Kubernetes). */
  extra?: Attributes;
}

export function processAttributes(p: ProcessFacts): Attributes {
  const fromEnv = p.env?.get('OTEL_RESOURCE_ATTRIBUTES');
  const attrs: Attributes = fromEnv ? { ...parseResourceAttributes(fromEnv) } : {};
  const serviceName = p.env?.get('OTEL_SERVICE_NAME') || (attrs['service.name'] as string | undefined) || basename(p.executablePath);
  Object.assign(attrs, p.extra ?? {});
  attrs['service.name'] = serviceName;
  attrs['process.pid'] = p.pid;
  attrs['process.executable.path'] = p.executablePath;
  attrs['process.executable.name'] = basename(p.executablePath);
  attrs['process.runtime.name'] = 'go';
  attrs['process.runtime.version'] = p.goVersion;
  attrs['host.name'] = hostname();
  attrs['telemetry.distro.name'] = AGENT_NAME;
  attrs['telemetry.distro.version'] = AGENT_VERSION;
  return attrs;
}

export function processResource(p: ProcessFacts): Resource {
  return resourceFromAttributes(processAttributes(p));
}
