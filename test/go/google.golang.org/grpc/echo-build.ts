/**
 * Builds test/programs/grpc-echo against a given grpc-go version with a
 * given Go toolchain, stripped or not (cached under build/test/grpc/). The
 * program's go.mod is written here, naming the version; `go mod tidy`
 * resolves its dependencies from the module proxy (or the module cache) once
 * per version and toolchain.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGo, goEnv, type GoToolchain } from '../../../../offsets-db/go-build.ts';
import { moduleGoVersion, REPO_ROOT, toolchainAtLeast, toolchains } from '../../../offsets/helpers.ts';
import { httpRequest } from '../../../support/go-server.ts';

/** grpc-go versions under test: spread over the range, the newest the module proxy served when written. */
export const GRPC_VERSIONS = ['1.50.1', '1.64.1', '1.85.0'] as const;

const SRC = join(REPO_ROOT, 'test', 'programs', 'grpc-echo');
/** Where the builds go: one folder per version and toolchain. */
export const BUILD_ROOT = join(REPO_ROOT, 'build', 'test', 'grpc');
const BUILD = BUILD_ROOT;

export { toolchains };
export type { GoToolchain };

/** The binary's path, or why this toolchain cannot build this version. */
export function echoBinary(version: string, tc: GoToolchain, stripped: boolean): { binary: string } | { skip: string } {
  const needs = moduleGoVersion('google.golang.org/grpc', version);
  if (!toolchainAtLeast(tc, needs)) return { skip: `grpc v${version} needs Go ${needs}; ${tc.version} cannot build it` };
  const dir = join(BUILD, `v${version}`, tc.version);
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  const main = readFileSync(join(SRC, 'main.go'), 'utf8');
  if (!existsSync(join(src, 'main.go')) || readFileSync(join(src, 'main.go'), 'utf8') !== main) copyFileSync(join(SRC, 'main.go'), join(src, 'main.go'));
  const goMod = `module example.com/gotrail/grpc-echo\n\ngo 1.19\n\nrequire google.golang.org/grpc v${version}\n`;
  const seed = join(dir, 'go.mod.seed');
  if (!existsSync(join(src, 'go.sum')) || !existsSync(seed) || readFileSync(seed, 'utf8') !== goMod + main) {
    writeFileSync(join(src, 'go.mod'), goMod);
    execFileSync(tc.go, ['mod', 'tidy'], { cwd: src, env: goEnv(tc), stdio: ['ignore', 'pipe', 'pipe'] });
    writeFileSync(seed, goMod + main);
  }
  const out = join(dir, stripped ? 'stripped' : 'plain', 'grpc-echo');
  buildGo({ toolchain: tc, dir: src, out, ...(stripped ? { ldflags: '-s -w' } : {}) });
  return { binary: out };
}

/**
 * Drives the echo program's gRPC client (served at `url`) against its own
 * gRPC server: 100-ish concurrent unary calls and streams, then one call per
 * status; `panic` adds a handler panic that a recovery interceptor turns into
 * Internal. Asserts each call's outcome as the client saw it; returns the
 * gRPC server's host:port.
 */
export async function runEchoCalls(url: string, concurrent: number, opts: { panic: boolean }): Promise<string> {
  const grpcAddr = (await httpRequest(`${url}/addr`)).body.trim();
  const call = async (path: string, expect: string): Promise<void> => {
    const res = await httpRequest(`${url}${path}${path.includes('?') ? '&' : '?'}to=${grpcAddr}`);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body.trim(), expect, path);
  };
  await call(`/unary?n=${concurrent}&what=ok`, `OK=${concurrent + 1}`);
  await call(`/stream?n=${concurrent}&msgs=3`, `OK=${concurrent + 1}`);
  await call('/unary?what=notfound', 'NotFound=1');
  await call('/unary?what=internal', 'Internal=1');
  if (opts.panic) await call('/unary?what=panic', 'Internal=1');
  await call('/unary?what=deadline', 'DeadlineExceeded=1');
  await call('/unary?what=cancel', 'Canceled=1');
  await call('/missing', 'Unimplemented');
  return grpcAddr;
}
