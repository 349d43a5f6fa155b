/**
 * The Go programs under `test/programs/`, found rather than listed: every
 * folder with a `go.mod` is one program, and set-up builds it with no list to
 * edit. An optional `program.conf` in the folder says how:
 *
 * ```
 * # which Go toolchains and build variants set-up builds this program with
 * toolchains = go1.26            # default: go1.19 go1.26 go1.27
 * variants = plain               # default: plain stripped pie
 * ```
 *
 * or, for a program the tests build themselves (through
 * test/support/go-build.ts or offsets-db/go-build.ts, at the versions and in
 * the variants they need), so that set-up does not build it a second time:
 *
 * ```
 * built-by = tests
 * ```
 *
 * Set-up puts its binaries at `build/go/<toolchain>/<variant>/<name>`
 * ({@link setupBinary}). A toolchain older than the `go` directive of the
 * program's go.mod cannot build it: set-up skips that toolchain and says so.
 *
 * `deploy/node test/programs/programs.ts --make [dir]` prints the make
 * fragment that test/programs/programs.mk includes.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This folder: one sub-folder per program. */
export const PROGRAMS_DIR = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = join(PROGRAMS_DIR, '..', '..');

/** The toolchains set-up builds with (see programs.mk for how each is run), oldest first. */
export const SETUP_TOOLCHAINS = ['go1.19', 'go1.26', 'go1.27'] as const;
/** The variants set-up builds (see test/support/go-build.ts for what each means). */
export const SETUP_VARIANTS = ['plain', 'stripped', 'pie'] as const;
export type SetupToolchain = (typeof SETUP_TOOLCHAINS)[number];
export type SetupVariant = (typeof SETUP_VARIANTS)[number];

/** The file a program folder may hold to say how it is built. */
export const PROGRAM_CONF = 'program.conf';

export interface TestProgram {
  /** The folder's name, which is also the binary's name. */
  name: string;
  dir: string;
  /** Who builds it: set-up, or the tests that use it. */
  builtBy: 'setup' | 'tests';
  /** The `go` directive of its go.mod, e.g. `1.19`. */
  goDirective?: string;
  /** Toolchains set-up builds it with (empty when built by tests). */
  toolchains: SetupToolchain[];
  /** Variants set-up builds (empty when built by tests). */
  variants: SetupVariant[];
  /** Toolchains the program asked for (or got by default) that cannot build it, and why. */
  skipped: Array<{ toolchain: SetupToolchain; reason: string }>;
}

export interface ProgramScan {
  /** The folder scanned. */
  dir: string;
  programs: TestProgram[];
  /** Folders that are not programs, and malformed `program.conf` files: each a sentence naming the path. */
  problems: string[];
}

/** Minor version of a toolchain name or `go` directive (`go1.26` → 26, `1.21.3` → 21); undefined if not Go 1.x. */
function goMinor(v: string): number | undefined {
  const m = /^(?:go)?1\.(\d+)/.exec(v);
  return m ? Number(m[1]) : undefined;
}

function parseConf(path: string, problems: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const where = relative(REPO_ROOT, path);
  readFileSync(path, 'utf8').split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const m = /^([a-z-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) {
      problems.push(`${where}:${i + 1}: expected "key = value", got "${raw.trim()}"`);
      return;
    }
    if (!['toolchains', 'variants', 'built-by'].includes(m[1]!)) {
      problems.push(`${where}:${i + 1}: unknown key "${m[1]}" (known: toolchains, variants, built-by)`);
      return;
    }
    out.set(m[1]!, m[2]!.split(/\s+/).filter(Boolean));
  });
  return out;
}

function pick<T extends string>(values: string[] | undefined, known: readonly T[], what: string, where: string, problems: string[]): T[] {
  if (values === undefined) return [...known];
  const bad = values.filter((v) => !known.includes(v as T));
  if (bad.length) problems.push(`${where}: unknown ${what} ${bad.join(', ')} (known: ${known.join(' ')})`);
  if (values.length === 0) problems.push(`${where}: no ${what} given`);
  return known.filter((k) => values.includes(k));
}

