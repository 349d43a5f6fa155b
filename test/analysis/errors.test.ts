// Bad input must become a GoBinaryError with the right code, a message naming
// the file, and never another exception type or a hang.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BinaryFile } from '../../daemon/analysis/binary-file.ts';
import { ElfFile } from '../../daemon/analysis/elf.ts';
import { GoBinaryError, INTERNAL_ERROR, openGoBinary, readGoVersion } from '../../daemon/analysis/go-binary.ts';
import type { GoBinaryErrorCode } from '../../daemon/analysis/go-binary.ts';
import { BUILD_DIR, buildGo, goToolchains, programDir } from '../support/go-build.ts';
import type { GoBuildVariant } from '../support/go-build.ts';

/** Rounds per fuzzed binary; raise it (GOTRAIL_FUZZ_ROUNDS=5000) when changing the parsers. */
const FUZZ_ROUNDS = Number(process.env.GOTRAIL_FUZZ_ROUNDS ?? 150);
/** Seed offset, to explore other flip sequences (GOTRAIL_FUZZ_SEED). */
const FUZZ_SEED = Number(process.env.GOTRAIL_FUZZ_SEED ?? 0);
const WORK = path.join(BUILD_DIR, 'analysis-tests', `errors-${process.pid}`);
const toolchain = goToolchains().find((t) => t.name === 'go1.26') ?? goToolchains()[0];

/** A fresh copy of a test binary that the test may damage. */
function copyOf(variant: GoBuildVariant, name: string): string {
  assert.ok(toolchain, 'no Go toolchain');
  const src = buildGo({ toolchain, srcDir: programDir('analysis-http'), variant });
  const dst = path.join(WORK, name);
  fs.copyFileSync(src, dst);
  return dst;
}

