/**
 * Reads the reference offsets that opentelemetry-go-instrumentation publishes
 * (kept outside the repository, in ../shared/reference/; see its README) as
 * facts for the generator and the tests.
 */
import { join } from 'node:path';
import type { Observation } from './merge.ts';

/** The `source` of every fact taken from the reference data. */
export const REFERENCE_SOURCE = 'reference:otel-go-instrumentation';

/** Where the reference file lives, relative to the repository root. */
export function defaultReferencePath(repoRoot: string): string {
  return join(repoRoot, '..', 'shared', 'reference', 'otel-go-instrumentation-offsets.json');
}

interface RefFile {
  module: string;
  packages: Array<{
    package: string;
    structs: Array<{
      struct: string;
      fields: Array<{ field: string; offsets: Array<{ offset: number | null; versions: string[] }> }>;
    }>;
  }>;
}

/**
 * Facts for the given fields of one module (`std` or a module path), keyed by
 * field; fields the reference does not know get an empty list. Versions are
 * kept as the reference writes them (no `go`/`v` prefix).
 *
 * @throws Error when the data does not have the documented shape.
 */
export function referenceObservations(data: unknown, module: string, fields: readonly string[]): Map<string, Observation[]> {
  if (!Array.isArray(data)) throw new Error('reference data: expected an array of modules');
  const out = new Map<string, Observation[]>(fields.map((f) => [f, []]));
  for (const m of data as RefFile[]) {
    if (m.module !== module) continue;
    for (const p of m.packages) {
      for (const s of p.structs) {
        for (const f of s.fields) {
          const list = out.get(`${p.package}.${s.struct}.${f.field}`);
          if (list === undefined) continue;
          for (const o of f.offsets) {
            for (const version of o.versions) list.push({ version, offset: o.offset, source: REFERENCE_SOURCE });
          }
        }
      }
    }
  }
  return out;
}
