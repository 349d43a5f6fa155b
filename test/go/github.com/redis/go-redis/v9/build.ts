/**
 * Builds test/programs/redis-client against a given go-redis version with a
 * given Go toolchain, stripped or not (cached under build/test/go-redis/).
 * The program's go.mod is written here, naming the version; `go mod tidy`
 * resolves its dependencies once per version and toolchain.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGo, goEnv, type GoToolchain } from '../../../../../../offsets-db/go-build.ts';
import { REPO_ROOT, toolchainAtLeast, toolchains } from '../../../../../offsets/helpers.ts';

/**
 * go-redis versions under test and the Go each needs to build: v9.7.3, the
 * newest that Go 1.19 builds, and v9.23.0, the newest the module proxy
 * served when written (process is inlined there, processStartingAt probed).
 */
export const GO_REDIS_VERSIONS: ReadonlyArray<{ version: string; needsGo: string }> = [
  { version: '9.7.3', needsGo: '1.19' },
  { version: '9.23.0', needsGo: '1.26' },
];

const SRC = join(REPO_ROOT, 'test', 'programs', 'redis-client');
/** Where the builds go: one folder per version and toolchain. */
export const BUILD_ROOT = join(REPO_ROOT, 'build', 'test', 'go-redis');

export { toolchains };
export type { GoToolchain };

/** The binary's path, or why this toolchain cannot build this version. */
export function redisClientBinary(version: string, needsGo: string, tc: GoToolchain, stripped: boolean): { binary: string } | { skip: string } {
  if (!toolchainAtLeast(tc, needsGo)) return { skip: `go-redis v${version} needs Go ${needsGo}; ${tc.version} cannot build it` };
  const dir = join(BUILD_ROOT, `v${version}`, tc.version);
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  const main = readFileSync(join(SRC, 'main.go'), 'utf8');
  if (!existsSync(join(src, 'main.go')) || readFileSync(join(src, 'main.go'), 'utf8') !== main) copyFileSync(join(SRC, 'main.go'), join(src, 'main.go'));
  const goMod = `module gotrail.test/redis-client\n\ngo 1.19\n\nrequire github.com/redis/go-redis/v9 v${version}\n`;
  const seed = join(dir, 'go.mod.seed');
  if (!existsSync(join(src, 'go.sum')) || !existsSync(seed) || readFileSync(seed, 'utf8') !== goMod + main) {
    writeFileSync(join(src, 'go.mod'), goMod);
    execFileSync(tc.go, ['mod', 'tidy'], { cwd: src, env: goEnv(tc), stdio: ['ignore', 'pipe', 'pipe'] });
    writeFileSync(seed, goMod + main);
  }
  const out = join(dir, stripped ? 'stripped' : 'plain', 'redis-client');
  buildGo({ toolchain: tc, dir: src, out, ...(stripped ? { ldflags: '-s -w' } : {}) });
  return { binary: out };
}
