/**
 * Command-line arguments of a bench script: `node:util`'s parseArgs, plus
 * `--help` (`-h`) and usage errors a person can read.
 *
 * `--help` prints the script's leading doc comment (its usage lines and what
 * it measures: written once, at the top of the script) and every option with
 * its default, taken from the parser's own configuration so that the list
 * cannot leave one out, then exits 0 before the benchmark starts. An unknown
 * option, a missing value or an unexpected argument prints one line naming
 * it and `--help` and exits 2 (parseArgs alone throws, and Node prints a
 * stack trace of its internals); so does a value that is not a number for
 * an option whose default is one.
 */
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

const repoRoot = join(import.meta.dirname, '..', '..');

/** Exit code of a bad command line (as `gotrail`'s). */
export const USAGE_EXIT = 2;

/**
 * Parses `args` (default: this process's arguments) with `config`, or exits:
 * 0 after printing the help of `script` (its absolute path, i.e.
 * `import.meta.filename`) when `--help`/`-h` comes before any `--`; 2 with a
 * one-line error on stderr when parseArgs refuses the arguments, or when an
 * option whose default is a number (`'3'`, `'0.2'`) is given something else.
 */
export function benchArgs<T extends ParseArgsConfig>(script: string, config: T, args: string[] = process.argv.slice(2)): ReturnType<typeof parseArgs<T>> {
  const end = args.indexOf('--');
  const options = end < 0 ? args : args.slice(0, end);
  if (options.includes('--help') || options.includes('-h')) {
    process.stdout.write(benchHelp(script, config));
    process.exit(0);
  }
  let parsed: ReturnType<typeof parseArgs<T>>;
  try {
    parsed = parseArgs<T>({ ...config, args });
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS_')) throw e;
    // one line: the text before Node's advice on `--` and `=`
    usageError(script, (e as Error).message.split(/\.?\s*To specify/)[0]!.replace(/\s*\n\s*/g, ' '));
  }
  // an option whose default is a number takes a number: `--rounds abc`
  // would otherwise run as NaN rounds (none) after minutes of set-up
  const values = parsed.values as Record<string, unknown>;
  for (const [name, o] of Object.entries(config.options ?? {})) {
    const v = values[name];
    if (typeof o.default === 'string' && NUMBER.test(o.default) && typeof v === 'string' && !NUMBER.test(v)) usageError(script, `--${name}: expected a number >= 0 (as its default, ${o.default}), got "${v}"`);
  }
  return parsed;
}

const NUMBER = /^\d+(?:\.\d+)?$/;

/** Prints `message` as a usage error of `script` (one line, naming --help) and exits 2. */
export function usageError(script: string, message: string): never {
  process.stderr.write(`${relative(repoRoot, script)}: ${message} (see --help)\n`);
  process.exit(USAGE_EXIT);
}

/** The help text of `script`: its leading doc comment, then its options with their defaults. */
export function benchHelp(script: string, config: ParseArgsConfig): string {
  const source = readFileSync(script, 'utf8');
  const doc = /^(?:#![^\n]*\n)?\s*\/\*\*([\s\S]*?)\*\//.exec(source)?.[1] ?? '';
  const text = doc
    .split('\n')
    .map((l) => l.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim();
  const lines = [`deploy/node ${relative(repoRoot, script)} [options]${config.allowPositionals ? ' [arguments]' : ''}`, '', text, '', 'Options:'];
  for (const [name, o] of Object.entries(config.options ?? {})) {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ' VALUE' : ''}`;
    const notes: string[] = [];
    if (o.multiple) notes.push('repeatable');
    const d = o.default;
    if (d !== undefined && d !== false && !(Array.isArray(d) && d.length === 0)) notes.push(`default: ${Array.isArray(d) ? d.join(' ') : String(d)}`);
    lines.push(`  ${flag}${notes.length ? `  (${notes.join('; ')})` : ''}`);
  }
  lines.push('  -h, --help  this text');
  return lines.join('\n') + '\n';
}
