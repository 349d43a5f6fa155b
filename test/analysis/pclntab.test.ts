// Pclntab corners the real-binary tests do not reach: the start of Go text
// in stripped PIE binaries whose pointers are only in relocations (Go 1.26+
// no longer records it in the pclntab header, and some linkers leave
// relocated words zero on disk), and the layouts of Go before 1.18.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { BinaryFile } from '../../daemon/analysis/binary-file.ts';
import { ElfFile } from '../../daemon/analysis/elf.ts';
import { FunctionIndex } from '../../daemon/analysis/functions.ts';
import { openGoBinary } from '../../daemon/analysis/go-binary.ts';
import type { GoFunction } from '../../daemon/analysis/go-binary.ts';
import { findPclntab } from '../../daemon/analysis/pclntab.ts';
import { BUILD_DIR, buildGo, goToolchains, programDir } from '../support/go-build.ts';

/** Byte offsets in runtime.moduledata of pcHeader, funcnametab.ptr and text. */
const MODULEDATA_POINTERS = [0, 8, 176];

for (const tc of goToolchains()) {
  test(`${tc.name} pie-stripped: text start from relocations alone`, (t) => {
    const src = buildGo({ toolchain: tc, srcDir: programDir('analysis-http'), variant: 'pie-stripped' });
    const elf = ElfFile.parse(BinaryFile.open(src));
    const module = elf.section('.go.module');
    const pcln = elf.section('.gopclntab');
    elf.close();
    if (!module || !pcln) return t.skip('no .go.module section: this Go records the text start in the pclntab header');

    const copy = path.join(BUILD_DIR, 'analysis-tests', `${tc.name}-zeroed-${process.pid}`);
    fs.mkdirSync(path.dirname(copy), { recursive: true });
    fs.copyFileSync(src, copy);
    try {
      const fd = fs.openSync(copy, 'r+');
      for (const at of MODULEDATA_POINTERS) fs.writeSync(fd, Buffer.alloc(8), 0, 8, module.offset + at);
      fs.writeSync(fd, Buffer.alloc(8), 0, 8, 40); // e_shoff
      fs.writeSync(fd, Buffer.alloc(4), 0, 4, 60); // e_shnum, e_shstrndx
      fs.closeSync(fd);

      const ref = openGoBinary(src);
      const b = openGoBinary(copy);
      try {
        assert.match(b.pclntabLocation, /^scan/);
        for (const name of ['main.handler', 'net/http.serverHandler.ServeHTTP', 'runtime.main']) {
          assert.deepEqual(b.findFunction(name), ref.findFunction(name), name);
        }
      } finally {
        b.close();
        ref.close();
      }
    } finally {
      fs.rmSync(copy, { force: true });
    }
  });
}

for (const tc of goToolchains()) {
  test(`${tc.name} pie-stripped: pclntab found through the module data`, (t) => {
    const src = buildGo({ toolchain: tc, srcDir: programDir('analysis-http'), variant: 'pie-stripped' });
    const data = fs.readFileSync(src);
    // Hide the section by renaming it in the section name table.
    const at = data.indexOf('\0.gopclntab\0');
    if (at < 0) return t.skip('no .gopclntab section name to hide');
    const copy = path.join(BUILD_DIR, 'analysis-tests', `${tc.name}-renamed-${process.pid}`);
    fs.mkdirSync(path.dirname(copy), { recursive: true });
    data.write('.goXXXXtab', at + 1);
    fs.writeFileSync(copy, data);
    try {
      const elf = ElfFile.parse(BinaryFile.open(copy));
      const hasModule = elf.section('.go.module') !== undefined;
      elf.close();
      const ref = openGoBinary(src);
      const b = openGoBinary(copy);
      try {
        assert.equal(b.pclntabLocation, hasModule ? 'module data' : b.pclntabLocation);
        assert.deepEqual(b.findFunction('main.handler'), ref.findFunction('main.handler'));
      } finally {
        b.close();
        ref.close();
      }
    } finally {
      fs.rmSync(copy, { force: true });
    }
  });
}

/**
 * The pre-1.18 layouts no toolchain here produces, on a synthesised ELF:
 * text at 0x401000 (R+X), the pclntab alone in a read-only segment at
 * 0x600000, no section headers (so it is found by scanning).
 */