function writeAt(file: string, offset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

function sectionOffset(file: string, name: string): number {
  const elf = ElfFile.parse(BinaryFile.open(file));
  try {
    const sec = elf.section(name);
    assert.ok(sec, `${name} in ${file}`);
    return sec.offset;
  } finally {
    elf.close();
  }
}

/** Asserts that `fn` throws a GoBinaryError with `code` naming `file`. */
function assertFails(fn: () => unknown, code: GoBinaryErrorCode, file: string, detail?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GoBinaryError, `not a GoBinaryError: ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.path, file);
    assert.ok(err.message.startsWith(`${file}: `), err.message);
    assert.ok(!err.message.includes(INTERNAL_ERROR), err.message);
    if (detail) assert.match(err.detail, detail);
    return true;
  });
}

describe('analysis errors', () => {
  before(() => fs.mkdirSync(WORK, { recursive: true }));
  after(() => fs.rmSync(WORK, { recursive: true, force: true }));

  test('missing file and directory are IO', () => {
    const missing = path.join(WORK, 'missing');
    assertFails(() => openGoBinary(missing), 'IO', missing, /ENOENT/);
    assertFails(() => readGoVersion(missing), 'IO', missing);
    assertFails(() => openGoBinary(WORK), 'IO', WORK, /not a regular file/);
  });

  test('text, empty and tiny files are NOT_ELF; an ELF magic cut short is TRUNCATED', () => {
    const text = path.join(WORK, 'text');
    fs.writeFileSync(text, 'just some text\n'.repeat(100));
    assertFails(() => openGoBinary(text), 'NOT_ELF', text);
    assertFails(() => readGoVersion(text), 'NOT_ELF', text);
    const empty = path.join(WORK, 'empty');
    fs.writeFileSync(empty, '');
    assertFails(() => openGoBinary(empty), 'NOT_ELF', empty);
    const stub = path.join(WORK, 'stub');
    fs.writeFileSync(stub, Buffer.from([0x7f, 0x45, 0x4c]));
    assertFails(() => readGoVersion(stub), 'TRUNCATED', stub);
    fs.writeFileSync(stub, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]));
    assertFails(() => readGoVersion(stub), 'TRUNCATED', stub);
  });

  test('a C program is NOT_GO, and readGoVersion says null', () => {
    const c = fs.existsSync('/bin/true') ? '/bin/true' : '/usr/bin/true';
    assertFails(() => openGoBinary(c), 'NOT_GO', c);
    assert.equal(readGoVersion(c), null);
  });

  test('truncated Go binaries are TRUNCATED', () => {
    const bin = copyOf('plain', 'truncated');
    const size = fs.statSync(bin).size;
    for (const keep of [4096, Math.floor(size / 2), size - 1]) {
      fs.truncateSync(bin, keep);
      assertFails(() => openGoBinary(bin), 'TRUNCATED', bin);
      if (keep < size / 2 + 1) assertFails(() => readGoVersion(bin), 'TRUNCATED', bin);
    }
  });

  test('corrupted build info magic is CORRUPT; without section headers it is NOT_GO', () => {
    const bin = copyOf('pie-stripped', 'badmagic');
    writeAt(bin, sectionOffset(bin, '.go.buildinfo') + 2, Buffer.from('XX'));
    assertFails(() => openGoBinary(bin), 'CORRUPT', bin, /build info magic/);
    assertFails(() => readGoVersion(bin), 'CORRUPT', bin);
    writeAt(bin, 40, Buffer.alloc(8)); // e_shoff
    writeAt(bin, 60, Buffer.alloc(4)); // e_shnum, e_shstrndx
    assertFails(() => openGoBinary(bin), 'NOT_GO', bin);
    assert.equal(readGoVersion(bin), null);
  });

  test('32-bit, big-endian and non-x86 ELF are UNSUPPORTED_ARCH', () => {
    const bin = copyOf('plain', 'arch');
    writeAt(bin, 18, Buffer.from([183, 0])); // EM_AARCH64
    assertFails(() => openGoBinary(bin), 'UNSUPPORTED_ARCH', bin, /machine 183/);
    // Discovery still learns it is Go, and which version.
    assert.match(readGoVersion(bin)?.goVersion ?? '', /^go1\./);
    writeAt(bin, 4, Buffer.from([1]));
    assertFails(() => openGoBinary(bin), 'UNSUPPORTED_ARCH', bin, /32-bit/);
    assertFails(() => readGoVersion(bin), 'UNSUPPORTED_ARCH', bin, /32-bit/);
    writeAt(bin, 4, Buffer.from([2, 2]));
    assertFails(() => openGoBinary(bin), 'UNSUPPORTED_ARCH', bin, /big-endian/);
  });

  test('damaged ELF header fields', () => {
    const bin = copyOf('plain', 'header');
    const original = fs.readFileSync(bin).subarray(0, 64);
    const size = fs.statSync(bin).size;
    const cases: [number, Buffer, GoBinaryErrorCode][] = [
      [40, u64(size + 4096), 'TRUNCATED'], // e_shoff past the end
      [32, u64(size - 16), 'TRUNCATED'], // program headers run off the end
      [58, Buffer.from([32, 0]), 'CORRUPT'], // e_shentsize
      [54, Buffer.from([40, 0]), 'CORRUPT'], // e_phentsize
      [62, Buffer.from([0xfe, 0]), 'CORRUPT'], // e_shstrndx out of range
      [40, u64(2 ** 62), 'CORRUPT'], // e_shoff beyond 2^53
    ];
    for (const [offset, bytes, code] of cases) {
      writeAt(bin, 0, original);
      writeAt(bin, offset, bytes);
      assertFails(() => openGoBinary(bin), code, bin);
    }
  });

  test('damaged pclntab is CORRUPT', () => {
    const bin = copyOf('stripped', 'pclntab');
    const off = sectionOffset(bin, '.gopclntab');
    const original = fs.readFileSync(bin).subarray(off, off + 72);
    const cases: [number, Buffer, RegExp][] = [
      [0, Buffer.from([0, 0, 0, 0]), /no valid pclntab/], // magic
      [7, Buffer.from([4]), /no valid pclntab/], // pointer size
      [8, u64(2 ** 40), /function count/], // nfunc
      [32, u64(2 ** 40), /out of order/], // funcnameOffset
      [64, u64(8), /out of order/], // pclnOffset
    ];
    for (const [at, bytes, detail] of cases) {
      writeAt(bin, off, original);
      writeAt(bin, off + at, bytes);
      assertFails(() => openGoBinary(bin), 'CORRUPT', bin, detail);
    }
  });

  for (const variant of ['plain', 'pie-stripped'] as const) {
    test(`random byte flips in the header tables of a ${variant} build never escape as other errors`, () => {
      const bin = copyOf(variant, `fuzz-${variant}`);
      const pristine = fs.readFileSync(bin);
      const regions = headerRegions(bin, pristine);
      const rand = prng((variant === 'plain' ? 1 : 2) + FUZZ_SEED * 16);
      const outcomes = new Map<string, number>();
      let slowest = 0;
      for (let round = 0; round < FUZZ_ROUNDS; round++) {
        const region = regions[Math.floor(rand() * regions.length)]!;
        const flips: number[] = [];
        for (let n = 1 + Math.floor(rand() * 4); n > 0; n--) flips.push(region.start + Math.floor(rand() * region.length));
        const fd = fs.openSync(bin, 'r+');
        for (const at of flips) fs.writeSync(fd, Buffer.from([Math.floor(rand() * 256)]), 0, 1, at);
        fs.closeSync(fd);

        const t0 = performance.now();
        const outcome = exercise(bin);
        slowest = Math.max(slowest, performance.now() - t0);
        outcomes.set(`${region.name}:${outcome}`, (outcomes.get(`${region.name}:${outcome}`) ?? 0) + 1);

        const restore = fs.openSync(bin, 'r+');
        for (const at of flips) fs.writeSync(restore, pristine, at, 1, at);
        fs.closeSync(restore);
      }
      assert.ok(slowest < 5000, `slowest round took ${slowest.toFixed(0)} ms`);
      // Shown with --test-reporter=spec; useful when changing the parsers.
      console.log(`# ${variant}: ${[...outcomes].sort().map(([k, v]) => `${k}=${v}`).join(' ')}; slowest ${slowest.toFixed(0)} ms`);
    });
  }
});

