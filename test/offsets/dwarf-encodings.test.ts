/**
 * The DWARF reader on hand-built sections: every encoding it claims to
 * handle, and the malformations it must report as DwarfError.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { DwarfError, readStructFields, readStructOffsets } from '../../daemon/offsets/dwarf.ts';
import type { DwarfSections } from '../../daemon/offsets/dwarf.ts';
import { Bytes, DW, abbrevTable, unit } from './dwarf-builder.ts';
import type { AbbrevSpec } from './dwarf-builder.ts';

const plusUconst = (n: number): number[] => {
  const b = new Bytes().u8(DW.OP_plus_uconst).uleb(n).buffer();
  return [...b];
};

/** DWARF 4 with the older member-location encodings (exprloc, block1) beside constants. */
function dwarf4Sections(version: 2 | 3 | 4 = 4, dwarf64 = false): DwarfSections {
  const abbrev = abbrevTable([
    [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1]]],
    [2, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_string], [DW.AT_byte_size, DW.FORM_udata]]],
    [3, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_exprloc]]],
    [4, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_block1]]],
    [5, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_data2]]],
    [6, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_udata]]],
    [7, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string]]],
    [8, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_indirect]]],
  ]);
  const info = unit({ version, dwarf64 }, () => {
    const b = new Bytes();
    b.uleb(1).u8(DW.LANG_Go);
    b.uleb(2).str('pkg.T').uleb(512);
    const loc = plusUconst(8);
    b.uleb(3).str('a').uleb(loc.length).bytes(loc);
    const loc2 = plusUconst(200);
    b.uleb(4).str('b').u8(loc2.length).bytes(loc2);
    b.uleb(5).str('c').u16(300);
    b.uleb(6).str('d').uleb(70000);
    b.uleb(7).str('e');
    b.uleb(8).str('f').uleb(DW.FORM_udata).uleb(16);
    b.u8(0); // end of pkg.T
    b.u8(0); // end of unit
    return b;
  });
  return { info: info.buffer(), abbrev: abbrev.buffer() };
}

test('DWARF 2/3/4, 32- and 64-bit: exprloc, block1, data2, udata, indirect and absent locations', () => {
  for (const version of [2, 3, 4] as const) {
    for (const dwarf64 of [false, true]) {
      const r = readStructFields(dwarf4Sections(version, dwarf64), [
        'pkg.T.a', 'pkg.T.b', 'pkg.T.c', 'pkg.T.d', 'pkg.T.e', 'pkg.T.f', 'pkg.T.zz', 'other.S.x',
      ]);
      assert.deepEqual(Object.fromEntries(r.offsets), { 'pkg.T.a': 8, 'pkg.T.b': 200, 'pkg.T.c': 300, 'pkg.T.d': 70000, 'pkg.T.e': 0, 'pkg.T.f': 16 }, `v${version} 64=${dwarf64}`);
      assert.deepEqual(r.absent, ['pkg.T.zz']);
      assert.deepEqual(r.structNotFound, ['other.S.x']);
    }
  }
});

/** DWARF 5 names through .debug_str, .debug_line_str and .debug_str_offsets; a subtree skipped by DW_AT_sibling. */
function dwarf5Sections(opts: { sibling: boolean; bigEndian?: boolean }): DwarfSections {
  const be = opts.bigEndian ?? false;
  const str = new Bytes(be).u8(0).str('pkg.U').str('fieldA').str('fieldC'); // offsets 1, 7, 14
  const lineStr = new Bytes(be).u8(0).str('fieldB'); // offset 1
  const strOffsets = new Bytes(be).u32(12).u16(5).u16(0).u32(1).u32(14); // header, then [pkg.U, fieldC]
  const skipStruct: AbbrevSpec = opts.sibling
    ? [2, DW.TAG_structure_type, true, [[DW.AT_sibling, DW.FORM_ref4], [DW.AT_name, DW.FORM_string]]]
    : [2, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_string]]];
  const abbrev = abbrevTable(
    [
      [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1], [DW.AT_str_offsets_base, DW.FORM_sec_offset]]],
      skipStruct,
      [3, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_strx1]]],
      [4, DW.TAG_member, false, [[DW.AT_name, DW.FORM_strp], [DW.AT_data_member_location, DW.FORM_implicit_const, 24]]],
      [5, DW.TAG_member, false, [[DW.AT_name, DW.FORM_line_strp], [DW.AT_data_member_location, DW.FORM_data2]]],
      [6, DW.TAG_member, false, [[DW.AT_name, DW.FORM_strx1], [DW.AT_data_member_location, DW.FORM_udata]]],
      [7, DW.TAG_variable, false, [[DW.AT_name, DW.FORM_data16], [DW.AT_type, DW.FORM_flag_present]]],
    ],
    be,
  );
  const info = unit({ version: 5, bigEndian: be }, (dieStart) => {
    const b = new Bytes(be);
    b.uleb(1).u8(DW.LANG_Go).u32(8);
    b.uleb(7).bytes(new Array(16).fill(0xee)); // fixed-size DIE, skipped by size
    b.uleb(2);
    const siblingAt = b.length;
    if (opts.sibling) b.u32(0);
    b.str('skip.Me');
    b.u8(0x7f).u8(0); // children that are not valid DIEs: only a sibling skip gets past them
    if (opts.sibling) b.patchU32(siblingAt, dieStart + b.length);
    b.uleb(3).u8(0);
    b.uleb(4).u32(7);
    b.uleb(5).u32(1).u16(0x0102);
    b.uleb(6).u8(1).uleb(48);
    b.u8(0);
    b.u8(0);
    return b;
  });
  return { info: info.buffer(), abbrev: abbrev.buffer(), str: str.buffer(), lineStr: lineStr.buffer(), strOffsets: strOffsets.buffer(), bigEndian: be };
}

