/**
 * Run-time resolution of struct-field offsets for one binary: DWARF of the
 * binary when it has it, then the binary's Go type metadata, then the offsets
 * database, under the rules written down in offsets-db/README.md
 * ("Resolution rules"). Sources that give different offsets for one field are
 * reported in `disagreements` (the first source in that order still wins).
 * Resolution never throws:
 * whatever cannot be resolved is returned in `missing` with a reason, so the
 * caller can disable exactly the probes that need it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isUnknown, validateOffsetsFile } from './schema.ts';
import type { FieldHistory, OffsetsFile, RangeEntry } from './schema.ts';
import {
  compareSemver,
  formatSemver,
  mustSemver,
  nextMinor,
  parseGoVersion,
  parseModuleVersion,
  release,
} from './version.ts';
import type { Semver } from './version.ts';

/** What to resolve. */
export interface ResolveRequest {
  /** `std` for the standard library, else the module path (`google.golang.org/grpc`). */
  module: string;
  /** As in the binary's build info: `go1.26.8` for std; `v1.2.3` or a pseudo-version for modules. */
  version: string;
  /** Qualified field names, `pkg.Struct.field`. */
  fields: string[];
}

/** Where a resolved offset came from. */
export type OffsetSource = 'dwarf' | 'types' | 'db' | 'db-extrapolated';

/** A source `resolveOffsets` can be limited to. */
export type OffsetSourceKind = 'dwarf' | 'types' | 'db';

/** Options for {@link resolveOffsets}. */
export interface ResolveOptions {
  /** Offsets read from the binary's own DWARF (see readStructOffsets); they win over everything else. Default: none. */
  dwarf?: Map<string, number>;
  /** Offsets read from the binary's Go type metadata (analysis/go-types.ts); they win over the database. Default: none. */
  types?: Map<string, number>;
  /** Resolve from this source alone (for comparing sources). Default: all, in the order dwarf, types, db. */
  only?: OffsetSourceKind;
  /** Use this database instead of loading `offsets-db/<module>.json`. Default: load from {@link ResolveOptions.dbDir}. */
  db?: OffsetsFile | null;
  /** Directory holding the data files. Default: the repository's `offsets-db/`. */
  dbDir?: string;
}

/** A field that could not be resolved, and why. */
export interface MissingOffset {
  field: string;
  reason: string;
}

/** One field for which two sources of one binary gave different offsets. */
export interface OffsetDisagreement {
  field: string;
  /** The offset each source gave (db: exact or carried forward). */
  offsets: Partial<Record<OffsetSourceKind, number>>;
  /** The source whose offset was used. */
  chosen: OffsetSourceKind;
}

/** Outcome of {@link resolveOffsets}. */
export interface ResolveResult {
  /** Fields on which the sources disagree; empty when they agree or only one had the field. */
  disagreements: OffsetDisagreement[];
  offsets: Record<string, number>;
  missing: MissingOffset[];
  /** Resolved fields whose offset was not checked for this exact version (extrapolated, pre-release, untagged commit). */
  unverified: string[];
  source: Record<string, OffsetSource>;
}

/** How many newest minor release lines must agree before an offset is carried forward to newer versions. */
export const STABLE_MINOR_LINES = 3;

const DEFAULT_DB_DIR = fileURLToPath(new URL('../../offsets-db/', import.meta.url));
const cache = new Map<string, { db: OffsetsFile | null; error?: string }>();

/** A module path safe to turn into a file path (no traversal, no absolute paths). */
const MODULE_PATH = /^[A-Za-z0-9._~-]+(?:\/[A-Za-z0-9._~-]+)*$/;

/**
 * Loads (and caches) the data file of a module.
 * @returns `{ db: null }` when the module has no data file; `error` when the file is unreadable or invalid.
 */
