/**
 * The TypeScript DWARF reader against Go's own debug/dwarf (the generator) and
 * against the offsets database, on the offsets-probe program built with every
 * Go toolchain here, in every DWARF section form Go binaries come in.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import test from 'node:test';
import { SHF_COMPRESSED as SECTION_COMPRESSED } from '../../daemon/analysis/elf.ts';
import { GoBinaryError, openGoBinary } from '../../daemon/analysis/go-binary.ts';
import { DwarfError, elfSectionHeaders, loadDwarfSections, readStructFields } from '../../daemon/offsets/dwarf.ts';
import { resolveOffsets } from '../../daemon/offsets/resolve.ts';
import { buildGo } from '../../offsets-db/go-build.ts';
import { REPO_ROOT, STD_FIELDS, goGenerator, haveCommand, probeBinary, toolchains } from './helpers.ts';

const sorted = (a: string[]): string[] => [...a].sort();

/** The std fields whose type exists at `goVersion`, per the database (null: the type or member is absent there). */
function fieldsAt(goVersion: string): string[] {
  const r = resolveOffsets({ module: 'std', version: goVersion, fields: STD_FIELDS });
  const absent = new Set(r.missing.filter((m) => /does not exist|absent|null/i.test(m.reason)).map((m) => m.field));
  return STD_FIELDS.filter((f) => !absent.has(f));
}

for (const tc of toolchains()) {
  test(`${tc.version}: TS reader = Go debug/dwarf = offsets DB for every std field`, (t) => {
    const bin = probeBinary(tc);
    const sections = loadDwarfSections(bin);
    assert.ok(sections, 'binary has DWARF');
    // fields of types this Go version does not have (HTTP/2 moved packages in 1.27) are
    // recorded as absent for it; the rest must all be read
    const FIELDS = fieldsAt(tc.version);
    const started = performance.now();
    const ts = readStructFields(sections, FIELDS);
    t.diagnostic(`DWARF version ${sections.info.readUInt16LE(4)}, .debug_info ${sections.info.length} bytes, read in ${(performance.now() - started).toFixed(1)} ms`);

    const go = goGenerator(bin, FIELDS);
    assert.equal(go.goVersion, tc.version);
    assert.deepEqual(Object.fromEntries(ts.offsets), go.offsets);
    assert.deepEqual(sorted(ts.absent), sorted(go.absent));
    assert.deepEqual(sorted(ts.structNotFound), sorted(go.structNotFound));
    assert.deepEqual(ts.structNotFound, [], 'offsets-probe links every struct the database covers');

    const db = resolveOffsets({ module: 'std', version: tc.version, fields: FIELDS });
    assert.deepEqual(db.missing, []);
    assert.deepEqual(db.unverified, []);
    assert.deepEqual(db.offsets, go.offsets);
    assert.ok(Object.values(db.source).every((s) => s === 'db'));

    // With the binary's DWARF at hand, resolution takes it.
    const withDwarf = resolveOffsets({ module: 'std', version: tc.version, fields: FIELDS }, { dwarf: ts.offsets });
    assert.ok(Object.values(withDwarf.source).every((s) => s === 'dwarf'));
  });

  test(`${tc.version}: the default build compresses DWARF into SHF_COMPRESSED .debug_* sections`, () => {
    const headers = elfSectionHeaders(readFileSync(probeBinary(tc)));
    const info = headers.find((h) => h.name === '.debug_info');
    assert.ok(info, '.debug_info present');
    assert.ok((info.flags & SECTION_COMPRESSED) !== 0, '.debug_info has SHF_COMPRESSED');
  });
}

test('a binary linked externally with cgo (gcc-made C units beside Go ones) reads the same', (t) => {
  if (!haveCommand('gcc')) return t.skip('gcc not available for external linking');
  const tc = toolchains().at(-1)!;
  const FIELDS = fieldsAt(tc.version);
  const plain = readStructFields(loadDwarfSections(probeBinary(tc))!, FIELDS);
  const cgo = probeBinary(tc, 'cgo');
  const sections = loadDwarfSections(cgo)!;
  assert.ok(sections.str !== undefined, 'gcc units bring .debug_str');
  // A struct that does not exist forces a walk over every unit, C ones included.
  const r = readStructFields(sections, [...FIELDS, 'nosuch/pkg.T.field']);
  assert.deepEqual(Object.fromEntries(r.offsets), Object.fromEntries(plain.offsets));
  assert.deepEqual(r.structNotFound, ['nosuch/pkg.T.field']);
});

