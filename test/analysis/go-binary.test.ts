// Checks the analysis of real Go binaries — every toolchain installed here
// in every build variant — against what the Go toolchain itself reports:
// `go version -m`, `go tool nm`, `go tool objdump`, `go tool buildid`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BinaryFile } from '../../daemon/analysis/binary-file.ts';
import { ElfFile } from '../../daemon/analysis/elf.ts';
import { FunctionIndex } from '../../daemon/analysis/functions.ts';
import { openGoBinary } from '../../daemon/analysis/go-binary.ts';
import type { GoBinary, GoFunction } from '../../daemon/analysis/go-binary.ts';
import { findPclntab } from '../../daemon/analysis/pclntab.ts';
import { ALL_GO_BUILD_VARIANTS, BUILD_DIR, buildGo, buildSkipReason, goToolchains, programDir, runGo } from '../support/go-build.ts';
import type { GoBuildVariant } from '../support/go-build.ts';
import { abbreviateTypeArgs, goNm, goObjdump, goVersionM, textSymbolsByName } from './go-tool-output.ts';
import type { NmSymbol } from './go-tool-output.ts';

const PROGRAM = programDir('analysis-http');
/** Functions whose probe sites are checked instruction by instruction. */
const PROBED = ['main.handler', 'main.leaf', 'main.bigFrame', 'main.hugeFrame', 'net/http.serverHandler.ServeHTTP'];
/** Go's function alignment is 32 bytes, so padding between functions is less than that. */
const MAX_PADDING = 32;

/** Toolchains whose pclntab names generic instantiations `pkg.F[...]`. */
const ELIDES_TYPE_ARGS = new Set(['go1.19']);

/** The unstripped build with the same layout, whose symbols are the reference for a stripped one. */
const UNSTRIPPED: Record<GoBuildVariant, GoBuildVariant> = {
  plain: 'plain',
  stripped: 'plain',
  pie: 'pie',
  'pie-stripped': 'pie',
  external: 'external',
  'external-pie': 'external-pie',
  'external-pie-stripped': 'external-pie',
};