describe('pclntab layouts of Go 1.2–1.17', () => {
  const FUNCS = [
    { name: 'main.a', entry: 0x401000 },
    { name: 'main.b', entry: 0x401040 },
  ];
  const END = 0x401080;

  test('Go 1.16 (0xfffffffa)', () => {
    const tab = Buffer.alloc(0x200);
    tab.writeUInt32LE(0xfffffffa, 0);
    tab.set([0, 0, 1, 8], 4);
    const names = 'main.a\0main.b\0';
    const funcnameOffset = 64;
    const pclnOffset = 80;
    // nfunc, nfiles, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset
    [2, 0, funcnameOffset, pclnOffset, pclnOffset, pclnOffset, pclnOffset].forEach((v, i) => tab.writeBigUInt64LE(BigInt(v), 8 + i * 8));
    tab.write(names, funcnameOffset);
    writeFunctab(tab, pclnOffset, pclnOffset, (i) => (i === 0 ? 0 : 7));
    assert.deepEqual(functionsOf(synthesise('pcln116', tab)), FUNCS.map((f, i) => ({ ...f, end: FUNCS[i + 1]?.entry ?? END })));
  });

  test('Go 1.2 (0xfffffffb)', () => {
    const tab = Buffer.alloc(0x200);
    tab.writeUInt32LE(0xfffffffb, 0);
    tab.set([0, 0, 1, 8], 4);
    tab.writeBigUInt64LE(2n, 8);
    // Function table at 16; records and names offsets are relative to the table start.
    const namesAt = 0x100;
    tab.write('main.a\0main.b\0', namesAt);
    writeFunctab(tab, 16, 0, (i) => namesAt + (i === 0 ? 0 : 7));
    assert.deepEqual(functionsOf(synthesise('pcln12', tab)), FUNCS.map((f, i) => ({ ...f, end: FUNCS[i + 1]?.entry ?? END })));
  });

  test('a record disagreeing with the function table is CORRUPT', () => {
    const tab = Buffer.alloc(0x200);
    tab.writeUInt32LE(0xfffffffb, 0);
    tab.set([0, 0, 1, 8], 4);
    tab.writeBigUInt64LE(2n, 8);
    tab.write('main.a\0', 0x100);
    writeFunctab(tab, 16, 0, () => 0x100);
    tab.writeBigUInt64LE(0x401010n, 16 + 40 + 16); // second record's entry
    assert.throws(() => functionsOf(synthesise('pcln-bad', tab)), { code: 'CORRUPT', detail: /record says entry/ });
  });

  /**
   * Writes the 16-byte-entry function table at `at` followed by the _func
   * records (entry, nameoff); funcoff is relative to `funcBase`.
   */
  function writeFunctab(tab: Buffer, at: number, funcBase: number, nameOff: (i: number) => number): void {
    const recordsAt = at + FUNCS.length * 16 + 8;
    FUNCS.forEach((f, i) => {
      const rec = recordsAt + i * 16;
      tab.writeBigUInt64LE(BigInt(f.entry), at + i * 16);
      tab.writeBigUInt64LE(BigInt(rec - funcBase), at + i * 16 + 8);
      tab.writeBigUInt64LE(BigInt(f.entry), rec);
      tab.writeInt32LE(nameOff(i), rec + 8);
    });
    tab.writeBigUInt64LE(BigInt(END), at + FUNCS.length * 16);
  }
});

function synthesise(name: string, pclntab: Buffer): string {
  const b = Buffer.alloc(0x3000);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  b.writeUInt16LE(2, 16);
  b.writeUInt16LE(62, 18);
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(64n, 32);
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(2, 56);
  b.writeUInt16LE(64, 58);
  const load = (i: number, flags: number, offset: number, vaddr: number, size: number): void => {
    const o = 64 + i * 56;
    b.writeUInt32LE(1, o);
    b.writeUInt32LE(flags, o + 4);
    b.writeBigUInt64LE(BigInt(offset), o + 8);
    b.writeBigUInt64LE(BigInt(vaddr), o + 16);
    b.writeBigUInt64LE(BigInt(vaddr), o + 24);
    b.writeBigUInt64LE(BigInt(size), o + 32);
    b.writeBigUInt64LE(BigInt(size), o + 40);
  };
  load(0, 5, 0, 0x400000, 0x2000);
  load(1, 4, 0x2000, 0x600000, 0x1000);
  b.fill(0xcc, 0x1000, 0x1080);
  pclntab.copy(b, 0x2000);
  const file = path.join(BUILD_DIR, 'analysis-tests', `${name}-${process.pid}`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, b);
  return file;
}

function functionsOf(file: string): GoFunction[] {
  const elf = ElfFile.parse(BinaryFile.open(file));
  try {
    const t = findPclntab(elf, () => undefined);
    assert.match(t.foundIn, /^scan/);
    return [...FunctionIndex.fromPclntab(elf, t).all()];
  } finally {
    elf.close();
    fs.rmSync(file, { force: true });
  }
}
