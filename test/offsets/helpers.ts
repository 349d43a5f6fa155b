/**
 * Shared set-up of the offsets tests: building the offsets-probe test program
 * with each Go toolchain (cached under build/), the Go DWARF generator, and
 * the reference data when it is present.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fieldsOf } from '../../offsets-db/fields.ts';
import { buildGo, discoverToolchains, newestToolchain } from '../../offsets-db/go-build.ts';
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