for (const tc of goToolchains()) {
  for (const variant of ALL_GO_BUILD_VARIANTS) {
    const skip = buildSkipReason(tc, variant);
    describe(`analysis-http ${tc.name} ${variant}`, { skip: skip ?? false }, () => {
      let binPath = '';
      let bin: GoBinary;
      let nm: NmSymbol[];
      let nmByName: Map<string, NmSymbol[]>;

      before(() => {
        binPath = buildGo({ toolchain: tc, srcDir: PROGRAM, variant });
        const refPath = buildGo({ toolchain: tc, srcDir: PROGRAM, variant: UNSTRIPPED[variant] });
        nm = goNm(tc, refPath);
        nmByName = textSymbolsByName(nm, ELIDES_TYPE_ARGS.has(tc.name));
        bin = openGoBinary(binPath);
      });
      after(() => bin?.close());

      test('build info matches go version -m', () => {
        const want = goVersionM(tc, binPath);
        assert.equal(bin.goVersion, want.goVersion);
        assert.equal(bin.arch, 'amd64');
        assert.equal(bin.mainPackage, want.path);
        assert.deepEqual(bin.mainModule && [bin.mainModule.path, bin.mainModule.version, bin.mainModule.sum ?? ''], want.mod);
        assert.deepEqual(
          bin.modules.map((m) => ({ fields: [m.path, m.version, m.sum ?? ''], ...(m.replace ? { replace: [m.replace.path, m.replace.version, ''] } : {}) })),
          want.deps,
        );
        const settings = Object.fromEntries(want.build.map(([k, v]) => [k, v.startsWith('"') ? JSON.parse(v) as string : v]));
        assert.deepEqual(bin.settings, settings);
        assert.equal(bin.moduleVersion('github.com/google/uuid'), 'v1.6.0');
        assert.equal(bin.moduleVersion('std'), want.goVersion.replace(/^go/, ''));
        assert.equal(bin.moduleVersion('example.com/gotrail/analysis-http'), '(devel)');
        assert.equal(bin.moduleVersion('example.com/not-linked'), undefined);
      });

      test('file facts', () => {
        assert.equal(bin.pie, variant.includes('pie'));
        assert.equal(bin.stripped, variant.endsWith('stripped'));
        assert.equal(bin.hasDwarf, !variant.endsWith('stripped'));
        assert.equal(bin.functionSource, variant.endsWith('stripped') ? 'pclntab' : 'symtab');
        assert.equal(bin.buildId, runGo(tc, ['tool', 'buildid', binPath]).trim());
        // Go 1.19's pclntab is merged into .data.rel.ro by the system linker: only a scan finds it.
        if (tc.name === 'go1.19' && variant === 'external-pie-stripped') assert.match(bin.pclntabLocation, /^scan/);
        console.log(`# ${tc.name} ${variant}: pclntab from ${bin.pclntabLocation}`);
      });

      test('every indexed function is at the address go tool nm gives', () => {
        let checked = 0;
        for (const fn of bin.functions()) {
          const syms = [...(nmByName.get(fn.name) ?? []), ...(nmByName.get(`${fn.name}.abi0`) ?? [])];
          assert.ok(syms.length > 0, `${fn.name} is not a text symbol in go tool nm`);
          const sym = syms.find((s) => s.address === fn.entry);
          assert.ok(sym, `${fn.name}: entry 0x${fn.entry.toString(16)}, nm has ${syms.map((s) => s.address.toString(16)).join(', ')}`);
          if (bin.functionSource === 'symtab') {
            assert.equal(fn.end, sym.address + sym.size, fn.name);
          } else {
            assert.ok(fn.end >= sym.address + sym.size && fn.end - (sym.address + sym.size) < MAX_PADDING, `${fn.name}: end 0x${fn.end.toString(16)} vs nm size ${sym.size}`);
          }
          checked++;
        }
        assert.ok(checked > 1500, `only ${checked} functions`);
      });

      test('findFunction agrees with go tool nm (every 10th text symbol)', () => {
        const names = [...new Set(nm.filter((s) => s.type === 'T' || s.type === 't').map((s) => s.name))].filter((_, i) => i % 10 === 0);
        let found = 0;
        for (const name of names) {
          const fn = bin.findFunction(name);
          const syms = [...nmByName.get(name)!, ...(nmByName.get(name.replace(/\.abi0$/, '')) ?? []), ...(nmByName.get(`${name}.abi0`) ?? [])];
          // The pclntab lists Go functions only; nm also lists linker markers and C code.
          if (!fn && name.includes('[') && ELIDES_TYPE_ARGS.has(tc.name)) {
            assert.equal(bin.functionSource, 'pclntab', `${name} not found`);
            assert.ok(bin.findFunction(abbreviateTypeArgs(name)), `${name} not found under its abbreviated name`);
            continue;
          }
          if (!fn) {
            // C code of external links: nm shows assembler labels without ELF type as text too.
            const cSymbol = variant.startsWith('external') && !name.includes('.');
            assert.ok(bin.functionSource === 'pclntab' || cSymbol, `${name} not found`);
            assert.ok(!name.includes('.') || name.startsWith('runtime.e') || name.startsWith('runtime.text') || name.startsWith('go:'), `${name} not found`);
            continue;
          }
          assert.ok(syms.some((s) => s.address === fn.entry), name);
          found++;
        }
        assert.ok(found > names.length * 0.9, `found ${found} of ${names.length}`);
        assert.equal(bin.findFunction('main.noSuchFunction'), undefined);
        assert.equal(bin.findFunction(''), undefined);
      });

      test('RET sites and entry sites match go tool objdump', () => {
        const ref = buildGo({ toolchain: tc, srcDir: PROGRAM, variant: UNSTRIPPED[variant] });
        for (const name of PROBED) {
          const fn = bin.findFunction(name);
          assert.ok(fn, `${name} not found`);
          const lines = goObjdump(tc, ref, name);
          assert.ok(lines.length > 0, `objdump of ${name}`);
          assert.equal(lines[0]!.address, fn.entry, `${name} entry`);
          const wantRets = lines.filter((l) => /^RET\b/.test(l.text)).map((l) => bin.fileOffset(l.address));
          assert.ok(wantRets.length > 0, `${name} has RETs`);
          assert.deepEqual(bin.retSites(fn), wantRets, `${name} RET sites`);
          for (const off of wantRets) assert.equal(readByte(binPath, off), 0xc3);

          // The morestack check is the first JBE; the probe goes on the instruction after it.
          const jbe = lines.slice(0, 6).findIndex((l) => /^JBE\b/.test(l.text));
          const wantEntry = name === 'main.leaf' ? fn.entry : lines[jbe + 1]!.address;
          if (name !== 'main.leaf') assert.ok(jbe > 0 && /^CMPQ .*0x10\(R14\)/.test(lines[jbe - 1]!.text), `${name} prologue: ${lines[jbe - 1]?.text}`);
          assert.equal(bin.entrySite(fn), bin.fileOffset(wantEntry), `${name} entry site`);
          // The cheap entry site: the JBE where the kernel would single-step
          // what follows it (Go before 1.21: SUBQ), else the same as above.
          const cheap = bin.cheapEntrySite(fn);
          const next = name === 'main.leaf' ? undefined : lines[jbe + 1]!.text;
          if (next !== undefined && /^SUBQ\b/.test(next)) {
            assert.deepEqual(cheap, { offset: bin.fileOffset(lines[jbe]!.address), atStackCheck: true }, `${name} cheap entry site (${next})`);
          } else {
            assert.deepEqual(cheap, { offset: bin.entrySite(fn), atStackCheck: false }, `${name} cheap entry site (${next ?? 'no stack check'})`);
          }
        }
        if (tc.name === 'go1.19') {
          // Go 1.19 frames start with SUBQ after the check: every probed function with the check gets its branch
          assert.ok(PROBED.filter((n) => n !== 'main.leaf').every((n) => bin.cheapEntrySite(bin.findFunction(n)!).atStackCheck), 'go1.19: entry probes on the stack check branch');
        }
      });

      test('net/http.serverHandler.ServeHTTP is probe-ready', () => {
        const fn = bin.findFunction('net/http.serverHandler.ServeHTTP');
        assert.ok(fn);
        const entry = bin.fileOffset(fn.entry);
        const site = bin.entrySite(fn);
        assert.ok(site > entry && site < entry + 16, 'entry site just past the stack check');
        for (const r of bin.retSites(fn)) assert.ok(r > site && r < entry + (fn.end - fn.entry));
      });

      test('symbol table and pclntab agree', { skip: variant.endsWith('stripped') ? 'no symbol table' : false }, () => {
        const elf = ElfFile.parse(BinaryFile.open(binPath));
        try {
          const symtab = FunctionIndex.fromSymtab(elf)!;
          const values = elf.symbolValues(['runtime.text', 'runtime.pclntab', 'runtime.epclntab', 'runtime.firstmoduledata']);
          const pcln = FunctionIndex.fromPclntab(elf, findPclntab(elf, (n) => values.get(n)));
          const byName = new Map<string, GoFunction[]>();
          for (const fn of symtab.all()) {
            const names = ELIDES_TYPE_ARGS.has(tc.name) ? new Set([fn.name, abbreviateTypeArgs(fn.name)]) : [fn.name];
            for (const name of names) byName.set(name, [...(byName.get(name) ?? []), fn]);
          }
          let compared = 0;
          for (const fn of pcln.all()) {
            const s = [...(byName.get(fn.name) ?? []), ...(byName.get(`${fn.name}.abi0`) ?? [])].find((f) => f.entry === fn.entry);
            assert.ok(s, `${fn.name} missing from .symtab`);
            assert.equal(s.entry, fn.entry, fn.name);
            assert.ok(fn.end >= s.end && fn.end - s.end < MAX_PADDING, `${fn.name} end`);
            compared++;
          }
          assert.ok(compared > 1500, `compared ${compared}`);
        } finally {
          elf.close();
        }
      });

      test('without section headers: pclntab and build info found by scanning', () => {
        const copy = path.join(BUILD_DIR, 'analysis-tests', `${tc.name}-${variant}-noshdr-${process.pid}`);
        fs.mkdirSync(path.dirname(copy), { recursive: true });
        fs.copyFileSync(binPath, copy);
        try {
          const fd = fs.openSync(copy, 'r+');
          // e_shoff = 0, e_shnum = 0, e_shstrndx = 0
          fs.writeSync(fd, Buffer.alloc(8), 0, 8, 40);
          fs.writeSync(fd, Buffer.alloc(4), 0, 4, 60);
          fs.closeSync(fd);
          const b = openGoBinary(copy);
          try {
            assert.equal(b.goVersion, bin.goVersion);
            assert.deepEqual(b.modules, bin.modules);
            assert.equal(b.functionSource, 'pclntab');
            assert.match(b.pclntabLocation, /scan/);
            assert.equal(b.buildId, bin.buildId);
            for (const name of PROBED) {
              const fn = b.findFunction(name);
              const ref = bin.findFunction(name)!;
              assert.ok(fn, name);
              assert.equal(fn.entry, ref.entry, name);
              assert.deepEqual(b.retSites(fn), bin.retSites(ref), name);
              assert.equal(b.entrySite(fn), bin.entrySite(ref), name);
            }
          } finally {
            b.close();
          }
        } finally {
          fs.rmSync(copy, { force: true });
        }
      });
    });
  }
}

function readByte(file: string, offset: number): number {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    return b[0]!;
  } finally {
    fs.closeSync(fd);
  }
}
