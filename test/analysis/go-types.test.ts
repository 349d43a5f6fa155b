// The Go type-metadata reader on real binaries of every Go version here,
// plain, stripped and PIE: every field a probe reads equals its DWARF value
// (from the unstripped build of the same source and toolchain) or is listed
// as unreachable; every struct both sources know agrees field by field; a
// wrong layout is detected, never misread; damaged metadata gives a typed
// error, never a crash or a hang.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BinaryFile } from '../../daemon/analysis/binary-file.ts';
import { ElfFile } from '../../daemon/analysis/elf.ts';
import { openGoBinary } from '../../daemon/analysis/go-binary.ts';
import { GoTypesError, TYPES_LAYOUTS, layoutFor, readGoTypes } from '../../daemon/analysis/go-types.ts';
import type { GoTypes } from '../../daemon/analysis/go-types.ts';
import { findPclntab } from '../../daemon/analysis/pclntab.ts';
import { loadDwarfSections, readStructFields } from '../../daemon/offsets/dwarf.ts';
import { probes } from '../../daemon/probes/registry.ts';
import { MODULE_FIELDS } from '../../offsets-db/fields.ts';
import { BUILD_DIR, REPO_ROOT } from '../support/go-build.ts';

const TOOLCHAINS = ['go1.19', 'go1.26', 'go1.27'];
const VARIANTS = ['plain', 'stripped', 'pie'];
const bin = (tc: string, v: string): string => path.join(REPO_ROOT, 'build', 'go', tc, v, 'httpserver');
const WORK = path.join(BUILD_DIR, 'analysis-tests', `go-types-${process.pid}`);
/** Rounds per fuzzed region; raise it (GOTRAIL_FUZZ_ROUNDS=2000) when changing the reader. */
const FUZZ_ROUNDS = Number(process.env.GOTRAIL_FUZZ_ROUNDS ?? 60);

/** Every field a probe reads, plus the goroutine id: the set the agent resolves per binary. */
const PROBE_FIELDS = [...new Set(['runtime.g.goid', ...probes.flatMap((p) => Object.keys(p.fields))])];
/** The standard-library fields of the offsets database (a superset, for the report). */
const STD_FIELDS = Object.keys(MODULE_FIELDS.find((m) => m.module === 'std')!.fields);

function dwarfOf(file: string, wanted: string[]): ReturnType<typeof readStructFields> {
  const sections = loadDwarfSections(file);
  assert.ok(sections, `DWARF in ${file}`);
  return readStructFields(sections, wanted);
}

function typesOf(file: string): GoTypes {
  const b = openGoBinary(file);
  try {
    return b.goTypes();
  } finally {
    b.close();
  }
}

/** Field offsets of every struct of the type metadata, as `pkg.Struct.field` → offset. */
function allFields(types: GoTypes): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of types.structs.values()) {
    for (const f of s.fields) {
      const key = `${s.name}.${f.name}`;
      if (!out.has(key)) out.set(key, f.offset);
    }
  }
  return out;
}

