/**
 * Version parsing and ordering for the offsets database: Go toolchain versions
 * (`go1.26.8`, `go1.22`, `go1.21rc2`) and Go module versions (`v1.2.3`,
 * pre-releases, pseudo-versions). Both are mapped onto semantic versions and
 * ordered by semver precedence.
 */

/** A semantic version without build metadata. `pre` holds the dot-separated pre-release identifiers. */
export interface Semver {
  major: number;
  minor: number;
  patch: number;
  pre: string[];
}

/** What a pseudo-version (`v1.2.4-0.20230102150405-abcdef123456`) says about its commit. */
export interface PseudoVersion {
  /** The tagged version the commit descends from; `null` for `vX.0.0-<timestamp>-<rev>` (no tag before it). */
  base: Semver | null;
  /** UTC commit time, `yyyymmddhhmmss`. */
  timestamp: string;
  revision: string;
}

/** Outcome of parsing a version string from a binary's build info. */
export type ParsedVersion =
  | {
      ok: true;
      version: Semver;
      /** Non-null for module pseudo-versions. */
      pseudo: PseudoVersion | null;
    }
  | { ok: false; reason: string };

const SEMVER = /^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$/;

function num(s: string): number | null {
  // Leading zeros are not allowed in semver numeric parts; huge numbers cannot be versions.
  if (s.length > 1 && s.startsWith('0')) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * Parses `1.2.3`, `v1.2.3`, `v1.2.3-rc.1`, `v2.0.0+incompatible` (build metadata is dropped).
 * @returns `null` when the text is not a semantic version.
 */
export function parseSemver(text: string): Semver | null {
  const m = SEMVER.exec(text);
  if (m === null) return null;
  const major = num(m[1]!);
  const minor = num(m[2]!);
  const patch = num(m[3]!);
  if (major === null || minor === null || patch === null) return null;
  return { major, minor, patch, pre: m[4] === undefined ? [] : m[4].split('.') };
}

/** Like {@link parseSemver} but throws on malformed input (for data files, which must be valid). */
export function mustSemver(text: string): Semver {
  const v = parseSemver(text);
  if (v === null) throw new Error(`not a version: ${JSON.stringify(text)}`);
  return v;
}

/** `1.2.3` or `1.2.3-rc.1`: the form used in the data files (no `go`/`v` prefix). */
export function formatSemver(v: Semver): string {
  const core = `${v.major}.${v.minor}.${v.patch}`;
  return v.pre.length === 0 ? core : `${core}-${v.pre.join('.')}`;
}

function comparePre(a: string[], b: string[]): number {
  if (a.length === 0 || b.length === 0) return (a.length === 0 ? 1 : 0) - (b.length === 0 ? 1 : 0);
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    const xn = /^\d+$/.test(x);
    const yn = /^\d+$/.test(y);
    if (xn && yn) return Number(x) < Number(y) ? -1 : 1;
    if (xn !== yn) return xn ? -1 : 1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

/**
 * Semver precedence. Pseudo-versions of the same base order by commit time,
 * because their timestamps are fixed-width and compare correctly as text.
 */
export function compareSemver(a: Semver, b: Semver): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch || comparePre(a.pre, b.pre);
}

/** The first release of the minor line after `v`'s (`1.61.3` → `1.62.0`). */
export function nextMinor(v: Semver): Semver {
  return { major: v.major, minor: v.minor + 1, patch: 0, pre: [] };
}

/** `v` without pre-release identifiers. */
export function release(v: Semver): Semver {
  return { major: v.major, minor: v.minor, patch: v.patch, pre: [] };
}

const TS_REV = /^(\d{14})-([0-9a-f]{12,})$/;

/**
 * Recognises the three pseudo-version forms of Go modules:
 * `vX.0.0-yyyymmddhhmmss-rev` (no earlier tag), `vX.Y.(Z+1)-0.yyyymmddhhmmss-rev`
 * (after release vX.Y.Z) and `vX.Y.Z-pre.0.yyyymmddhhmmss-rev` (after pre-release vX.Y.Z-pre).
 */
export function pseudoVersion(v: Semver): PseudoVersion | null {
  const last = v.pre[v.pre.length - 1];
  if (last === undefined) return null;
  const m = TS_REV.exec(last);
  if (m === null) return null;
  const timestamp = m[1]!;
  const revision = m[2]!;
  if (v.pre.length === 1) {
    return v.minor === 0 && v.patch === 0 ? { base: null, timestamp, revision } : null;
  }
  if (v.pre[v.pre.length - 2] !== '0') return null;
  if (v.pre.length === 2) {
    if (v.patch === 0) return null;
    return { base: { major: v.major, minor: v.minor, patch: v.patch - 1, pre: [] }, timestamp, revision };
  }
  return { base: { major: v.major, minor: v.minor, patch: v.patch, pre: v.pre.slice(0, -2) }, timestamp, revision };
}

const GO_VERSION = /^go(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(alpha|beta|rc)(\d+))?$/;

/**
 * Parses a Go toolchain version as found in build info: `go1.26.8`,
 * `go1.22` (= 1.22.0), `go1.21rc2` (pre-release `1.21.0-rc.2`), and the same
 * followed by a space and GOEXPERIMENT tags (`go1.23.1 X:nocoverageredesign`).
 * Development toolchains (`devel go1.24-abcdef …`) have no release to map to
 * and are reported as not parseable.
 */
export function parseGoVersion(text: string): ParsedVersion {
  const trimmed = text.trim();
  if (trimmed.startsWith('devel') || trimmed.includes(' devel')) {
    return { ok: false, reason: `development toolchain ${JSON.stringify(trimmed)} is not a release` };
  }
  const head = trimmed.split(/\s+/)[0] ?? '';
  const m = GO_VERSION.exec(head);
  if (m === null) return { ok: false, reason: `unrecognised Go version ${JSON.stringify(trimmed)}` };
  const major = num(m[1]!);
  const minor = m[2] === undefined ? 0 : num(m[2]);
  const patch = m[3] === undefined ? 0 : num(m[3]);
  if (major === null || minor === null || patch === null) {
    return { ok: false, reason: `unrecognised Go version ${JSON.stringify(trimmed)}` };
  }
  const pre = m[4] === undefined ? [] : [m[4], m[5]!];
  return { ok: true, version: { major, minor, patch, pre }, pseudo: null };
}

/**
 * Parses a module version from build info: `v1.2.3`, `v1.2.3-rc.1`,
 * pseudo-versions, `+incompatible` (dropped). The `v` is optional.
 */
export function parseModuleVersion(text: string): ParsedVersion {
  const trimmed = text.trim();
  if (trimmed === '(devel)') return { ok: false, reason: 'module built from a local checkout "(devel)" has no version' };
  const v = parseSemver(trimmed);
  if (v === null) return { ok: false, reason: `unrecognised module version ${JSON.stringify(trimmed)}` };
  return { ok: true, version: v, pseudo: pseudoVersion(v) };
}
