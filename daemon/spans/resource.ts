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
import { ATTR_SERVICE_NAME, ATTR_TELEMETRY_DISTRO_NAME, ATTR_TELEMETRY_DISTRO_VERSION } from '@opentelemetry/semantic-conventions';
// Not yet stable in the conventions; the exact package version is locked, so a
// rename there shows up as a type error when the dependency is upgraded.
import {
  ATTR_HOST_NAME, ATTR_PROCESS_EXECUTABLE_NAME, ATTR_PROCESS_EXECUTABLE_PATH, ATTR_PROCESS_PID,
  ATTR_PROCESS_RUNTIME_NAME, ATTR_PROCESS_RUNTIME_VERSION,
} from './semconv.ts';

export const AGENT_NAME = 'gotrail';
export const AGENT_VERSION = '0.1.0';

/**
 * The semantic conventions the attribute keys follow: those of the
 * `@opentelemetry/semantic-conventions` package the keys come from (it is
 * versioned after the conventions it provides). Set on every span's
 * instrumentation scope; test/spans/semconv.test.ts fails when the package
 * moves on without it.
 */
export const SEMCONV_SCHEMA_URL = 'https://opentelemetry.io/schemas/1.45.0';

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
  const serviceName = p.env?.get('OTEL_SERVICE_NAME') || (attrs[ATTR_SERVICE_NAME] as string | undefined) || basename(p.executablePath);
  Object.assign(attrs, p.extra ?? {});
  attrs[ATTR_SERVICE_NAME] = serviceName;
  attrs[ATTR_PROCESS_PID] = p.pid;
  attrs[ATTR_PROCESS_EXECUTABLE_PATH] = p.executablePath;
  attrs[ATTR_PROCESS_EXECUTABLE_NAME] = basename(p.executablePath);
  attrs[ATTR_PROCESS_RUNTIME_NAME] = 'go';
  attrs[ATTR_PROCESS_RUNTIME_VERSION] = p.goVersion;
  attrs[ATTR_HOST_NAME] = hostname();
  attrs[ATTR_TELEMETRY_DISTRO_NAME] = AGENT_NAME;
  attrs[ATTR_TELEMETRY_DISTRO_VERSION] = AGENT_VERSION;
  return attrs;
}

export function processResource(p: ProcessFacts): Resource {
  return resourceFromAttributes(processAttributes(p));
}
