// Finding the start of Go text in stripped PIE binaries whose pointers are
// only in relocations: Go 1.26+ no longer records it in the pclntab
// header, and some linkers (lld) leave relocated words zero on disk.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BinaryFile } from '../../daemon/analysis/binary-file.ts';
import { ElfFile } from '../../daemon/analysis/elf.ts';
import { openGoBinary } from '../../daemon/analysis/go-binary.ts';
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