test('DWARF 5: strp, line_strp, strx1 names, implicit_const, subtree skipped by DW_AT_sibling', () => {
  for (const bigEndian of [false, true]) {
    const got = readStructOffsets(dwarf5Sections({ sibling: true, bigEndian }), ['pkg.U.fieldA', 'pkg.U.fieldB', 'pkg.U.fieldC']);
    assert.deepEqual(Object.fromEntries(got), { 'pkg.U.fieldA': 24, 'pkg.U.fieldB': 0x0102, 'pkg.U.fieldC': 48 }, `bigEndian=${bigEndian}`);
  }
});

test('without DW_AT_sibling the reader parses through children (and meets the bad ones)', () => {
  assert.throws(
    () => readStructOffsets(dwarf5Sections({ sibling: false }), ['pkg.U.fieldA']),
    (e: unknown) => e instanceof DwarfError && e.section === '.debug_info' && /unknown abbreviation code 127/.test(e.message),
  );
});

test('a struct in a C unit is not taken for the Go struct of the same name', () => {
  const abbrev = abbrevTable([
    [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1]]],
    [2, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_string]]],
    [3, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_data1]]],
  ]);
  const cu = (lang: number, off: number): Buffer =>
    unit({ version: 5 }, () => new Bytes().uleb(1).u8(lang).uleb(2).str('pkg.T').uleb(3).str('x').u8(off).u8(0).u8(0)).buffer();
  const info = Buffer.concat([cu(DW.LANG_C11, 99), cu(DW.LANG_Go, 8)]);
  assert.deepEqual(Object.fromEntries(readStructOffsets({ info, abbrev: abbrev.buffer() }, ['pkg.T.x'])), { 'pkg.T.x': 8 });
});

test('a DWARF 5 type unit before the compile unit is walked past', () => {
  const abbrev = abbrevTable([
    [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1]]],
    [2, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_string]]],
    [3, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_data1]]],
  ]);
  const tu = unit({ version: 5, unitType: 2 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).u8(0)).buffer();
  const cu = unit({ version: 5 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).uleb(2).str('pkg.T').uleb(3).str('x').u8(4).u8(0).u8(0)).buffer();
  assert.deepEqual(Object.fromEntries(readStructOffsets({ info: Buffer.concat([tu, cu]), abbrev: abbrev.buffer() }, ['pkg.T.x'])), { 'pkg.T.x': 4 });
});

test('badly formed field names are a TypeError, not a DWARF problem', () => {
  const s = dwarf4Sections();
  for (const bad of ['goid', 'runtime.goid', 'pkg.T.', '.T.x']) {
    assert.throws(() => readStructOffsets(s, [bad]), TypeError, bad);
  }
});

/** Expects a DwarfError for `section` whose message matches `re`. */
function assertDwarfError(fn: () => unknown, section: string, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DwarfError, `expected DwarfError, got ${String(e)}`);
    assert.equal(e.section, section);
    assert.match(e.message, re);
    assert.match(e.message, /at offset 0x[0-9a-f]+/);
    return true;
  });
}

test('malformed units: absurd length, unknown version, reserved length, truncated header', () => {
  const good = dwarf4Sections();
  const info = Buffer.from(good.info);
  info.writeUInt32LE(0x7fffff00, 0);
  assertDwarfError(() => readStructOffsets({ ...good, info }, ['pkg.T.a']), '.debug_info', /unit length .* runs past the end/);
  const v9 = Buffer.from(good.info);
  v9.writeUInt16LE(9, 4);
  assertDwarfError(() => readStructOffsets({ ...good, info: v9 }, ['pkg.T.a']), '.debug_info', /unsupported DWARF version 9/);
  const reserved = Buffer.from(good.info);
  reserved.writeUInt32LE(0xfffffff5, 0);
  assertDwarfError(() => readStructOffsets({ ...good, info: reserved }, ['pkg.T.a']), '.debug_info', /reserved unit length/);
  assertDwarfError(() => readStructOffsets({ ...good, info: good.info.subarray(0, 3) }, ['pkg.T.a']), '.debug_info', /truncated/);
  assertDwarfError(() => readStructOffsets({ ...good, info: good.info.subarray(0, 7) }, ['pkg.T.a']), '.debug_info', /unit length .* runs past the end/);
});

