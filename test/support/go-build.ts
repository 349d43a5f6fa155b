/**
 * Builds the Go programs under `test/programs/` with every Go toolchain
 * installed on this machine, in the build variants probes must cope with.
 *
 * ```ts
 * import { buildGo, buildSkipReason, goToolchains, programDir } from '../support/go-build.ts';
 * for (const toolchain of goToolchains()) {
 *   test(`${toolchain.name} pie`, (t) => {
 *     const reason = buildSkipReason(toolchain, 'pie');
 *     if (reason) return t.skip(reason);
 *     const bin = buildGo({ toolchain, srcDir: programDir('analysis-http'), variant: 'pie' });
 *     …
 *   });
 * }
 * ```
 *
 * Builds are cached: a binary newer than every file of its source
 * directory, built with the same toolchain and flags, is reused. Outputs go
 * under `build/` at the repository root (git-ignored). Concurrent test
 * processes may build the same binary: each writes a temporary file and
 * renames it into place, so readers never see a partial binary.
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root, derived from this file's location. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Where build outputs go (git-ignored). */
export const BUILD_DIR = path.join(REPO_ROOT, 'build');

/** A Go toolchain: how to run its `go` command. */
export interface GoToolchain {
  /** Short name used in test names and output paths, e.g. `go1.26`. */
  name: string;
  /** The `go` command. */
  bin: string;
  /** Extra environment for every invocation (e.g. `GOTOOLCHAIN` to select a downloaded toolchain). */
  env: Record<string, string>;
}

/**
 * - `plain`: default static executable, with symbol table and DWARF.
 * - `stripped`: `-ldflags=-s -w` (no symbol table, no DWARF).
 * - `pie`: `-buildmode=pie`.
 * - `pie-stripped`: both.
 * - `external`: `-ldflags=-linkmode=external` with cgo enabled (needs gcc).
 * - `external-pie`, `external-pie-stripped`: external linking of a PIE
 *   (with `-s -w`), where the system linker merges Go's read-only data
 *   into `.data.rel.ro` — for Go 1.19, the pclntab too.
 */
export type GoBuildVariant = 'plain' | 'stripped' | 'pie' | 'pie-stripped' | 'external' | 'external-pie' | 'external-pie-stripped';

/** The variants every probe should be tested against. */
export const GO_BUILD_VARIANTS: readonly GoBuildVariant[] = ['plain', 'stripped', 'pie', 'pie-stripped', 'external'];

/** {@link GO_BUILD_VARIANTS} plus the rarer external PIE variants, for binary-format tests. */
export const ALL_GO_BUILD_VARIANTS: readonly GoBuildVariant[] = [...GO_BUILD_VARIANTS, 'external-pie', 'external-pie-stripped'];

export interface GoBuildOptions {
  toolchain: GoToolchain;
  /** Directory with main.go and go.mod, usually {@link programDir}(name). */
  srcDir: string;
  /**
   * Output binary. Default: `build/go/<program>/<toolchain>-<variant>/<program>`.
   * A relative path is taken relative to {@link BUILD_DIR}.
   */
  outPath?: string;
  variant: GoBuildVariant;
}

/** Thrown by {@link buildGo} when the variant cannot be built on this machine. */
export class GoBuildSkipped extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(reason);
    this.name = 'GoBuildSkipped';
    this.reason = reason;
  }
}

const CANDIDATES: readonly GoToolchain[] = [
  { name: 'go1.19', bin: '/usr/lib/go-1.19/bin/go', env: {} },
  { name: 'go1.26', bin: '/usr/local/go/bin/go', env: {} },
  { name: 'go1.27', bin: '/usr/local/go/bin/go', env: { GOTOOLCHAIN: 'go1.27.3' } },
];

let toolchainCache: GoToolchain[] | undefined;

/**
 * The Go toolchains available here, oldest first. A toolchain that is not
 * installed (or, for go1.27, cannot be fetched from the module proxy) is
 * left out, with the reason logged once.
 */
