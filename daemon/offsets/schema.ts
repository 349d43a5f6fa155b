/**
 * The format of the offsets database files (`offsets-db/std.json`,
 * `offsets-db/<module path>.json`); offsets-db/README.md is the prose version.
 */
import { compareSemver, mustSemver, parseSemver } from './version.ts';

/** From `since` up to the next entry's `since`, the field sits at `offset` (`null`: it does not exist). */
export interface KnownRange {
  /** First version of the range, without `go`/`v` prefix: `1.19.0`. */
  since: string;
  offset: number | null;
  /**
   * Where the fact comes from: `dwarf:<toolchain>` (read from a binary built
   * here, e.g. `dwarf:go1.19.8`) or `reference:otel-go-instrumentation`.
   */
  source: string;
}

/** From `since` up to the next entry, nothing is known (no version there was built or referenced). */
export interface UnknownRange {
  since: string;
  unknown: true;
}

/** One entry of a field's history. */
export type RangeEntry = KnownRange | UnknownRange;

/** Everything known about one field, oldest range first. */
export interface FieldHistory {
  /** Newest version actually checked (by DWARF or by the reference data). */
  verifiedUpTo: string;
  ranges: RangeEntry[];
}

/** One data file. */
export interface OffsetsFile {
  /** `std`, or a module path such as `google.golang.org/grpc`. */
  module: string;
  /** Keyed by `pkg.Struct.field`, e.g. `net/http.Request.Method`. */
  fields: Record<string, FieldHistory>;
}

/** Type guard for the two entry kinds. */
export function isUnknown(e: RangeEntry): e is UnknownRange {
  return (e as UnknownRange).unknown === true;
}

/**
 * Checks a parsed data file: types, version syntax, strictly increasing
 * `since`, and a `verifiedUpTo` not older than the last range.
 *
 * @throws Error naming the file and the offending field.
 */
export function validateOffsetsFile(data: unknown, name: string): OffsetsFile {
  const fail = (msg: string): never => {
    throw new Error(`offsets database ${name}: ${msg}`);
  };
  if (typeof data !== 'object' || data === null) fail('not an object');
  const file = data as Partial<OffsetsFile>;
  if (typeof file.module !== 'string') fail('"module" must be a string');
  if (typeof file.fields !== 'object' || file.fields === null) fail('"fields" must be an object');
  for (const [field, hist] of Object.entries(file.fields as Record<string, unknown>)) {
    const h = hist as Partial<FieldHistory>;
    if (typeof h !== 'object' || h === null || typeof h.verifiedUpTo !== 'string' || !Array.isArray(h.ranges)) {
      fail(`${field}: want { verifiedUpTo, ranges[] }`);
    }
    const upTo = parseSemver(h.verifiedUpTo as string) ?? fail(`${field}: bad verifiedUpTo ${JSON.stringify(h.verifiedUpTo)}`);
    let prev: string | undefined;
    for (const e of h.ranges as unknown[]) {
      const r = e as Partial<KnownRange & UnknownRange>;
      if (typeof r !== 'object' || r === null || typeof r.since !== 'string' || parseSemver(r.since) === null) {
        fail(`${field}: range without a valid "since": ${JSON.stringify(e)}`);
      }
      if (r.unknown !== true) {
        if (!(r.offset === null || (Number.isSafeInteger(r.offset) && (r.offset as number) >= 0))) {
          fail(`${field}: bad offset in ${JSON.stringify(e)}`);
        }
        if (typeof r.source !== 'string' || r.source === '') fail(`${field}: range without "source": ${JSON.stringify(e)}`);
      }
      if (prev !== undefined && compareSemver(mustSemver(prev), mustSemver(r.since as string)) >= 0) {
        fail(`${field}: ranges not in increasing order at ${r.since}`);
      }
      prev = r.since;
    }
    if (prev === undefined) fail(`${field}: no ranges`);
    if (compareSemver(upTo, mustSemver(prev as string)) < 0) fail(`${field}: verifiedUpTo older than the last range`);
  }
  return file as OffsetsFile;
}