/** Every program folder under `dir` (default: this folder), in name order, with what is wrong with the others. */
export function scanPrograms(dir: string = PROGRAMS_DIR): ProgramScan {
  const programs: TestProgram[] = [];
  const problems: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!entry.isDirectory()) continue;
    const name = entry.name;
    const pdir = join(dir, name);
    const where = relative(REPO_ROOT, pdir);
    const goMod = join(pdir, 'go.mod');
    if (!existsSync(goMod)) {
      problems.push(`${where} has no go.mod: every folder under test/programs/ is one Go program`);
      continue;
    }
    if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) {
      problems.push(`${where}: a program's folder name is its binary's name and a make target: use [a-z0-9._-]`);
      continue;
    }
    const goDirective = /^go\s+(\S+)/m.exec(readFileSync(goMod, 'utf8'))?.[1];
    const confPath = join(pdir, PROGRAM_CONF);
    const conf = existsSync(confPath) ? parseConf(confPath, problems) : new Map<string, string[]>();
    const confWhere = relative(REPO_ROOT, confPath);
    const builtBy = conf.get('built-by');
    const program: TestProgram = { name, dir: pdir, builtBy: 'setup', toolchains: [], variants: [], skipped: [] };
    if (goDirective !== undefined) program.goDirective = goDirective;
    if (builtBy !== undefined) {
      if (builtBy.join(' ') !== 'tests' && builtBy.join(' ') !== 'setup') {
        problems.push(`${confWhere}: built-by must be "tests" or "setup", got "${builtBy.join(' ')}"`);
      } else if (builtBy[0] === 'tests') {
        if (conf.has('toolchains') || conf.has('variants')) problems.push(`${confWhere}: a program built by tests takes no toolchains or variants`);
        program.builtBy = 'tests';
        programs.push(program);
        continue;
      }
    }
    const wanted = pick(conf.get('toolchains'), SETUP_TOOLCHAINS, 'toolchain', confWhere, problems);
    program.variants = pick(conf.get('variants'), SETUP_VARIANTS, 'variant', confWhere, problems);
    const needs = goDirective === undefined ? undefined : goMinor(goDirective);
    for (const tc of wanted) {
      if (needs !== undefined && goMinor(tc)! < needs) {
        program.skipped.push({ toolchain: tc, reason: `go.mod says go ${goDirective}, newer than ${tc}` });
      } else {
        program.toolchains.push(tc);
      }
    }
    programs.push(program);
  }
  return { dir, programs, problems };
}

/** Where set-up puts a program's binary. */
export function setupBinary(name: string, toolchain: SetupToolchain, variant: SetupVariant): string {
  return join(REPO_ROOT, 'build', 'go', toolchain, variant, name);
}

/**
 * The make fragment for programs.mk: the programs set-up builds with their
 * toolchains and variants, and the notes set-up prints (skipped toolchains,
 * folders that are not programs).
 */
export function makeFragment(scan: ProgramScan): string {
  const setup = scan.programs.filter((p) => p.builtBy === 'setup');
  const lines = [
    `# Generated by test/programs/programs.ts from the folders of ${relative(REPO_ROOT, scan.dir)}/: do not edit.`,
    `SETUP_PROGRAMS := ${setup.map((p) => p.name).join(' ')}`,
    `TEST_BUILT_PROGRAMS := ${scan.programs.filter((p) => p.builtBy === 'tests').map((p) => p.name).join(' ')}`,
  ];
  for (const p of setup) {
    lines.push(`toolchains_${p.name} := ${p.toolchains.join(' ')}`, `variants_${p.name} := ${p.variants.join(' ')}`);
  }
  const notes = [
    ...setup.flatMap((p) => p.skipped.map((s) => `test program ${p.name} is not built with ${s.toolchain}: ${s.reason}`)),
    ...scan.problems.map((p) => `not a test program: ${p}`),
  ];
  lines.push('program-notes:');
  // make would expand $ and the shell would interpret quotes: keep the notes plain
  for (const n of notes) lines.push(`\t@echo '[setup] note: ${n.replace(/[$'\\]/g, '')}'`);
  if (notes.length === 0) lines.push('\t@:');
  return `${lines.join('\n')}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--make') {
  process.stdout.write(makeFragment(scanPrograms(process.argv[3])));
}
