/**
 * Runs the agent the way its launcher (daemon/bin/gotrail) does, on a copy
 * of `node` of its own: a bench's own Node process runs the same executable
 * and would share its file pages, which the kernel then neither counts to
 * the agent alone nor lets it hand back when idle (daemon/agent/memory-trim.ts);
 * where the agent runs on a node, nothing else maps its `node`.
 */
import { closeSync, copyFileSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * What the launcher of checkout `root` runs: its environment defaults (the
 * `node_env` lines, or an older launcher's `export NAME="${NAME:-…}"`), its
 * node flags (paths in them, e.g. a preloaded module, taken in that checkout)
 * and its entry module: set-up's bundle when no source is newer than it, as
 * the launcher decides, else daemon/cli/main.ts. Reads older launchers too
 * (flags on the exec line, the sources always). Throws when the launcher has
 * neither shape.
 */
export function launcherOf(root: string): { env: Record<string, string>; flags: string[]; entry: string } {
  const text = readFileSync(join(root, 'daemon', 'bin', 'gotrail'), 'utf8');
  const env: Record<string, string> = { NODE_COMPILE_CACHE: join(root, 'build', 'compile-cache') };
  const paths = (s: string): string[] => s.split(' ').map((f) => f.replace(/^"\$here\/(.*)"$/, (_, rest: string) => join(root, rest)));
  // older launchers: `export NAME="${NAME:-default}"`
  for (const m of text.matchAll(/^export (\w+)="\$\{\w+:-([^}]*)\}"$/gm)) env[m[1]!] = m[2]!;
  // newer ones: `node_env NAME VALUE`, Node's alone (the preload takes the names in GOTRAIL_NODE_ONLY_ENV out of its environment)
  const nodeOnly = [...text.matchAll(/^\s*node_env (\w+) (\S+)$/gm)].map((m) => {
    env[m[1]!] = paths(m[2]!)[0]!;
    return m[1]!;
  });
  if (nodeOnly.length) env['GOTRAIL_NODE_ONLY_ENV'] = nodeOnly.join(' ');
  const sources = join(root, 'daemon', 'cli', 'main.ts');
  const old = /^exec "\$here\/deploy\/node" (.*) "\$here\/daemon\/cli\/main.ts" "\$@"$/m.exec(text);
  if (old) return { env, flags: paths(old[1]!), entry: sources };
  const flags = /^flags=\((.*)\)$/m.exec(text);
  if (!flags || !text.includes('"$here/build/agent/main.mjs"')) throw new Error(`${root}/daemon/bin/gotrail: no flags or exec line of the expected shape`);
  const bundle = join(root, 'build', 'agent', 'main.mjs');
  return existsSync(bundle) && !newerSource(join(root, 'daemon'), statSync(bundle).mtimeMs)
    ? { env, flags: [...paths(flags[1]!), '--enable-source-maps'], entry: bundle }
    : { env, flags: paths(flags[1]!), entry: sources };
}

/** Whether a .ts file under `dir` was modified after `mtimeMs` (the launcher's `find -newer`). */
function newerSource(dir: string, mtimeMs: number): boolean {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).some((e) => e.isFile() && e.name.endsWith('.ts') && statSync(join(e.parentPath, e.name)).mtimeMs > mtimeMs);
}

/**
 * Copies `from` to a new file `to` (one still running, an earlier run's,
 * cannot be written), flushed to disk: the kernel reclaims only clean file
 * pages, as those of an installed node are.
 */
export function copyFresh(from: string, to: string): void {
  rmSync(to, { force: true });
  copyFileSync(from, to);
  const fd = openSync(to, 'r');
  fsyncSync(fd);
  closeSync(fd);
}

/** A private copy of set-up's node under `workDir`, made once per process. */
let copied: string | undefined;
export function privateNode(root: string, workDir: string): string {
  if (!copied) {
    copied = join(workDir, 'node-agent');
    copyFresh(join(root, '.tools', 'node', 'bin', 'node'), copied);
  }
  return copied;
}

/** The command and environment that run `gotrail` of checkout `root` as its launcher does, on a private node. */
export function agentCommand(root: string, workDir: string): { command: string[]; env: Record<string, string> } {
  const l = launcherOf(root);
  return { command: [privateNode(root, workDir), ...l.flags, l.entry], env: l.env };
}