describe('Go type metadata', () => {
  before(() => fs.mkdirSync(WORK, { recursive: true }));
  after(() => fs.rmSync(WORK, { recursive: true, force: true }));

  const report: string[] = [];
  after(() => {
    // Which probe fields the type metadata gives, per Go version (the rest falls back to DWARF or the database).
    console.log(['# probe fields from type metadata (httpserver):', ...report].join('\n'));
  });

  for (const tc of TOOLCHAINS) {
    test(`${tc}: every probe field equals its DWARF value, or is listed unreachable — plain, stripped, PIE`, () => {
      const dwarf = dwarfOf(bin(tc, 'plain'), PROBE_FIELDS);
      const unreachable: string[] = [];
      for (const v of VARIANTS) {
        const types = typesOf(bin(tc, v));
        assert.equal(types.layout, layoutFor(tc === 'go1.19' ? 'go1.19.8' : `${tc}.0`)!.name);
        const r = types.fieldOffsets(PROBE_FIELDS);
        for (const f of PROBE_FIELDS) {
          const fromTypes = r.offsets.get(f);
          const fromDwarf = dwarf.offsets.get(f);
          if (fromTypes === undefined) {
            // A field that DWARF has but the type metadata lacks is only acceptable when its whole struct is unreachable.
            assert.ok(!r.absent.includes(f) || fromDwarf === undefined, `${tc} ${v}: ${f} absent from a struct DWARF has it in`);
            if (v === 'plain' && fromDwarf !== undefined) unreachable.push(f);
            continue;
          }
          assert.equal(fromTypes, fromDwarf, `${tc} ${v}: ${f}: types ${fromTypes}, DWARF ${fromDwarf}`);
        }
        if (v !== 'plain') {
          // Stripping and PIE change nothing in what the metadata gives.
          assert.deepEqual(r, typesOf(bin(tc, 'plain')).fieldOffsets(PROBE_FIELDS));
        }
      }
      const given = PROBE_FIELDS.filter((f) => dwarf.offsets.has(f) && !unreachable.includes(f));
      const notInVersion = PROBE_FIELDS.filter((f) => !dwarf.offsets.has(f));
      report.push(`${tc}: ${given.length} of ${given.length + unreachable.length} fields present in this version from type metadata; unreachable: ${unreachable.join(', ') || 'none'}; not in this Go version: ${notInVersion.join(', ') || 'none'}`);
      // Today every probe field of this server is reachable; a Go release that makes one unreachable shows up here.
      assert.deepEqual(unreachable, []);
    });

    test(`${tc}: every struct both sources know agrees field by field (generics, embedded and unexported fields included)`, () => {
      const types = typesOf(bin(tc, 'stripped'));
      const fields = allFields(types);
      const dwarf = dwarfOf(bin(tc, 'plain'), [...fields.keys()]);
      let compared = 0;
      for (const [f, off] of fields) {
        const d = dwarf.offsets.get(f);
        if (d === undefined) continue;
        assert.equal(off, d, `${tc}: ${f}: types ${off}, DWARF ${d}`);
        compared++;
      }
      const structs = [...types.structs.values()];
      const generic = structs.filter((s) => s.name.includes('['));
      const embedded = structs.filter((s) => s.fields.some((f) => f.embedded));
      const unexported = structs.filter((s) => /\.[a-z_][^.]*$/.test(s.name.replace(/\[.*\]$/, '')) && s.fields.some((f) => /^[a-z_]/.test(f.name)));
      assert.ok(compared > 2000, `${tc}: only ${compared} fields compared`);
      assert.ok(generic.some((s) => s.fields.every((f) => dwarf.offsets.get(`${s.name}.${f.name}`) === f.offset)), `${tc}: a generic struct checked against DWARF (${generic.map((s) => s.name).slice(0, 5).join(', ')})`);
      assert.ok(embedded.length > 10 && unexported.length > 100, `${tc}: embedded ${embedded.length}, unexported ${unexported.length}`);
      // bufio.Reader is embedded nowhere, but net/http.conn's rwc is an interface and
      // net.TCPConn embeds net.conn: an embedded field resolves by its type's name.
      const tcp = types.structs.get('net.TCPConn');
      assert.ok(tcp?.fields.some((f) => f.name === 'conn' && f.embedded && f.offset === 0), 'net.TCPConn embeds conn at 0');
      console.log(`# ${tc}: ${types.typeCount} descriptors, ${types.structs.size} named structs, ${compared} fields equal to DWARF (${generic.length} generic structs, ${embedded.length} with embedded fields)`);
    });

    test(`${tc}: every other layout is detected as wrong, never misread`, () => {
      const file = bin(tc, 'stripped');
      const elf = ElfFile.parse(BinaryFile.open(file));
      try {
        const pcln = findPclntab(elf, () => undefined);
        const right = readGoTypes(elf, pcln, `${tc}.0`, () => undefined);
        const outcome: string[] = [];
        for (const l of TYPES_LAYOUTS) {
          if (l.name === right.layout) continue;
          try {
            const other = readGoTypes(elf, pcln, `${tc}.0`, () => undefined, l);
            // Only a layout identical for everything this binary holds may read it.
            assert.deepEqual([...other.structs.entries()], [...right.structs.entries()], `${l.name} misreads a ${tc} binary`);
            outcome.push(`${l.name}: same result`);
          } catch (err) {
            assert.ok(err instanceof GoTypesError, String(err));
            assert.equal(err.code, 'LAYOUT', err.message);
            outcome.push(`${l.name}: LAYOUT`);
          }
        }
        console.log(`# ${tc} binary read with other layouts: ${outcome.join('; ')}`);
      } finally {
        elf.close();
      }
    });
  }

  test('versions past the newest known layout are read with it (and validated)', () => {
    assert.equal(layoutFor('go1.30.1')?.name, 'go1.27');
    assert.equal(layoutFor('go1.27.4')?.name, 'go1.27');
    assert.equal(layoutFor('go1.22rc1')?.name, 'go1.20');
    assert.equal(layoutFor('go1.25.3 X:nodwarf5')?.name, 'go1.24');
    assert.equal(layoutFor('go1.16.5'), undefined);
    assert.equal(layoutFor('devel +abc'), undefined);
  });

  test('STD fields: which ones the type metadata gives, per Go version (report)', () => {
    for (const tc of TOOLCHAINS) {
      const r = typesOf(bin(tc, 'stripped')).fieldOffsets(STD_FIELDS);
      console.log(`# ${tc} std fields from type metadata: ${r.offsets.size}/${STD_FIELDS.length}; struct not reachable: ${r.structNotFound.join(', ') || 'none'}; absent: ${r.absent.join(', ') || 'none'}`);
    }
  });

  test('time the type walk adds per binary', () => {
    for (const tc of TOOLCHAINS) {
      const file = bin(tc, 'stripped');
      const b = openGoBinary(file);
      try {
        const t0 = performance.now();
        b.goTypes();
        const ms = performance.now() - t0;
        console.log(`# ${tc} stripped (${(fs.statSync(file).size / 1e6).toFixed(1)} MB): type walk ${ms.toFixed(1)} ms`);
        assert.ok(ms < 2000, `${ms} ms`);
      } finally {
        b.close();
      }
    }
  });

  for (const tc of TOOLCHAINS) {
    test(`${tc}: damaged type metadata gives a GoTypesError, never another error or a hang`, () => {
      const src = bin(tc, 'stripped');
      const original = fs.readFileSync(src);
      // Where the descriptors and the module data are: located in an intact copy.
      const elf = ElfFile.parse(BinaryFile.open(src));
      const regions: Array<{ off: number; len: number }> = [];
      try {
        const t = typesOf(src);
        regions.push({ off: elf.tryFileOffset(t.range.start)!, len: Math.min(t.range.end - t.range.start, 1 << 20) });
        regions.push({ off: elf.tryFileOffset(t.moduledata)!, len: 400 });
      } finally {
        elf.close();
      }
      const file = path.join(WORK, `${tc}-fuzzed`);
      let seed = 12345 + tc.length;
      const rand = (n: number): number => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed % n;
      };
      const outcomes = new Map<string, number>();
      const t0 = Date.now();
      for (let round = 0; round < FUZZ_ROUNDS; round++) {
        const buf = Buffer.from(original);
        const flips = 1 + rand(32);
        const region = regions[round % regions.length]!;
        for (let i = 0; i < flips; i++) buf[region.off + rand(region.len)] = rand(256);
        fs.writeFileSync(file, buf);
        const b = openGoBinary(file);
        try {
          b.goTypes();
          outcomes.set('read', (outcomes.get('read') ?? 0) + 1);
        } catch (err) {
          assert.ok(err instanceof GoTypesError, `round ${round}: ${String(err)}`);
          assert.ok(err.message.startsWith(`${file}: `), err.message);
          outcomes.set(err.code, (outcomes.get(err.code) ?? 0) + 1);
        } finally {
          b.close();
        }
      }
      // Truncated: the file ends inside the type data.
      for (const cut of [regions[0]!.off + 64, regions[0]!.off + (regions[0]!.len >> 1)]) {
        fs.writeFileSync(file, original.subarray(0, cut));
        try {
          const b = openGoBinary(file);
          try {
            b.goTypes();
            assert.fail('a truncated binary read');
          } catch (err) {
            assert.ok(err instanceof GoTypesError, String(err));
          } finally {
            b.close();
          }
        } catch (err) {
          // Or the ELF tables themselves are gone: the analysis error, as before.
          assert.ok(err instanceof Error && /TRUNCATED|past the end|truncated|GoTypesError/i.test(`${err.name} ${err.message}`), String(err));
        }
      }
      console.log(`# ${tc}: ${FUZZ_ROUNDS} fuzzed rounds in ${Date.now() - t0} ms: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    });
  }
});
