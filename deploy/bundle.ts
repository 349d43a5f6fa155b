/**
 * Bundles the agent's command line (daemon/cli/main.ts and what it imports,
 * npm dependencies included) into a few ES modules under build/agent/, with
 * source maps, for the launcher (daemon/bin/gotrail) to run instead of the
 * TypeScript sources. Run by set-up (deploy/build.mk).
 *
 *   deploy/node deploy/bundle.ts [OUTDIR]     (default build/agent)
 *
 * Why: each module Node loads stays in V8's heap for the process's life (its
 * source, its functions, its module record), and the compile cache keeps an
 * entry per module in malloc'd memory. The sources load ~290 modules (2 MB),
 * among them @opentelemetry/semantic-conventions twice (its ES and its
 * CommonJS build, 0.7 MB, imported by gotrail and required by
 * @opentelemetry/core); the bundle keeps only the exports used and each
 * dependency once. Each command stays in chunks of its own (main.ts imports
 * them dynamically), so `gotrail run` loads none of `inspect`'s or `demo`'s.
 *
 * Modules that find files from `import.meta.url` do so from the install
 * root (`../../`), which is the same from daemon/<dir>/ and build/agent/.
 * What is loaded with `require` at run time (iced-x86, the OTLP response
 * decoder, the native addon) stays out of the bundle and loads from
 * node_modules as from the sources.
 */
import { build, type Plugin } from 'esbuild';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const outdir = process.argv[2] ?? join(root, 'build', 'agent');

// The OTLP exporter's transport loads node:http with import('http'): an ES
// import of a builtin builds its ES facade, which loads Node's undici (~2.4
// MiB of heap; see daemon/export/otlp-exporter.ts, whose module hook does
// the same for the sources). In the bundle those imports get the builtin's
// own exports.
const builtinHttp: Plugin = {
  name: 'otlp-http-builtin',
  setup(b) {
    b.onResolve({ filter: /^(node:)?https?$/ }, (a) =>
      a.kind === 'dynamic-import' && a.importer.includes('/@opentelemetry/otlp-exporter-base/') ? { path: a.path.replace(/^node:/, ''), namespace: 'builtin-http' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'builtin-http' }, (a) => ({
      contents: `const m = process.getBuiltinModule('node:${a.path}'); export default m; export const { Agent, request } = m;`,
      loader: 'js',
    }));
  },
};

rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: [join(root, 'daemon', 'cli', 'main.ts')],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunk-[hash]',
  // stack traces name the TypeScript sources (the launcher runs node with --enable-source-maps)
  sourcemap: 'linked',
  sourcesContent: false,
  legalComments: 'none',
  // CommonJS dependencies bundled into ES modules call require() for Node's builtins
  banner: { js: "import { createRequire as gotrailCreateRequire } from 'node:module'; const require = gotrailCreateRequire(import.meta.url);" },
  plugins: [builtinHttp],
  logLevel: 'warning',
});
