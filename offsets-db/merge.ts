/**
 * Turns per-version facts ("at 1.19.8, DWARF says 152") into the compact range
 * form of the data files. The rules are described at {@link CoveragePolicy}
 * and in offsets-db/README.md ("How ranges are built"); in every case versions
 * without facts become explicit unknown ranges and each range names the source
 * of its facts.
 */
import type { FieldHistory, RangeEntry } from '../daemon/offsets/schema.ts';
import { compareSemver, formatSemver, mustSemver } from '../daemon/offsets/version.ts';
import type { Semver } from '../daemon/offsets/version.ts';

/** One fact: at `version`, `source` says the field is at `offset` (`null`: absent). */
export interface Observation {
  /** Without prefix: `1.19.8`. */
  version: string;
  offset: number | null;
  /** `dwarf:go1.19.8` or `reference:otel-go-instrumentation`. */
  source: string;
}

/** Two sources that disagree about the same version. */
export interface Disagreement {
  version: string;
  facts: Array<{ source: string; offset: number | null }>;
}

/** Result of {@link buildHistory}. */
export interface MergeResult {
  history: FieldHistory;
  disagreements: Disagreement[];
}

const isDwarf = (source: string): boolean => source.startsWith('dwarf:');

interface Fact {
  v: Semver;
  offset: number | null;
  sources: string[];
}

interface Piece {
  since: Semver;
  offset: number | null | 'unknown';
  source: string;
}

const sameLine = (a: Semver, b: Semver): boolean => a.major === b.major && a.minor === b.minor;
const lineStart = (v: Semver): Semver => {
  const x0: Semver = { major: v.major, minor: v.minor, patch: 0, pre: [] };
  // A pre-release of X.Y.0 (1.0.0-rc.1) starts its line itself.
  return compareSemver(v, x0) < 0 ? v : x0;
};

/**
 * How far a fact reaches beyond its own version.
 *
 * - `minor-line` (the standard library): a fact covers its whole minor release
 *   line, from X.Y.0, unless another fact in the line says otherwise; minor
 *   lines without facts are unknown. Justified by the record: none of the
 *   standard-library layout changes in the reference data happened in a patch
 *   release.
 * - `listed-versions` (third-party modules, whose layouts do change in patch
 *   releases, sometimes through their dependencies): a fact covers only its
 *   own version; every published version (`versions`, from the module proxy)
 *   without a fact is unknown, and runs of equal facts join into one range.
 */
export type CoveragePolicy = { policy: 'minor-line' } | { policy: 'listed-versions'; versions: readonly string[] };

/**
 * Builds the range history of one field. Where sources disagree about a
 * version, the DWARF fact is kept and the disagreement is returned for the
 * caller to report.
 *
 * @throws Error when there are no observations or a version is malformed.
 */
export function buildHistory(observations: readonly Observation[], coverage: CoveragePolicy = { policy: 'minor-line' }): MergeResult {
  if (observations.length === 0) throw new Error('no observations');
  const disagreements: Disagreement[] = [];

  const byVersion = new Map<string, Observation[]>();
  for (const o of observations) {
    const key = formatSemver(mustSemver(o.version));
    byVersion.set(key, [...(byVersion.get(key) ?? []), o]);
  }
  const facts: Fact[] = [];
  for (const [version, obs] of byVersion) {
    const offsets = new Set(obs.map((o) => o.offset));
    const chosen = (obs.find((o) => isDwarf(o.source)) ?? obs[0]!).offset;
    if (offsets.size > 1) {
      disagreements.push({ version, facts: obs.map((o) => ({ source: o.source, offset: o.offset })) });
    }
    const sources = [...new Set(obs.filter((o) => o.offset === chosen).map((o) => o.source))];
    facts.push({ v: mustSemver(version), offset: chosen, sources });
  }
  facts.sort((a, b) => compareSemver(a.v, b.v));

  const pieces = coverage.policy === 'minor-line' ? minorLinePieces(facts) : listedPieces(facts, coverage.versions);
  const ranges: RangeEntry[] = [];
  let last: Piece | undefined;
  for (const p of pieces) {
    if (last !== undefined && last.offset === p.offset && last.source === p.source) continue;
    ranges.push(
      p.offset === 'unknown'
        ? { since: formatSemver(p.since), unknown: true }
        : { since: formatSemver(p.since), offset: p.offset, source: p.source },
    );
    last = p;
  }
  const newest = facts[facts.length - 1]!;
  return { history: { verifiedUpTo: formatSemver(newest.v), ranges }, disagreements };
}

/** A DWARF fact speaks for a version over the reference. */
function factSource(f: Fact): string {
  return f.sources.find(isDwarf) ?? f.sources[0]!;
}

function listedPieces(facts: Fact[], listed: readonly string[]): Piece[] {
  const byKey = new Map(facts.map((f) => [formatSemver(f.v), f]));
  const newest = facts[facts.length - 1]!.v;
  const versions = new Map<string, Semver>(facts.map((f) => [formatSemver(f.v), f.v]));
  for (const l of listed) {
    const v = mustSemver(l);
    // Versions after the newest fact are "newer than verified", which the resolver handles.
    if (compareSemver(v, newest) <= 0) versions.set(formatSemver(v), v);
  }
  const ordered = [...versions.values()].sort(compareSemver);
  const first = facts[0]!.v;
  return ordered
    .filter((v) => compareSemver(v, first) >= 0)
    .map((v) => {
      const f = byKey.get(formatSemver(v));
      return f === undefined ? { since: v, offset: 'unknown' as const, source: '' } : { since: v, offset: f.offset, source: factSource(f) };
    });
}

function minorLinePieces(facts: Fact[]): Piece[] {
  // Split the facts into runs: same minor line, same offset, consecutive.
  const runs: Fact[][] = [];
  for (const f of facts) {
    const run = runs[runs.length - 1];
    const last = run?.[run.length - 1];
    if (run !== undefined && last !== undefined && sameLine(last.v, f.v) && last.offset === f.offset) run.push(f);
    else runs.push([f]);
  }

  const pieces: Piece[] = [];
  let prev: Fact | undefined;
  for (const run of runs) {
    const first = run[0]!;
    const dwarf = run.flatMap((f) => f.sources.filter(isDwarf));
    // The newest DWARF build of the run speaks for it; else the reference does.
    const source = dwarf.length > 0 ? dwarf[dwarf.length - 1]! : run[run.length - 1]!.sources[0]!;
    let since: Semver;
    if (prev !== undefined && sameLine(prev.v, first.v)) {
      // The layout changed inside a minor line between two facts: the versions
      // strictly between them are unknown.
      const after: Semver = { major: prev.v.major, minor: prev.v.minor, patch: prev.v.patch + 1, pre: [] };
      if (prev.v.pre.length === 0 && compareSemver(after, first.v) < 0) pieces.push({ since: after, offset: 'unknown', source: '' });
      since = first.v;
    } else {
      if (prev !== undefined) {
        const expected: Semver = { major: prev.v.major, minor: prev.v.minor + 1, patch: 0, pre: [] };
        const nextMajor: Semver = { major: prev.v.major + 1, minor: 0, patch: 0, pre: [] };
        const start = lineStart(first.v);
        if (compareSemver(start, expected) > 0 && compareSemver(start, nextMajor) !== 0) {
          pieces.push({ since: expected, offset: 'unknown', source: '' });
        }
      }
      since = lineStart(first.v);
    }
    pieces.push({ since, offset: first.offset, source });
    prev = run[run.length - 1];
  }
  return pieces;
}