test('a stripped binary has no DWARF: loadDwarfSections returns null', () => {
  const tc = toolchains().at(-1)!;
  const out = join(REPO_ROOT, 'build', 'test', 'offsets', `${tc.version}-stripped`, 'offsets-probe');
  buildGo({ toolchain: tc, dir: join(REPO_ROOT, 'test', 'programs', 'offsets-probe'), out, ldflags: '-s -w' });
  assert.equal(loadDwarfSections(out), null);
});

test('a full walk of the largest binary stays fast', () => {
  const tc = toolchains().at(-1)!;
  const sections = loadDwarfSections(probeBinary(tc))!;
  const started = performance.now();
  const r = readStructFields(sections, ['nosuch/pkg.T.field']);
  const ms = performance.now() - started;
  assert.deepEqual(r.structNotFound, ['nosuch/pkg.T.field']);
  assert.ok(ms < 2000, `full walk took ${ms.toFixed(0)} ms`);
});

const objcopyModes = [
  { mode: 'zlib-gnu', name: '.zdebug_info', compressedFlag: false },
  { mode: 'zlib', name: '.debug_info', compressedFlag: true },
  { mode: 'zstd', name: '.debug_info', compressedFlag: true },
] as const;

for (const { mode, name, compressedFlag } of objcopyModes) {
  test(`objcopy --compress-debug-sections=${mode} (${name}${compressedFlag ? ', SHF_COMPRESSED' : ''}) reads the same`, (t) => {
    if (!haveCommand('objcopy')) return t.skip('objcopy (binutils) not available');
    const tc = toolchains().at(-1)!;
    const plainBin = probeBinary(tc, 'nocompress');
    const plainHeaders = elfSectionHeaders(readFileSync(plainBin));
    const plainInfo = plainHeaders.find((h) => h.name === '.debug_info');
    assert.ok(plainInfo && (plainInfo.flags & SECTION_COMPRESSED) === 0, '-compressdwarf=false leaves .debug_info plain');
    const expected = Object.fromEntries(readStructFields(loadDwarfSections(plainBin)!, STD_FIELDS).offsets);

    const out = join(dirname(plainBin), `objcopy-${mode}`);
    mkdirSync(dirname(out), { recursive: true });
    try {
      execFileSync('objcopy', [`--compress-debug-sections=${mode}`, plainBin, `${out}.tmp-${process.pid}`], { stdio: 'pipe' });
    } catch (err) {
      return t.skip(`objcopy cannot compress with ${mode}: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`);
    }
    renameSync(`${out}.tmp-${process.pid}`, out);
    const headers = elfSectionHeaders(readFileSync(out));
    const info = headers.find((h) => h.name === name);
    assert.ok(info, `${name} present`);
    assert.equal((info.flags & SECTION_COMPRESSED) !== 0, compressedFlag);
    assert.deepEqual(Object.fromEntries(readStructFields(loadDwarfSections(out)!, STD_FIELDS).offsets), expected);
  });
}

test('the analysed binary hands on the same DWARF sections, from the file it already has open', () => {
  const tc = toolchains().at(-1)!;
  const path = probeBinary(tc);
  const bin = openGoBinary(path);
  try {
    assert.ok(bin.hasDwarf);
    const handed = bin.dwarfSections();
    const loaded = loadDwarfSections(path);
    assert.ok(handed && loaded);
    assert.ok(handed.info.equals(loaded.info) && handed.abbrev.equals(loaded.abbrev), '.debug_info and .debug_abbrev identical');
    assert.deepEqual(Object.fromEntries(readStructFields(handed, STD_FIELDS).offsets), Object.fromEntries(readStructFields(loaded, STD_FIELDS).offsets));
  } finally {
    bin.close();
  }
  assert.throws(() => bin.dwarfSections(), (e: unknown) => e instanceof GoBinaryError && e.code === 'IO', 'no read after close');

  const out = join(REPO_ROOT, 'build', 'test', 'offsets', `${tc.version}-stripped`, 'offsets-probe');
  buildGo({ toolchain: tc, dir: join(REPO_ROOT, 'test', 'programs', 'offsets-probe'), out, ldflags: '-s -w' });
  const stripped = openGoBinary(out);
  try {
    assert.equal(stripped.dwarfSections(), null);
  } finally {
    stripped.close();
  }
});

test('a missing file is the fs error; a non-ELF file is a DwarfError', () => {
  assert.throws(() => loadDwarfSections(join(REPO_ROOT, 'build', 'no-such-binary')), (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT');
  assert.throws(() => loadDwarfSections(join(REPO_ROOT, 'package.json')), (e: unknown) => e instanceof DwarfError && /bad magic/.test(e.message));
});
