/**
 * Analysis of Go executables for uprobe attachment: toolchain and module
 * versions, function addresses (from the symbol table, or the pclntab of
 * stripped binaries), and the instruction sites to probe.
 *
 * Files are read with positioned reads of only the tables needed, and every
 * failure is a {@link GoBinaryError} naming the file and the problem.
 *
 * @module
 */
import { BinaryFile } from './binary-file.ts';
import { parseModInfo, readBuildInfoStrings } from './buildinfo.ts';
import type { GoModule } from './buildinfo.ts';
import { EM_X86_64, ET_DYN, ET_EXEC, ElfFile } from './elf.ts';
import { GoBinaryError, hex } from './errors.ts';
import { FunctionIndex } from './functions.ts';
import type { FunctionSource, GoFunction } from './functions.ts';
import { addressAfterStackCheck, callAddresses, callReturnAddresses, errCheckAfterCall, kernelEmulates, stackCheckBranch, retAddresses, trapKind, type TrapKind } from './instructions.ts';
import { readGoTypes } from './go-types.ts';
import type { GoTypes } from './go-types.ts';
import { findPclntab } from './pclntab.ts';
import type { Pclntab } from './pclntab.ts';
import { dwarfSectionsOf, type DwarfSections } from '../offsets/dwarf.ts';

export { GoBinaryError } from './errors.ts';
export type { GoBinaryErrorCode } from './errors.ts';
export type { GoModule } from './buildinfo.ts';
export type { GoFunction, FunctionSource } from './functions.ts';
export type { TrapKind } from './instructions.ts';
export { GoTypesError } from './go-types.ts';
export type { GoTypes, GoStructType, GoStructField, GoTypesErrorCode } from './go-types.ts';

/** Longest function body {@link GoBinary.retSites} will decode; Go's largest functions are a few hundred KiB. */
const MAX_FUNCTION_SIZE = 64 << 20;
/** The longest x86-64 instruction. */
const MAX_INSTRUCTION_BYTES = 15;
/** Enough bytes to cover the longest stack-check prologue. */
const PROLOGUE_BYTES = 64;
/** Message prefix of errors that are really analysis bugs (tests look for it). */
export const INTERNAL_ERROR = 'unexpected analysis failure';
/** The linker's symbol-table suffix for an ABI0 function that also has an ABIInternal symbol. */
const ABI0_SUFFIX = '.abi0';
/** Note types in `.note.go.buildid` and `.note.gnu.build-id`. */
const NT_GO_BUILD_ID = 4;
const NT_GNU_BUILD_ID = 3;

/** An analysed Go executable. Holds a file descriptor until {@link GoBinary.close}. */
export interface GoBinary {
  /** Path the binary was opened with. */
  readonly path: string;
  /** Toolchain version from the build info, e.g. `go1.26.8`. */
  readonly goVersion: string;
  readonly arch: 'amd64';
  /** Import path of the main package, e.g. `example.com/cmd/server` (`command-line-arguments` for `go build x.go`). */
  readonly mainPackage?: string;
  /** The main module; absent when built outside a module. */
  readonly mainModule?: GoModule;
  /** Dependency modules, as `go version -m` lists them. */
  readonly modules: readonly GoModule[];
  /** Build settings (`-buildmode`, `-ldflags`, `GOARCH`, `CGO_ENABLED`, `vcs.revision`, …). */
  readonly settings: Readonly<Record<string, string>>;
  /** Position-independent (ELF type DYN): addresses are link-time addresses, relocated at load. */
  readonly pie: boolean;
  /** No `.symtab`: functions come from the pclntab and there is usually no DWARF either. */
  readonly stripped: boolean;
  /** Has DWARF (`.debug_info`, compressed or not). */
  readonly hasDwarf: boolean;
  /** The Go build ID (`go tool buildid`), else the GNU build ID in hex. */
  readonly buildId?: string;
  /**
   * Which table function lookups use: the symbol table when it has at least
   * as many functions as the pclntab (it lacks many once local symbols are
   * stripped), else the pclntab.
   */
  readonly functionSource: FunctionSource;
  /** Where the pclntab was found (section, symbol or scan), for diagnostics. */
  readonly pclntabLocation: string;