export function loadOffsetsDb(module: string, dir: string = DEFAULT_DB_DIR): { db: OffsetsFile | null; error?: string } {
  const key = `${dir}\0${module}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  let out: { db: OffsetsFile | null; error?: string };
  if (!MODULE_PATH.test(module) || module.split('/').some((p) => p === '.' || p === '..')) {
    out = { db: null, error: `invalid module path ${JSON.stringify(module)}` };
  } else {
    const file = join(dir, `${module}.json`);
    try {
      out = { db: validateOffsetsFile(JSON.parse(readFileSync(file, 'utf8')), `${module}.json`) };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      out = e.code === 'ENOENT' ? { db: null } : { db: null, error: e.message };
    }
  }
  cache.set(key, out);
  return out;
}

type Lookup = { ok: true; offset: number; extrapolated: boolean } | { ok: false; why: string };

function fmtRangeEnd(h: FieldHistory, index: number): string {
  const next = h.ranges[index + 1];
  return next === undefined ? `through ${h.verifiedUpTo}` : `until ${next.since}`;
}

/** The entry whose range contains `v`, or -1 when `v` predates the first entry. */
function entryIndex(h: FieldHistory, v: Semver): number {
  let idx = -1;
  for (let i = 0; i < h.ranges.length; i++) {
    if (compareSemver(mustSemver(h.ranges[i]!.since), v) <= 0) idx = i;
    else break;
  }
  return idx;
}

function describe(h: FieldHistory, index: number, e: RangeEntry): string {
  if (isUnknown(e)) return `nothing known from ${e.since} ${fmtRangeEnd(h, index)}`;
  return `the field does not exist from ${e.since} ${fmtRangeEnd(h, index)}`;
}

/** One offset across every version in [lo, hi] (both ≤ verifiedUpTo), else why not. */
function constantOver(h: FieldHistory, lo: Semver, hi: Semver): Lookup {
  const first = entryIndex(h, lo);
  if (first < 0) return { ok: false, why: `${formatSemver(lo)} predates the data (from ${h.ranges[0]?.since})` };
  let offset: number | undefined;
  for (let i = first; i < h.ranges.length; i++) {
    const e = h.ranges[i]!;
    if (i > first && compareSemver(mustSemver(e.since), hi) > 0) break;
    if (isUnknown(e) || e.offset === null) return { ok: false, why: describe(h, i, e) };
    if (offset !== undefined && e.offset !== offset) {
      return { ok: false, why: `the offset changes at ${e.since} (${offset} → ${e.offset})` };
    }
    offset = e.offset;
  }
  return offset === undefined ? { ok: false, why: 'no data' } : { ok: true, offset, extrapolated: false };
}

/** Rule for versions newer than verifiedUpTo: the newest minor lines must all agree. */
function extrapolate(h: FieldHistory): Lookup {
  const upTo = mustSemver(h.verifiedUpTo);
  if (upTo.minor < STABLE_MINOR_LINES - 1) {
    return { ok: false, why: `fewer than ${STABLE_MINOR_LINES} minor release lines known` };
  }
  const lo: Semver = { major: upTo.major, minor: upTo.minor - (STABLE_MINOR_LINES - 1), patch: 0, pre: [] };
  const r = constantOver(h, lo, upTo);
  if (!r.ok) {
    return { ok: false, why: `not stable over the last ${STABLE_MINOR_LINES} minor releases (${formatSemver(lo)}–${h.verifiedUpTo}): ${r.why}` };
  }
  return { ok: true, offset: r.offset, extrapolated: true };
}

/**
 * A tagged release (or a version treated as one). With `minorLine` (the
 * standard library), a patch release newer than `verifiedUpTo` but of the
 * same minor line has the layout of `verifiedUpTo`: Go changes no struct
 * layout in patch releases (of the 15 standard-library layout changes in the
 * reference data, 1.19.0–1.27.0 with every patch release, none is in one).
 */
function atRelease(h: FieldHistory, v: Semver, minorLine = false): Lookup {
  const upTo = mustSemver(h.verifiedUpTo);
  if (compareSemver(v, upTo) > 0) {
    if (v.major !== upTo.major) return { ok: false, why: `major version ${v.major} differs from the data's ${upTo.major}` };
    if (minorLine && v.minor === upTo.minor) return atRelease(h, upTo);
    return extrapolate(h);
  }
  const i = entryIndex(h, v);
  if (i < 0) return { ok: false, why: `older than the data (from ${h.ranges[0]?.since})` };
  const e = h.ranges[i]!;
  if (isUnknown(e) || e.offset === null) return { ok: false, why: describe(h, i, e) };
  return { ok: true, offset: e.offset, extrapolated: false };
}

/** All of [lo, hi] must agree; the part beyond verifiedUpTo is covered by the extrapolation rule. */
function overWindow(h: FieldHistory, lo: Semver, hi: Semver): Lookup {
  const upTo = mustSemver(h.verifiedUpTo);
  if (compareSemver(lo, upTo) > 0) return atRelease(h, lo);
  const known = constantOver(h, lo, compareSemver(hi, upTo) <= 0 ? hi : upTo);
  if (!known.ok || compareSemver(hi, upTo) <= 0) return known;
  const ext = extrapolate(h);
  if (!ext.ok) return ext;
  if (ext.offset !== known.offset) return { ok: false, why: `offset differs between ${formatSemver(lo)} and ${h.verifiedUpTo}` };
  return ext;
}

interface FieldPlan {
  lookup: (h: FieldHistory) => Lookup;
  /** Versions that are never checked themselves (pre-releases, commits) are flagged even when resolved. */
  alwaysUnverified: boolean;
}

