// ELF-level facts other modules (DWARF offsets, attachment) rely on.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BinaryFile, WindowReader } from '../../daemon/analysis/binary-file.ts';
import { ElfFile, SHF_COMPRESSED } from '../../daemon/analysis/elf.ts';
import { GoBinaryError } from '../../daemon/analysis/go-binary.ts';
import { buildGo, goToolchains, programDir } from '../support/go-build.ts';
import { goNm } from './go-tool-output.ts';

for (const tc of goToolchains()) {
  describe(`ELF of analysis-http ${tc.name}`, () => {
    test('compressed DWARF sections decompress to DWARF', () => {
      const bin = buildGo({ toolchain: tc, srcDir: programDir('analysis-http'), variant: 'plain' });
      const elf = ElfFile.parse(BinaryFile.open(bin));
      try {
        const info = elf.section('.debug_info');
        assert.ok(info);
        assert.ok((info.flags & SHF_COMPRESSED) !== 0, 'the Go linker compresses DWARF');
        const data = elf.sectionData(info);
        assert.ok(data.length > info.size, 'decompressed is larger');
        // First compilation unit header: 32-bit unit_length, then version 2–5.
        const unitLength = data.readUInt32LE(0);
        assert.ok(unitLength > 0 && unitLength < data.length);
        assert.ok([2, 3, 4, 5].includes(data.readUInt16LE(4)), `DWARF version ${data.readUInt16LE(4)}`);
        const abbrev = elf.sectionData(elf.section('.debug_abbrev')!);
        assert.ok(abbrev.length > 0);
      } finally {
        elf.close();
      }
    });

    test('symbol values and file offsets', () => {
      const bin = buildGo({ toolchain: tc, srcDir: programDir('analysis-http'), variant: 'pie' });
      const nm = goNm(tc, bin);
      const elf = ElfFile.parse(BinaryFile.open(bin));
      try {
        const values = elf.symbolValues(['runtime.text', 'main.main', 'no.such.symbol']);
        assert.equal(values.get('runtime.text'), nm.find((s) => s.name === 'runtime.text')?.address);
        assert.equal(values.get('main.main'), nm.find((s) => s.name === 'main.main')?.address);
        assert.equal(values.has('no.such.symbol'), false);
        const text = elf.section('.text')!;
        assert.equal(elf.fileOffset(text.addr, 1, 'x'), text.offset);
        assert.equal(elf.tryFileOffset(0), undefined);
        const bss = elf.section('.bss')!;
        assert.equal(elf.tryFileOffset(bss.addr + 8), undefined, '.bss has no file data');
        assert.throws(() => elf.fileOffset(bss.addr + 8, 1, 'bss variable'), (e: unknown) => e instanceof GoBinaryError && e.code === 'CORRUPT' && /bss variable/.test(e.message));
      } finally {
        elf.close();
      }
    });
  });
}

describe('window reader', () => {
  test('strings across window boundaries, and an unterminated one', () => {
    const tc = goToolchains()[0]!;
    const bin = buildGo({ toolchain: tc, srcDir: programDir('analysis-http'), variant: 'plain' });
    const file = BinaryFile.open(bin);
    try {
      const whole = file.read(0, 4096, 'head');
      // A 16-byte window forces reloads and growth for every string.
      const r = new WindowReader(file, 0, 4096, 'head', 16);
      const nul = whole.indexOf(0, 1);
      assert.deepEqual(r.cstring(1, 100), whole.subarray(1, nul));
      const { buf, pos } = r.bytes(100, 50);
      assert.deepEqual(buf.subarray(pos, pos + 50), whole.subarray(100, 150));
      const ones = new WindowReader(file, 0, 4, 'magic', 16);
      assert.throws(() => ones.cstring(1, 100), { code: 'CORRUPT' }); // "ELF" then the region ends
      assert.throws(() => r.bytes(4090, 10), { code: 'CORRUPT' });
      assert.throws(() => file.read(file.size - 2, 4, 'tail'), { code: 'TRUNCATED' });
      assert.throws(() => file.read(-1, 4, 'x'), { code: 'CORRUPT' });
    } finally {
      file.close();
    }
    assert.throws(() => file.read(0, 1, 'after close'), { code: 'IO' });
  });
});