  /**
   * The function with this fully qualified name
   * (`net/http.serverHandler.ServeHTTP`), if linked in. The symbol table
   * names an assembly (ABI0) function `pkg.F.abi0` when an ABIInternal
   * `pkg.F` also exists, the pclntab names both `pkg.F`; either spelling is
   * accepted, and where the pclntab has two functions of one name the one
   * at the lower address is returned. Ordinary Go functions — everything a
   * probe targets — have exactly one name in both tables.
   */
  findFunction(name: string): GoFunction | undefined;
  /** File offset of a virtual address; throws `CORRUPT` if no PT_LOAD maps it from the file. */
  fileOffset(vaddr: number): number;
  /** File offsets (what uprobes take) of every RET instruction in the function. */
  retSites(fn: GoFunction): number[];
  /** File offsets of the instructions right after each direct call from `fn` to `callee` (where it returns into `fn`). */
  callReturnSites(fn: GoFunction, callee: GoFunction): number[];
  /**
   * File offsets of each direct CALL from `fn` to `callee` (the CALL
   * instruction itself, which the kernel emulates: one trap per hit; the
   * callee's arguments are in their ABI registers there).
   */
  callSites(fn: GoFunction, callee: GoFunction): number[];
  /**
   * The conditional branch on the error result of `fn`'s one direct call of
   * `callee` (`if err == nil` right after it), and the RETs only its nil-error
   * edge reaches, as file offsets; or why there is no such branch (see
   * `errCheckAfterCall`).
   */
  errCheckSite(fn: GoFunction, callee: GoFunction): { branch: number; successRets: number[] } | { reason: string };
  /**
   * File offset of the first instruction after the stack-growth check, so
   * that a probe there fires once per call; the entry itself for functions
   * without the check.
   */
  entrySite(fn: GoFunction): number;
  /**
   * File offset of the stack-growth check's conditional branch (cheaper to
   * probe, but hit again when the stack grows; see `stackCheckBranch`), or
   * of {@link entrySite} for a function without the check.
   */
  stackCheckSite(fn: GoFunction): number;
  /**
   * The cheapest site for an entry probe that skips a hit whose stack check
   * is about to grow the stack (see `gt_probe_enter`): the stack check's
   * branch (`atStackCheck`) where the instruction after the check is
   * single-stepped by the kernel (Go before 1.21: `SUB RSP, N`, a second
   * trap per hit), else {@link entrySite}.
   */
  cheapEntrySite(fn: GoFunction): { offset: number; atStackCheck: boolean };
  /**
   * Whether the kernel emulates or single-steps the instruction at each of
   * these file offsets (instruction starts, e.g. the sites above) under a
   * uprobe, which sets what a hit there costs (see `kernelEmulates`).
   */
  trapKinds(offsets: readonly number[]): TrapKind[];
  /**
   * Version of a module as built into the binary: `std` gives the Go
   * version without `go` (`1.26.8`); a module replaced by another module
   * version gives the replacement's version; one replaced by a local
   * directory gives the version it was required at.
   */
  moduleVersion(modulePath: string): string | undefined;
  /**
   * The named struct types of the binary's Go type metadata (read on the
   * first call, then cached; see go-types.ts). Throws {@link GoTypesError}
   * when the metadata cannot be read or does not fit the Go version's layout.
   */
  goTypes(): GoTypes;

  /**
   * The DWARF sections struct offsets are read from, decompressed, taken from
   * this already-open file; null without DWARF. Throws `DwarfError` (from
   * the offsets reader) naming the section when one is malformed.
   */
  dwarfSections(): DwarfSections | null;
  /** Every function of the lookup table, in table order (for tooling; reads names from the file). */
  functions(): IterableIterator<GoFunction>;
  /** Closes the file. Further calls throw `IO`. Idempotent. */
  close(): void;
}

/**
 * Opens and analyses a Go executable: ELF tables, build info, and the
 * function table. Throws {@link GoBinaryError}: `IO`, `NOT_ELF`, `NOT_GO`
 * (no Go build info), `UNSUPPORTED_ARCH` (not x86-64), `TRUNCATED`, `CORRUPT`.
 */
export function openGoBinary(path: string): GoBinary {
  return guard(path, () => {
    const elf = ElfFile.parse(BinaryFile.open(path));
    try {
      return analyse(elf);
    } catch (err) {
      elf.close();
      throw err;
    }
  });
}

/**
 * Cheap check for process discovery: the Go version recorded in an ELF
 * executable (any machine), or null for an ELF file not built by Go.
 * Reads only the ELF header tables and the build info. Throws
 * {@link GoBinaryError} for non-ELF (`NOT_ELF`), 32-bit or big-endian
 * (`UNSUPPORTED_ARCH`), truncated or corrupt files.
 */
export function readGoVersion(path: string): { goVersion: string } | null {
  return guard(path, () => {
    const elf = ElfFile.parse(BinaryFile.open(path));
    try {
      if (elf.type !== ET_EXEC && elf.type !== ET_DYN) return null;
      const strings = readBuildInfoStrings(elf);
      return strings ? { goVersion: strings.goVersion } : null;
    } finally {
      elf.close();
    }
  });
}

/**
 * Runs `fn`, turning any exception other than a GoBinaryError into one:
 * a parser bug on some odd binary must neither take the agent down nor
 * hide which file caused it.
 */