test('malformed abbreviations: offset past the end, unknown form, duplicate code', () => {
  const good = dwarf4Sections();
  const far = Buffer.from(good.info);
  far.writeUInt32LE(0x10000, 6); // v4: abbrev offset follows the version
  assertDwarfError(() => readStructOffsets({ ...good, info: far }, ['pkg.T.a']), '.debug_abbrev', /past the end/);

  const abbrev = abbrevTable([
    [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1]]],
    [2, DW.TAG_base_type, false, [[DW.AT_name, 0x7e]]],
  ]);
  const info = unit({ version: 5 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).uleb(2).u8(0).u8(0));
  assertDwarfError(() => readStructOffsets({ info: info.buffer(), abbrev: abbrev.buffer() }, ['pkg.T.a']), '.debug_info', /unknown attribute form 0x7e/);

  const dup = abbrevTable([
    [1, DW.TAG_compile_unit, true, []],
    [1, DW.TAG_base_type, false, []],
  ]);
  assertDwarfError(() => readStructOffsets({ info: info.buffer(), abbrev: dup.buffer() }, ['pkg.T.a']), '.debug_abbrev', /duplicate abbreviation code 1/);
});

test('malformed DIE trees: absurd nesting, backward sibling, overlong LEB128, missing string section', () => {
  const abbrev = abbrevTable([
    [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1]]],
    [2, DW.TAG_subprogram, true, []],
    [3, DW.TAG_structure_type, true, [[DW.AT_sibling, DW.FORM_ref4], [DW.AT_name, DW.FORM_string]]],
    [4, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_strp]]],
  ]);
  const deep = unit({ version: 4 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).bytes(new Array(1000).fill(2)));
  assertDwarfError(() => readStructOffsets({ info: deep.buffer(), abbrev: abbrev.buffer() }, ['pkg.T.a']), '.debug_info', /nesting deeper than/);

  const back = unit({ version: 4 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).uleb(3).u32(1).str('x.Y').u8(0).u8(0));
  assertDwarfError(() => readStructOffsets({ info: back.buffer(), abbrev: abbrev.buffer() }, ['pkg.T.a']), '.debug_info', /DW_AT_sibling .* backwards/);

  const leb = unit({ version: 4 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).bytes(new Array(12).fill(0x80)).u8(1));
  assertDwarfError(() => readStructOffsets({ info: leb.buffer(), abbrev: abbrev.buffer() }, ['pkg.T.a']), '.debug_info', /ULEB128 value too large/);

  const strp = unit({ version: 4 }, () => new Bytes().uleb(1).u8(DW.LANG_Go).uleb(4).u32(0).u8(0).u8(0));
  assertDwarfError(() => readStructOffsets({ info: strp.buffer(), abbrev: abbrev.buffer() }, ['pkg.T.a']), '.debug_info', /\.debug_str, which is missing/);
});

test('an unsupported location expression fails only when that member is wanted', () => {
  const abbrev = abbrevTable([
    [1, DW.TAG_compile_unit, true, [[DW.AT_language, DW.FORM_data1]]],
    [2, DW.TAG_structure_type, true, [[DW.AT_name, DW.FORM_string]]],
    [3, DW.TAG_member, false, [[DW.AT_name, DW.FORM_string], [DW.AT_data_member_location, DW.FORM_exprloc]]],
  ]);
  const constu = [0x10, 0x08]; // DW_OP_constu 8: valid DWARF, not an offset form we accept
  const info = unit({ version: 4 }, () => {
    const b = new Bytes().uleb(1).u8(DW.LANG_Go).uleb(2).str('pkg.T');
    b.uleb(3).str('odd').uleb(constu.length).bytes(constu);
    const ok = plusUconst(16);
    b.uleb(3).str('fine').uleb(ok.length).bytes(ok);
    return b.u8(0).u8(0);
  });
  const s = { info: info.buffer(), abbrev: abbrev.buffer() };
  assert.deepEqual(Object.fromEntries(readStructOffsets(s, ['pkg.T.fine'])), { 'pkg.T.fine': 16 });
  assertDwarfError(() => readStructOffsets(s, ['pkg.T.odd']), '.debug_info', /unsupported member location expression/);
});
