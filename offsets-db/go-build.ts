/**
 * Go toolchains available on this machine and a cached `go build`, shared by
 * the offsets generator and the offsets tests.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** One Go toolchain: a `go` command plus the environment that selects the version. */
export interface GoToolchain {
  /** As reported by `go env GOVERSION`, e.g. `go1.26.8`. */
  version: string;
  /** The go command (a path, or `go` from PATH). */
  go: string;
  /** GOTOOLCHAIN value; `local` unless the toolchain comes from the module proxy. */
  gotoolchain: string;
}

/**
 * Toolchains fetched through the module proxy (GOTOOLCHAIN) in addition to
 * the installed ones. Go 1.27 is not packaged for the build machines.
 */
export const PROXY_TOOLCHAINS: readonly string[] = ['go1.27.3'];

/** Debian installs versioned toolchains as /usr/lib/go-X.Y/bin/go (package golang-X.Y-go). */
const DEBIAN_GO_ROOT = '/usr/lib';

function candidates(): Array<{ go: string; gotoolchain: string }> {
  const spec = process.env.GOTRAIL_GO_TOOLCHAINS;
  if (spec !== undefined && spec.trim() !== '') {
    // "path[@goX.Y.Z],…": the suffix asks that go command for a proxy toolchain.
    return spec.split(',').map((s) => {
      const [go, tc] = s.trim().split('@');
      return { go: go!, gotoolchain: tc ?? 'local' };
    });
  }
  const out = [{ go: 'go', gotoolchain: 'local' }];
  try {
    for (const d of readdirSync(DEBIAN_GO_ROOT)) {
      const go = join(DEBIAN_GO_ROOT, d, 'bin', 'go');
      if (/^go-\d+\.\d+$/.test(d) && existsSync(go)) out.push({ go, gotoolchain: 'local' });
    }
  } catch {
    // no Debian toolchains here
  }
  for (const tc of PROXY_TOOLCHAINS) out.push({ go: 'go', gotoolchain: tc });
  return out;
}

function goVersionNumbers(v: string): number[] {
  return (/^go(\d+)\.(\d+)(?:\.(\d+))?/.exec(v) ?? []).slice(1).map((x) => Number(x ?? 0));
}

/** Orders toolchains oldest first. */
export function compareToolchains(a: GoToolchain, b: GoToolchain): number {
  const x = goVersionNumbers(a.version);
  const y = goVersionNumbers(b.version);
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/** Environment for running a toolchain's go command. */
export function goEnv(tc: Pick<GoToolchain, 'gotoolchain'>, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // GOWORK=off: a go.work higher up must not pull the probe programs into a workspace.
  return { ...process.env, GOTOOLCHAIN: tc.gotoolchain, GOWORK: 'off', CGO_ENABLED: '0', ...extra };
}

let discovered: GoToolchain[] | undefined;

/**
 * Finds the usable Go toolchains, oldest first, one per version. Override the
 * candidates with `GOTRAIL_GO_TOOLCHAINS=go,/opt/go1.21/bin/go,go@go1.27.3`.
 * Candidates that fail to run are skipped, with `onSkip` told why.
 */
export function discoverToolchains(onSkip?: (what: string, why: string) => void): GoToolchain[] {
  if (discovered !== undefined) return discovered;
  const seen = new Map<string, GoToolchain>();
  for (const c of candidates()) {
    try {
      const version = execFileSync(c.go, ['env', 'GOVERSION'], { env: goEnv(c), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
      if (!/^go\d/.test(version)) throw new Error(`unexpected GOVERSION ${JSON.stringify(version)}`);
      if (!seen.has(version)) seen.set(version, { version, go: c.go, gotoolchain: c.gotoolchain });
    } catch (err) {
      onSkip?.(`${c.go}${c.gotoolchain === 'local' ? '' : ` (GOTOOLCHAIN=${c.gotoolchain})`}`, (err as Error).message.split('\n')[0] ?? '');
    }
  }
  discovered = [...seen.values()].sort(compareToolchains);
  return discovered;
}

/** The newest toolchain: used to build tools and third-party module programs. */
export function newestToolchain(): GoToolchain {
  const all = discoverToolchains();
  const tc = all[all.length - 1];
  if (tc === undefined) throw new Error('no Go toolchain found (set GOTRAIL_GO_TOOLCHAINS)');
  return tc;
}

/** Options for {@link buildGo}. */
export interface BuildOptions {
  toolchain: GoToolchain;
  /** Directory of the main package (with its go.mod). */
  dir: string;
  /** Output binary. Its stamp file sits next to it (`<out>.stamp`). */
  out: string;
  /** Extra `-ldflags`. Default: none. */
  ldflags?: string;
  /** Extra environment. Default: none. */
  env?: Record<string, string>;
}

function sourceHash(o: BuildOptions): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([o.toolchain.version, o.ldflags ?? '', o.env ?? {}]));
  for (const f of readdirSync(o.dir).sort()) {
    if (f.endsWith('.go') || f === 'go.mod' || f === 'go.sum') h.update(f).update('\0').update(readFileSync(join(o.dir, f))).update('\0');
  }
  return h.digest('hex');
}

/** Whether {@link buildGo} would reuse the existing output instead of building. */
export function buildIsCurrent(o: BuildOptions): boolean {
  const stamp = `${o.out}.stamp`;
  return existsSync(o.out) && existsSync(stamp) && readFileSync(stamp, 'utf8') === sourceHash(o);
}

/**
 * `go build` with a cache: the build is skipped when the output exists and
 * was produced from the same sources, toolchain and flags. Test files run in
 * parallel processes may build the same output at once: each builds into a
 * private file and renames it into place, so no reader sees half a binary.
 *
 * @returns whether a build ran.
 * @throws Error with the compiler's output when the build fails.
 */
export function buildGo(o: BuildOptions): boolean {
  const stamp = `${o.out}.stamp`;
  const hash = sourceHash(o);
  if (buildIsCurrent(o)) return false;
  mkdirSync(dirname(o.out), { recursive: true });
  const tmp = `${o.out}.tmp-${process.pid}`;
  // No VCS stamping: binaries must not depend on the repository's state.
  const args = ['build', '-buildvcs=false', '-trimpath', '-o', tmp];
  if (o.ldflags !== undefined) args.push(`-ldflags=${o.ldflags}`);
  args.push('.');
  try {
    execFileSync(o.toolchain.go, args, { cwd: o.dir, env: goEnv(o.toolchain, o.env), stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    rmSync(tmp, { force: true });
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`go build (${o.toolchain.version}) in ${o.dir} failed: ${e.stderr?.toString().trim() || e.message}`, { cause: err });
  }
  renameSync(tmp, o.out);
  writeFileSync(stamp, hash);
  return true;
}
