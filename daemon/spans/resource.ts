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

/** OTEL_RESOURCE_ATTRIBUTES parsed: its attributes, or why the whole value was discarded. */
export type ParsedResourceAttributes = { ok: true; attributes: Record<string, string> } | { ok: false; problem: string };

/**
 * Parses OTEL_RESOURCE_ATTRIBUTES as the OpenTelemetry resource SDK
 * specification reads it: `key1=value1,key2=value2` (W3C Baggage list
 * members without properties), whitespace around keys and values trimmed,
 * keys and values percent-decoded (`,` and `=` in them are written `%2C`,
 * `%3D`; `+` stays `+`). On any error — a member without `=`, an empty key,
 * a bad percent-encoding or one that is not UTF-8 — the **whole** value is
 * discarded (the specification: "the entire environment variable value
 * SHOULD be discarded and an error SHOULD be reported"), and `problem` names
 * the member by its position (and its key where that decoded), never a
 * value, which may be a secret. Empty members (`a=1,,b=2`, a trailing comma)
 * are skipped. A key given twice keeps its last value.
 */
export function parseResourceAttributes(value: string): ParsedResourceAttributes {
  const attributes: Record<string, string> = {};
  const members = value.split(',');
  for (let i = 0; i < members.length; i++) {
    const member = members[i]!;
    if (member.trim() === '') continue;
    const at = `member ${i + 1}`;
    const eq = member.indexOf('=');
    if (eq < 0) return { ok: false, problem: `${at} is not key=value (no "=")` };
    let key: string;
    try {
      key = decodeURIComponent(member.slice(0, eq).trim());
    } catch {
      return { ok: false, problem: `${at}: its key is not valid percent-encoded UTF-8` };
    }
    if (key === '') return { ok: false, problem: `${at} has an empty key` };
    try {
      attributes[key] = decodeURIComponent(member.slice(eq + 1).trim());
    } catch {
      return { ok: false, problem: `${at} (${JSON.stringify(key)}): its value is not valid percent-encoded UTF-8` };
    }
  }
  return { ok: true, attributes };
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

/**
 * The resource attributes of a traced process. `onDiscarded` is called with
 * the problem when the process's OTEL_RESOURCE_ATTRIBUTES is malformed and
 * therefore left out whole (see {@link parseResourceAttributes}).
 */
export function processAttributes(p: ProcessFacts, onDiscarded?: (problem: string) => void): Attributes {
  const fromEnv = p.env?.get('OTEL_RESOURCE_ATTRIBUTES');
  const parsed = fromEnv ? parseResourceAttributes(fromEnv) : undefined;
  if (parsed && !parsed.ok) onDiscarded?.(parsed.problem);
  const attrs: Attributes = parsed?.ok ? { ...parsed.attributes } : {};
  // OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES; an empty one counts as unset
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

/** The resource of a traced process (see {@link processAttributes}). */
export function processResource(p: ProcessFacts, onDiscarded?: (problem: string) => void): Resource {
  return resourceFromAttributes(processAttributes(p, onDiscarded));
}
