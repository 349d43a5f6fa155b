// Build info: the module-info text format, Go string unquoting, the
// pre-1.18 pointer-based blob (no toolchain here produces it, so a minimal
// ELF is synthesised), and replace directives against `go version -m`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { BinaryFile } from '../../daemon/analysis/binary-file.ts';
import { parseModInfo, readBuildInfoStrings, unquote } from '../../daemon/analysis/buildinfo.ts';
import { ElfFile } from '../../daemon/analysis/elf.ts';
import { openGoBinary, readGoVersion } from '../../daemon/analysis/go-binary.ts';
import { BUILD_DIR, buildGo, goToolchains, programDir } from '../support/go-build.ts';
import { goVersionM } from './go-tool-output.ts';

describe('module info text', () => {
  test('paths, modules, replacements and settings', () => {
    const text = [
      'path\texample.com/cmd/x',
      'mod\texample.com\t(devel)\t',
      'dep\tgolang.org/x/net\tv0.20.0\th1:abc=',
      'dep\tgithub.com/a/b\tv1.0.0\th1:def=',
      '=>\tgithub.com/fork/b\tv1.0.1\th1:ghi=',
      'dep\tgithub.com/c/d\tv0.1.0',
      '=>\t../d\t\t',
      'build\t-buildmode=exe',
      'build\t-ldflags="-s -w -X \\"main.v=1\\""',
      'build\t"odd key"=plain',
      'build\tCGO_ENABLED=0',
      'build\tempty=',
      '',
    ].join('\n');
    const info = parseModInfo('go1.26.8', text);
    assert.equal(info.mainPackage, 'example.com/cmd/x');
    assert.deepEqual(info.mainModule, { path: 'example.com', version: '(devel)' });
    assert.deepEqual(info.modules, [
      { path: 'golang.org/x/net', version: 'v0.20.0', sum: 'h1:abc=' },
      { path: 'github.com/a/b', version: 'v1.0.0', sum: 'h1:def=', replace: { path: 'github.com/fork/b', version: 'v1.0.1' } },
      { path: 'github.com/c/d', version: 'v0.1.0', replace: { path: '../d', version: '' } },
    ]);
    assert.deepEqual(info.settings, {
      '-buildmode': 'exe',
      '-ldflags': '-s -w -X "main.v=1"',
      'odd key': 'plain',
      CGO_ENABLED: '0',
      empty: '',
    });
  });

  test('malformed and unterminated lines are skipped', () => {
    const info = parseModInfo('go1.19', 'dep\tonly-path\n=>\tx\ty\tz\nbuild\tnoequals\nbuild\t"bad=1\nnonsense\ndep\ta\tv1\nbuild\tK=V');
    assert.deepEqual(info.modules, [{ path: 'a', version: 'v1' }]);
    assert.deepEqual(info.settings, {});
  });

  test('Go string unquoting', () => {
    assert.equal(unquote('"a\\tb\\n\\\\\\"q\\""'), 'a\tb\n\\"q"');
    assert.equal(unquote('"\\x41\\101\\u00e9\\U0001F600"'), 'AAé😀');
    assert.equal(unquote('`raw \\n`'), 'raw \\n');
    assert.equal(unquote('"é"'), 'é');
    for (const bad of ['"', '"abc', '"\\q"', '"\\x4"', '"\\777"', '`a`b`', "'x'", '"\\ud800"']) assert.equal(unquote(bad), undefined, bad);
  });
});

