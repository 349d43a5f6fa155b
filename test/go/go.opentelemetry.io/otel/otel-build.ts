/**
 * Builds test/programs/otel-api against another go.opentelemetry.io/otel
 * version than its go.mod's (cached under build/test/otel/): its go.mod is
 * written here, naming the version for otel, its trace API and its SDK;
 * `go mod tidy` resolves the rest from the module proxy (or the module
 * cache) once per version and toolchain.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGo, goEnv, type GoToolchain } from '../../../../offsets-db/go-build.ts';
import { REPO_ROOT } from '../../../offsets/helpers.ts';

const SRC = join(REPO_ROOT, 'test', 'programs', 'otel-api');
const BUILD = join(REPO_ROOT, 'build', 'test', 'otel');

/** The path of otel-api built with `tc` against otel v`version` (plain build). */
export function otelApiBinary(version: string, tc: GoToolchain): string {
  const dir = join(BUILD, `v${version}`, tc.version);
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  const main = readFileSync(join(SRC, 'main.go'), 'utf8');
  if (!existsSync(join(src, 'main.go')) || readFileSync(join(src, 'main.go'), 'utf8') !== main) copyFileSync(join(SRC, 'main.go'), join(src, 'main.go'));
  const goMod = 'module gotrail.test/otel-api\n\ngo 1.22\n\nrequire (\n'
    + ['go.opentelemetry.io/otel', 'go.opentelemetry.io/otel/sdk', 'go.opentelemetry.io/otel/trace'].map((m) => `\t${m} v${version}\n`).join('')
    + ')\n';
  const seed = join(dir, 'go.mod.seed');
  if (!existsSync(join(src, 'go.sum')) || !existsSync(seed) || readFileSync(seed, 'utf8') !== goMod + main) {
    writeFileSync(join(src, 'go.mod'), goMod);
    execFileSync(tc.go, ['mod', 'tidy'], { cwd: src, env: goEnv(tc), stdio: ['ignore', 'pipe', 'pipe'] });
    writeFileSync(seed, goMod + main);
  }
  const out = join(dir, 'plain', 'otel-api');
  buildGo({ toolchain: tc, dir: src, out });
  return out;
}