/** Runs the whole API over a possibly damaged binary; returns 'ok' or the error code. */
function exercise(bin: string): string {
  try {
    readGoVersion(bin);
    const b = openGoBinary(bin);
    try {
      for (const name of ['main.handler', 'net/http.serverHandler.ServeHTTP', 'runtime.main']) {
        const fn = b.findFunction(name);
        if (!fn) continue;
        b.retSites(fn);
        b.entrySite(fn);
        b.fileOffset(fn.entry);
      }
      let n = 0;
      for (const fn of b.functions()) if (++n > 200 || !fn) break;
      b.moduleVersion('std');
    } finally {
      b.close();
    }
    return 'ok';
  } catch (err) {
    if (!(err instanceof GoBinaryError)) throw new Error(`escaped as ${String(err)}`, { cause: err });
    if (err.message.includes(INTERNAL_ERROR)) throw new Error(`internal error: ${err.message}`, { cause: err });
    if (!err.message.startsWith(`${bin}: `)) throw new Error(`message does not name the file: ${err.message}`, { cause: err });
    return err.code;
  }
}

interface Region {
  name: string;
  start: number;
  length: number;
}

/** The ELF header and tables, and the Go headers the analysis reads. */
function headerRegions(bin: string, data: Buffer): Region[] {
  const phoff = Number(data.readBigUInt64LE(32));
  const shoff = Number(data.readBigUInt64LE(40));
  const regions: Region[] = [
    { name: 'ehdr', start: 0, length: 64 },
    { name: 'phdrs', start: phoff, length: data.readUInt16LE(56) * 56 },
    { name: 'shdrs', start: shoff, length: data.readUInt16LE(60) * 64 },
  ];
  const elf = ElfFile.parse(BinaryFile.open(bin));
  try {
    for (const [name, sec, length] of [
      ['buildinfo', '.go.buildinfo', 64],
      ['pclnhdr', '.gopclntab', 72],
      ['symtab', '.symtab', 4096],
      ['notes', '.note.go.buildid', 100],
    ] as const) {
      const s = elf.section(sec);
      if (s) regions.push({ name, start: s.offset, length: Math.min(length, s.size) });
    }
    const pcln = elf.section('.gopclntab');
    if (pcln) {
      // The start of the function table.
      const pclnOffset = Number(data.readBigUInt64LE(pcln.offset + 64));
      regions.push({ name: 'functab', start: pcln.offset + pclnOffset, length: 4096 });
    }
  } finally {
    elf.close();
  }
  return regions;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Deterministic PRNG (mulberry32), so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