function guard<T>(path: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof GoBinaryError) throw err;
    throw new GoBinaryError('CORRUPT', path, `${INTERNAL_ERROR}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

function analyse(elf: ElfFile): GoBinary {
  const file: BinaryFile = elf.file;
  if (elf.machine !== EM_X86_64) file.fail('UNSUPPORTED_ARCH', `ELF machine ${elf.machine} is not x86-64 (amd64 only)`);
  if (elf.type !== ET_EXEC && elf.type !== ET_DYN) file.fail('NOT_GO', `ELF type ${elf.type} is not an executable`);
  const strings = readBuildInfoStrings(elf);
  if (!strings) file.fail('NOT_GO', 'no Go build info (.go.buildinfo): not built by the Go toolchain');
  const info = parseModInfo(strings.goVersion, strings.modinfo);

  const symbols = elf.symbolValues(['runtime.text', 'runtime.pclntab', 'runtime.epclntab', 'runtime.firstmoduledata']);
  const pclntab = findPclntab(elf, (name) => symbols.get(name));
  const symtab = FunctionIndex.fromSymtab(elf);
  // A symbol table with local symbols stripped (strip --strip-unneeded)
  // lacks many Go functions; the pclntab never does.
  const index = symtab && symtab.count >= pclntab.nfunc ? symtab : FunctionIndex.fromPclntab(elf, pclntab);
  return new AnalysedBinary(elf, info, pclntab, index, symtab !== undefined, (name) => symbols.get(name));
}

class AnalysedBinary implements GoBinary {
  readonly path: string;
  readonly goVersion: string;
  readonly arch = 'amd64' as const;
  readonly mainPackage?: string;
  readonly mainModule?: GoModule;
  readonly modules: readonly GoModule[];
  readonly settings: Readonly<Record<string, string>>;
  readonly pie: boolean;
  readonly stripped: boolean;
  readonly hasDwarf: boolean;
  readonly buildId?: string;
  readonly functionSource: FunctionSource;
  readonly pclntabLocation: string;
  readonly #elf: ElfFile;
  readonly #index: FunctionIndex;
  readonly #pclntab: Pclntab;
  readonly #symbol: (name: string) => number | undefined;
  #types: GoTypes | Error | undefined;
  #closed = false;

  constructor(
    elf: ElfFile,
    info: ReturnType<typeof parseModInfo>,
    pclntab: Pclntab,
    index: FunctionIndex,
    hasSymtab: boolean,
    symbol: (name: string) => number | undefined,
  ) {
    this.#elf = elf;
    this.#index = index;
    this.#pclntab = pclntab;
    this.#symbol = symbol;
    this.path = elf.path;
    this.goVersion = info.goVersion;
    if (info.mainPackage !== undefined) this.mainPackage = info.mainPackage;
    if (info.mainModule) this.mainModule = info.mainModule;
    this.modules = info.modules;
    this.settings = info.settings;
    this.pie = elf.type === ET_DYN;
    this.stripped = !hasSymtab;
    this.hasDwarf = elf.sections.some((s) => s.name === '.debug_info' || s.name === '.zdebug_info');
    const buildId = readBuildId(elf);
    if (buildId !== undefined) this.buildId = buildId;
    this.functionSource = index.source;
    this.pclntabLocation = pclntab.foundIn;
  }

  findFunction(name: string): GoFunction | undefined {
    return guard(this.path, () => this.#findFunction(name));
  }

  #findFunction(name: string): GoFunction | undefined {
    this.#checkOpen();
    const exact = this.#index.find(name);
    if (exact) return exact;
    // The two tables spell ABI0 functions differently; accept either spelling.
    if (this.#index.source === 'symtab') return this.#index.find(`${name}${ABI0_SUFFIX}`);
    if (name.endsWith(ABI0_SUFFIX)) {
      const fn = this.#index.find(name.slice(0, -ABI0_SUFFIX.length));
      return fn && { ...fn, name };
    }
    return undefined;
  }

  fileOffset(vaddr: number): number {
    this.#checkOpen();
    return this.#elf.fileOffset(vaddr, 1, 'address');
  }

  retSites(fn: GoFunction): number[] {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, Number.MAX_SAFE_INTEGER);
      return retAddresses(code, fn.entry).map((a) => offset + (a - fn.entry));
    });
  }

  callSites(fn: GoFunction, callee: GoFunction): number[] {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, Number.MAX_SAFE_INTEGER);
      return callAddresses(code, fn.entry, callee.entry).map((a) => offset + (a - fn.entry));
    });
  }

  errCheckSite(fn: GoFunction, callee: GoFunction): { branch: number; successRets: number[] } | { reason: string } {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, Number.MAX_SAFE_INTEGER);
      const r = errCheckAfterCall(code, fn.entry, callee.entry);
      if ('reason' in r) return r;
      return { branch: offset + (r.branch - fn.entry), successRets: r.successRets.map((a) => offset + (a - fn.entry)) };
    });
  }

  callReturnSites(fn: GoFunction, callee: GoFunction): number[] {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, Number.MAX_SAFE_INTEGER);
      return callReturnAddresses(code, fn.entry, callee.entry).map((a) => offset + (a - fn.entry));
    });
  }

  entrySite(fn: GoFunction): number {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, PROLOGUE_BYTES);
      return offset + (addressAfterStackCheck(code, fn.entry) - fn.entry);
    });
  }

  stackCheckSite(fn: GoFunction): number {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, PROLOGUE_BYTES);
      const branch = stackCheckBranch(code, fn.entry);
      return branch === undefined ? this.entrySite(fn) : offset + (branch - fn.entry);
    });
  }

  cheapEntrySite(fn: GoFunction): { offset: number; atStackCheck: boolean } {
    return guard(this.path, () => {
      const { code, offset } = this.#code(fn, PROLOGUE_BYTES);
      const after = addressAfterStackCheck(code, fn.entry);
      const branch = stackCheckBranch(code, fn.entry);
      if (branch !== undefined && !kernelEmulates(code.subarray(after - fn.entry), after)) return { offset: offset + (branch - fn.entry), atStackCheck: true };
      return { offset: offset + (after - fn.entry), atStackCheck: false };
    });
  }

  trapKinds(offsets: readonly number[]): TrapKind[] {
    this.#checkOpen();
    return guard(this.path, () => offsets.map((o) => trapKind(this.#elf.file.readUpTo(o, MAX_INSTRUCTION_BYTES, `instruction at ${hex(o)}`), o)));
  }

  moduleVersion(modulePath: string): string | undefined {
    if (modulePath === 'std') {
      const m = /go(\d+(?:\.\d+)*(?:(?:rc|beta)\d+)?)/.exec(this.goVersion);
      return m ? m[1] : this.goVersion;
    }
    const mod = this.mainModule?.path === modulePath ? this.mainModule : this.modules.find((m) => m.path === modulePath);
    if (!mod) return undefined;
    // A directory replacement records "(devel)" or nothing: the required
    // version is the best description of that code there is.
    const r = mod.replace;
    return r && r.version !== '' && !isLocalPath(r.path) ? r.version : mod.version;
  }

  goTypes(): GoTypes {
    this.#checkOpen();
    this.#types ??= ((): GoTypes | Error => {
      try {
        return readGoTypes(this.#elf, this.#pclntab, this.goVersion, this.#symbol);
      } catch (err) {
        return err as Error;
      }
    })();
    if (this.#types instanceof Error) throw this.#types;
    return this.#types;
  }

  *functions(): IterableIterator<GoFunction> {
    this.#checkOpen();
    const it = this.#index.all();
    for (;;) {
      const next = guard(this.path, () => it.next());
      if (next.done) return;
      yield next.value;
    }
  }

  dwarfSections(): DwarfSections | null {
    this.#checkOpen();
    return this.hasDwarf ? dwarfSectionsOf(this.#elf) : null;
  }

  close(): void {
    this.#closed = true;
    this.#elf.close();
  }

  #code(fn: GoFunction, max: number): { code: Buffer; offset: number } {
    this.#checkOpen();
    const size = fn.end - fn.entry;
    if (!Number.isSafeInteger(fn.entry) || !Number.isSafeInteger(size) || size < 0 || size > MAX_FUNCTION_SIZE) {
      this.#elf.file.fail('CORRUPT', `function ${fn.name}: bad range ${hex(fn.entry)}–${hex(fn.end)}`);
    }
    const length = Math.min(size, max);
    const offset = this.#elf.fileOffset(fn.entry, length, `function ${fn.name}`);
    return { code: this.#elf.file.read(offset, length, `code of ${fn.name}`), offset };
  }

  #checkOpen(): void {
    if (this.#closed) this.#elf.file.fail('IO', 'binary used after close()');
  }
}

/** A replacement that is a directory rather than a module (as in cmd/go's modfile.IsDirectoryPath). */
function isLocalPath(p: string): boolean {
  return p.startsWith('./') || p.startsWith('../') || p.startsWith('/') || p === '.' || p === '..' || /^[A-Za-z]:[\\/]/.test(p);
}

function readBuildId(elf: ElfFile): string | undefined {
  const notes = elf.notes();
  const go = notes.find((n) => n.name === 'Go' && n.type === NT_GO_BUILD_ID);
  if (go) return go.desc.toString('utf8');
  const gnu = notes.find((n) => n.name === 'GNU' && n.type === NT_GNU_BUILD_ID);
  return gnu ? gnu.desc.toString('hex') : undefined;
}