export function goToolchains(): GoToolchain[] {
  if (toolchainCache) return toolchainCache;
  toolchainCache = [];
  for (const tc of CANDIDATES) {
    try {
      const out = execFileSync(tc.bin, ['version'], { env: goEnv(tc, {}), encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
      const wanted = tc.name.replace(/^go/, '');
      if (!new RegExp(`go${wanted.replace('.', '\\.')}(\\.|\\s)`).test(out)) {
        console.warn(`# skipping Go toolchain ${tc.name}: ${tc.bin} reports ${out.trim()}`);
        continue;
      }
      toolchainCache.push(tc);
    } catch (err) {
      console.warn(`# skipping Go toolchain ${tc.name}: ${tc.bin} not usable (${firstLine(err)})`);
    }
  }
  return toolchainCache;
}

/** The source directory of a test program: `test/programs/<name>`. */
export function programDir(name: string): string {
  return path.join(REPO_ROOT, 'test', 'programs', name);
}

let gccReason: string | null | undefined;

/** Why `variant` cannot be built with `toolchain` here, or undefined if it can. */
export function buildSkipReason(toolchain: GoToolchain, variant: GoBuildVariant): string | undefined {
  void toolchain;
  if (!variant.startsWith('external')) return undefined;
  if (gccReason === undefined) {
    try {
      execFileSync('gcc', ['--version'], { stdio: 'ignore', timeout: 30_000 });
      gccReason = null;
    } catch (err) {
      gccReason = `external linking needs gcc, which is not usable (${firstLine(err)})`;
    }
  }
  return gccReason ?? undefined;
}

/**
 * Builds (or reuses) a binary and returns its path. Throws
 * {@link GoBuildSkipped} when {@link buildSkipReason} gives a reason, and
 * an Error with the compiler output when the build fails.
 */
export function buildGo(opts: GoBuildOptions): string {
  const { toolchain, variant } = opts;
  const skip = buildSkipReason(toolchain, variant);
  if (skip) throw new GoBuildSkipped(skip);
  const srcDir = path.resolve(opts.srcDir);
  const program = path.basename(srcDir);
  const out = opts.outPath
    ? path.resolve(BUILD_DIR, opts.outPath)
    : path.join(BUILD_DIR, 'go', program, `${toolchain.name}-${variant}`, program);
  const args = buildArgs(variant);
  const cgo = variant.startsWith('external') ? '1' : '0';
  const stamp = JSON.stringify({ bin: toolchain.bin, env: toolchain.env, args, cgo });
  const stampPath = `${out}.stamp`;
  if (isUpToDate(out, stampPath, stamp, srcDir)) return out;

  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    execFileSync(toolchain.bin, ['build', ...args, '-o', tmp, '.'], {
      cwd: srcDir,
      env: goEnv(toolchain, { CGO_ENABLED: cgo }),
      encoding: 'utf8',
      timeout: 900_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    const e = err as { stderr?: string; message: string };
    throw new Error(`go build (${toolchain.name}, ${variant}) of ${srcDir} failed:\n${e.stderr || e.message}`, { cause: err });
  }
  fs.renameSync(tmp, out);
  fs.writeFileSync(stampPath, stamp);
  return out;
}

function buildArgs(variant: GoBuildVariant): string[] {
  // No VCS stamping: it would make binaries depend on the repository's
  // state, and `git status` run by go build can contend for the index lock.
  const common = ['-buildvcs=false'];
  switch (variant) {
    case 'plain':
      return common;
    case 'stripped':
      return [...common, '-ldflags=-s -w'];
    case 'pie':
      return [...common, '-buildmode=pie'];
    case 'pie-stripped':
      return [...common, '-buildmode=pie', '-ldflags=-s -w'];
    case 'external':
      return [...common, '-ldflags=-linkmode=external'];
    case 'external-pie':
      return [...common, '-buildmode=pie', '-ldflags=-linkmode=external'];
    case 'external-pie-stripped':
      return [...common, '-buildmode=pie', '-ldflags=-linkmode=external -s -w'];
  }
}

/** Environment for running `toolchain`: modules on, the proxy from our environment, no workspace. */
export function goEnv(toolchain: GoToolchain, extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GOFLAGS: '-mod=mod',
    GOWORK: 'off',
    // Never let a go.mod line switch toolchains behind our back.
    GOTOOLCHAIN: 'local',
    ...extra,
    ...toolchain.env,
  };
}

/** Runs a `go` subcommand (e.g. `['tool', 'nm', bin]`) with `toolchain` and returns its stdout. */
export function runGo(toolchain: GoToolchain, args: string[], cwd?: string): string {
  return execFileSync(toolchain.bin, args, {
    cwd,
    env: goEnv(toolchain, {}),
    encoding: 'utf8',
    maxBuffer: 512 * 1024 * 1024,
    timeout: 600_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function isUpToDate(out: string, stampPath: string, stamp: string, srcDir: string): boolean {
  let outTime: number;
  try {
    outTime = fs.statSync(out).mtimeMs;
    if (fs.readFileSync(stampPath, 'utf8') !== stamp) return false;
  } catch {
    return false;
  }
  return newestMtime(srcDir) < outTime;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const p = path.join(dir, entry.name);
    const t = entry.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs;
    if (t > newest) newest = t;
  }
  return newest;
}

function firstLine(err: unknown): string {
  const e = err as { stderr?: string | Buffer; message?: string };
  const text = (e.stderr ? String(e.stderr) : '') || e.message || String(err);
  return text.trim().split('\n')[0] ?? '';
}
