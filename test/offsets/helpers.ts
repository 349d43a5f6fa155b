/**
 * Shared set-up of the offsets tests: building the offsets-probe test program
 * with each Go toolchain (cached under build/), the probe programs of
 * third-party modules at given versions, the Go DWARF generator, and the
 * reference data when it is present.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fieldsOf } from '../../offsets-db/fields.ts';
import type { ModuleFields } from '../../offsets-db/fields.ts';
import { prepareModuleProgram } from '../../offsets-db/generate.ts';
import { buildGo, buildIsCurrent, discoverToolchains, goEnv, newestToolchain } from '../../offsets-db/go-build.ts';
import type { GoToolchain } from '../../offsets-db/go-build.ts';
import { defaultReferencePath } from '../../offsets-db/reference.ts';

export const REPO_ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const BUILD = join(REPO_ROOT, 'build', 'test', 'offsets');

/** The standard-library fields of the database (offsets-db/fields.ts). */
export const STD_FIELDS: string[] = Object.keys(fieldsOf('std')?.fields ?? {});

/** Toolchains to test with, oldest first. */
export function toolchains(): GoToolchain[] {
  return discoverToolchains((what, why) => console.warn(`# skipping Go toolchain ${what}: ${why}`));
}

/**
 * - `default`: as `go build` makes it (Go 1.19+ compresses DWARF into SHF_COMPRESSED sections).
 * - `nocompress`: `-ldflags=-compressdwarf=false`, for recompressing with objcopy.
 * - `cgo`: external linking with cgo, so the binary also has C units from gcc.
 */
export type ProbeVariant = 'default' | 'nocompress' | 'cgo';

/** Builds (or reuses) test/programs/offsets-probe with `tc` and returns the binary's path. */
export function probeBinary(tc: GoToolchain, variant: ProbeVariant = 'default'): string {
  const out = join(BUILD, `${tc.version}-${variant}`, 'offsets-probe');
  buildGo({
    toolchain: tc,
    dir: join(REPO_ROOT, 'test', 'programs', 'offsets-probe'),
    out,
    ...(variant === 'nocompress' ? { ldflags: '-compressdwarf=false' } : {}),
    ...(variant === 'cgo' ? { ldflags: '-linkmode=external', env: { CGO_ENABLED: '1' } } : {}),
  });
  return out;
}

/** A module probe binary built (or reused) here, or why it cannot be built here. */
export type ModuleBuild = { binary: string; built: boolean; seconds: number } | { skip: string };

const NETWORK_ERROR = /dial tcp|no such host|i\/o timeout|connection refused|network is unreachable|TLS handshake|proxyconnect|server misbehaving/;

const moduleGoVersions = new Map<string, string>();

/**
 * The `go` line of a module version's go.mod, from the module proxy (or the
 * module cache): `1.19` for grpc v1.64.1.
 * @throws Error when the proxy cannot be asked.
 */
export function moduleGoVersion(module: string, version: string): string {
  const key = `${module}@v${version}`;
  const hit = moduleGoVersions.get(key);
  if (hit !== undefined) return hit;
  const tc = newestToolchain();
  const dir = join(BUILD, 'mod-list');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'go.mod'), 'module offsetsprobe\n\ngo 1.19\n');
  const out = execFileSync(tc.go, ['list', '-m', '-json', key], { cwd: dir, env: goEnv(tc), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const goVersion = (JSON.parse(out) as { GoVersion?: string }).GoVersion ?? '1.0';
  moduleGoVersions.set(key, goVersion);
  return goVersion;
}

/** Whether toolchain `tc` (go1.19.8) is at least the `go` line `want` (1.26.0, 1.19). */
export function toolchainAtLeast(tc: GoToolchain, want: string): boolean {
  const have = (/^go(\d+)\.(\d+)(?:\.(\d+))?/.exec(tc.version) ?? []).slice(1).map((x) => Number(x ?? 0));
  const need = want.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((have[i] ?? 0) !== (need[i] ?? 0)) return (have[i] ?? 0) > (need[i] ?? 0);
  return true;
}

/**
 * Builds (or reuses, from build/test/offsets/mod/) the generator's probe
 * program for `spec` at module `version` with toolchain `tc`, resolving its
 * dependencies with that toolchain; `stripped` links with `-s -w` (no symbol
 * table, no DWARF). Skips, with the reason, when the module version's go.mod
 * asks for a newer Go than `tc`, or when the module proxy cannot be reached.
 */
export function moduleProbeBinary(spec: ModuleFields, version: string, tc: GoToolchain, stripped: boolean): ModuleBuild {
  const t0 = performance.now();
  const what = `${spec.module} v${version} with ${tc.version}${stripped ? ' (stripped)' : ''}`;
  const dir = join(BUILD, 'mod', `${spec.module}@v${version}`, tc.version);
  const src = join(dir, 'src');
  try {
    const needs = moduleGoVersion(spec.module, version);
    if (!toolchainAtLeast(tc, needs)) return { skip: `${spec.module} v${version} needs Go ${needs} (its go.mod); ${tc.version} cannot build it` };
    if (prepareModuleProgram(spec, version, tc, src)) console.warn(`# ${what}: dependencies resolved from the module proxy`);
  } catch (err) {
    const msg = (err as Error).message;
    if (NETWORK_ERROR.test(msg)) return { skip: `module proxy unreachable, cannot fetch ${spec.module} v${version}: ${msg.split('\n').slice(-1)[0]}` };
    throw err;
  }
  const opts = { toolchain: tc, dir: src, out: join(dir, stripped ? 'probe-stripped' : 'probe'), ...(stripped ? { ldflags: '-s -w' } : {}) };
  if (!buildIsCurrent(opts)) console.warn(`# ${what}: building (cached under build/test/offsets/mod/ afterwards) …`);
  const built = buildGo(opts);
  return { binary: opts.out, built, seconds: (performance.now() - t0) / 1000 };
}

/** What offsets-db/generator prints. */
export interface GeneratorOutput {
  goVersion?: string;
  offsets: Record<string, number>;
  absent: string[];
  structNotFound: string[];
}

/** Reads `fields` from `binary` with the Go generator (Go's debug/dwarf). */
export function goGenerator(binary: string, fields: string[]): GeneratorOutput {
  const gen = join(REPO_ROOT, 'build', 'offsets-db', 'generator');
  buildGo({ toolchain: newestToolchain(), dir: join(REPO_ROOT, 'offsets-db', 'generator'), out: gen });
  return JSON.parse(execFileSync(gen, ['-binary', binary, ...fields], { encoding: 'utf8' })) as GeneratorOutput;
}

/** Whether a command can be run here (`objcopy`, `gcc`). */
export function haveCommand(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The reference data, or the reason it cannot be used. */
export function referenceData(): { data: unknown; path: string } | { skip: string } {
  const path = defaultReferencePath(REPO_ROOT);
  if (!existsSync(path)) return { skip: `reference data not present at ../shared/reference/ (looked for ${path})` };
  return { data: JSON.parse(readFileSync(path, 'utf8')), path };
}

/** A small deterministic PRNG (xorshift32), so that a failing fuzz case can be replayed from its seed. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}