describe('build info blob', () => {
  test('pointer-based format of Go 1.13–1.17', () => {
    const modinfo = `${'0'.repeat(16)}path\tx\nmod\tx\t(devel)\t\ndep\ty\tv1.2.3\th1:q=\n${'1'.repeat(15)}\n`;
    const file = writeSyntheticElf('old-format', (b) => {
      putString(b, 0x1100, 0x1200, 'go1.16.15');
      putString(b, 0x1110, 0x1300, modinfo);
      b.write('\xff Go buildinf:', 0x1000, 'latin1');
      b[0x100e] = 8; // pointer size
      b[0x100f] = 0; // little-endian, strings not inline
      b.writeBigUInt64LE(BigInt(BASE + 0x1100), 0x1010);
      b.writeBigUInt64LE(BigInt(BASE + 0x1110), 0x1018);
    });
    assert.deepEqual(readGoVersion(file), { goVersion: 'go1.16.15' });
    const strings = readStrings(file);
    assert.equal(strings?.goVersion, 'go1.16.15');
    assert.deepEqual(parseModInfo('go1.16.15', strings.modinfo).modules, [{ path: 'y', version: 'v1.2.3', sum: 'h1:q=' }]);
  });

  test('inline format found by scanning a segment without section headers', () => {
    const modinfo = `${'0'.repeat(16)}path\tx\n${'1'.repeat(15)}\n`;
    const file = writeSyntheticElf('inline', (b) => {
      // 16-byte aligned, after some data; a misaligned copy before it must be ignored.
      b.write('\xff Go buildinf:', 0x1801, 'latin1');
      b.write('\xff Go buildinf:', 0x2000, 'latin1');
      b[0x200e] = 8;
      b[0x200f] = 2;
      b[0x2020] = 'go1.23.4'.length;
      b.write('go1.23.4', 0x2021);
      b[0x2029] = modinfo.length;
      b.write(modinfo, 0x202a);
    });
    assert.deepEqual(readGoVersion(file), { goVersion: 'go1.23.4' });
    assert.equal(parseModInfo('go1.23.4', readStrings(file)!.modinfo).mainPackage, 'x');
  });

  test('a string pointer outside the file is CORRUPT, a huge length is CORRUPT', () => {
    const file = writeSyntheticElf('badptr', (b) => {
      b.write('\xff Go buildinf:', 0x1000, 'latin1');
      b[0x100e] = 8;
      b.writeBigUInt64LE(0xdead0000n, 0x1010);
    });
    assert.throws(() => readGoVersion(file), { code: 'CORRUPT' });
    const huge = writeSyntheticElf('hugelen', (b) => {
      b.write('\xff Go buildinf:', 0x1000, 'latin1');
      b[0x100e] = 8;
      b[0x100f] = 2;
      b.set([0xff, 0xff, 0xff, 0xff, 0x7f], 0x1020);
    });
    assert.throws(() => readGoVersion(huge), { code: 'CORRUPT' });
  });
});

describe('replace directives match go version -m', () => {
  for (const tc of goToolchains()) {
    test(tc.name, () => {
      const bin = buildGo({ toolchain: tc, srcDir: programDir('analysis-replace'), variant: 'plain' });
      const want = goVersionM(tc, bin);
      const b = openGoBinary(bin);
      try {
        const dep = b.modules.find((m) => m.path === 'example.com/localdep');
        const wantDep = want.deps.find((d) => d.fields[0] === 'example.com/localdep');
        assert.ok(dep && wantDep);
        assert.equal(dep.version, wantDep.fields[1]);
        assert.deepEqual(dep.replace, { path: wantDep.replace![0], version: wantDep.replace![1] });
        assert.equal(b.moduleVersion('example.com/localdep'), 'v1.2.3');
      } finally {
        b.close();
      }
    });
  }
});

const BASE = 0x400000;
const WORK = path.join(BUILD_DIR, 'analysis-tests', `buildinfo-${process.pid}`);

/**
 * A minimal ELF64 x86-64 executable: header, one writable PT_LOAD mapping
 * the whole 16 KiB file at {@link BASE}, no section headers.
 */
function writeSyntheticElf(name: string, fill: (b: Buffer) => void): string {
  const b = Buffer.alloc(0x4000);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(62, 18); // EM_X86_64
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(64n, 32); // e_phoff
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(1, 56);
  b.writeUInt16LE(64, 58);
  b.writeUInt32LE(1, 64); // PT_LOAD
  b.writeUInt32LE(6, 68); // PF_R | PF_W
  b.writeBigUInt64LE(0n, 72);
  b.writeBigUInt64LE(BigInt(BASE), 80);
  b.writeBigUInt64LE(BigInt(BASE), 88);
  b.writeBigUInt64LE(BigInt(b.length), 96);
  b.writeBigUInt64LE(BigInt(b.length), 104);
  fill(b);
  fs.mkdirSync(WORK, { recursive: true });
  const file = path.join(WORK, name);
  fs.writeFileSync(file, b);
  return file;
}

/** A Go string header at `at` pointing to `text` stored at `dataAt`. */
function putString(b: Buffer, at: number, dataAt: number, text: string): void {
  const n = b.write(text, dataAt);
  b.writeBigUInt64LE(BigInt(BASE + dataAt), at);
  b.writeBigUInt64LE(BigInt(n), at + 8);
}

function readStrings(file: string): ReturnType<typeof readBuildInfoStrings> {
  const elf = ElfFile.parse(BinaryFile.open(file));
  try {
    return readBuildInfoStrings(elf);
  } finally {
    elf.close();
  }
}

process.on('exit', () => fs.rmSync(WORK, { recursive: true, force: true }));