function planFor(module: string, version: string): FieldPlan | { error: string } {
  const parsed = module === 'std' ? parseGoVersion(version) : parseModuleVersion(version);
  if (!parsed.ok) return { error: parsed.reason };
  const v = parsed.version;
  if (module === 'std') {
    // Go pre-releases are cut from the release branch: their layout is that of X.Y.0.
    if (v.pre.length > 0) return { lookup: (h) => atRelease(h, release(v), true), alwaysUnverified: true };
    return { lookup: (h) => atRelease(h, v, true), alwaysUnverified: false };
  }
  const pseudo = parsed.pseudo;
  if (pseudo !== null) {
    // A commit after `base` may already carry any change released up to the next minor line.
    if (pseudo.base === null) return { lookup: (h) => atRelease(h, v), alwaysUnverified: true };
    const base = pseudo.base;
    return { lookup: (h) => overWindow(h, base, nextMinor(base)), alwaysUnverified: false };
  }
  if (v.pre.length > 0) {
    // An unlisted pre-release sits between the previous release and its own release.
    return { lookup: (h) => overWindow(h, v, release(v)), alwaysUnverified: false };
  }
  return { lookup: (h) => atRelease(h, v), alwaysUnverified: false };
}

/**
 * Resolves the offsets of `req.fields` for one module version of one binary.
 *
 * Order: DWARF offsets given in `opts.dwarf`, then type-metadata offsets in
 * `opts.types`, then the database: exactly or inside a known range → `db`
 * (for the standard library, a newer patch of the newest known minor line
 * counts as that line); newer than the field's `verifiedUpTo` → carried
 * forward (`db-extrapolated`, listed in `unverified`) only when the last
 * {@link STABLE_MINOR_LINES} minor release lines all had one offset;
 * otherwise the field is `missing`, with a reason such as
 * `no offset for net/http.response.status at go1.30.1 (known up to 1.27.3; …)`.
 * Every source available is consulted, so that `disagreements` lists the
 * fields on which they differ. `opts.only` restricts resolution to one source.
 */
export function resolveOffsets(req: ResolveRequest, opts: ResolveOptions = {}): ResolveResult {
  const out: ResolveResult = { offsets: {}, missing: [], unverified: [], source: {}, disagreements: [] };
  const only = opts.only;
  const dwarf = only === undefined || only === 'dwarf' ? opts.dwarf : undefined;
  const types = only === undefined || only === 'types' ? opts.types : undefined;
  const useDb = only === undefined || only === 'db';
  let db: OffsetsFile | null | undefined = useDb ? opts.db : null;
  let dbError: string | undefined;
  if (db === undefined) {
    const loaded = loadOffsetsDb(req.module, opts.dbDir);
    db = loaded.db;
    dbError = loaded.error;
  }
  const plan = useDb ? planFor(req.module, req.version) : null;

  for (const field of req.fields) {
    const prefix = `no offset for ${field} at ${req.version}`;
    const fromDwarf = dwarf?.get(field);
    const fromTypes = types?.get(field);
    let fromDb: { offset: number; extrapolated: boolean } | undefined;
    let dbWhy: string;
    const h = db?.fields[field];
    if (!useDb) {
      dbWhy = `${prefix} (${only === 'dwarf' ? 'no DWARF, or the field is not in it' : 'not in the type metadata'}; resolving from ${only} only)`;
    } else if (db === null || db === undefined) {
      dbWhy = `${prefix} (${dbError ?? `no offsets database for module ${req.module}`})`;
    } else if (h === undefined) {
      dbWhy = `${prefix} (field not in the offsets database of ${req.module})`;
    } else if (plan === null || 'error' in plan) {
      dbWhy = `${prefix} (known up to ${h.verifiedUpTo}; ${plan?.error ?? 'no version'})`;
    } else {
      const r = plan.lookup(h);
      if (r.ok) {
        fromDb = { offset: r.offset, extrapolated: r.extrapolated };
        dbWhy = '';
      } else {
        dbWhy = `${prefix} (known up to ${h.verifiedUpTo}; ${r.why})`;
      }
    }
    const given: Partial<Record<OffsetSourceKind, number>> = {};
    if (fromDwarf !== undefined) given.dwarf = fromDwarf;
    if (fromTypes !== undefined) given.types = fromTypes;
    if (fromDb !== undefined) given.db = fromDb.offset;
    const chosen: OffsetSourceKind | undefined = fromDwarf !== undefined ? 'dwarf' : fromTypes !== undefined ? 'types' : fromDb !== undefined ? 'db' : undefined;
    if (chosen === undefined) {
      out.missing.push({ field, reason: dbWhy });
      continue;
    }
    if (new Set(Object.values(given)).size > 1) out.disagreements.push({ field, offsets: given, chosen });
    out.offsets[field] = given[chosen]!;
    if (chosen === 'db') {
      out.source[field] = fromDb!.extrapolated ? 'db-extrapolated' : 'db';
      if (fromDb!.extrapolated || (plan !== null && !('error' in plan) && plan.alwaysUnverified)) out.unverified.push(field);
    } else {
      out.source[field] = chosen;
    }
  }
  return out;
}
