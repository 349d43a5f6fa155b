/**
 * Header injection with `bpf_probe_write_user`: where the kernel allows the
 * helper (not in lockdown), a `traceparent` line is appended to the header
 * block of outgoing net/http requests in the program's own buffer (see
 * probes/write-user/write_user.bpf.c for exactly when). Its programs are an
 * object of their own, loaded after the probes' object and sharing its maps,
 * so that a kernel that refuses the helper refuses this object and nothing
 * else. Whether it runs is decided at start-up, by loading it — never
 * assumed — and reported in `/status` (`propagation`), by
 * `gotrail_propagation_method_state` and by `gotrail inspect`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BpfObject, isNativeError, type KernelFeatures } from '../native/index.ts';
import { WriteUserFlags, WriteUserResult, encodeWriteUserConfig, type BpfMapName, type BpfProgramName } from '../generated/layouts.ts';
import { DEFAULT_BPF_OBJECT, type BpfRuntime } from './bpf-runtime.ts';
import { TCP_FIELDS, TCP_FIELDS_READ, tcpOffsets } from '../probes/go/net/http/tcp-fields.ts';
import { fieldGroup, type ProbeDescriptor } from '../probes/types.ts';
import type { Logger } from '../util/log.ts';

export const WRITE_USER_METHOD = 'bpf_probe_write_user';
export const WRITE_USER_OBJECT = join(DEFAULT_BPF_OBJECT, '..', 'gotrail-write-user.bpf.o');
/** The same programs without the helper call (nothing written; what would be is counted). */
export const WRITE_USER_DRY_RUN_OBJECT = join(DEFAULT_BPF_OBJECT, '..', 'gotrail-write-user-dry-run.bpf.o');

/** The object's programs (its other sections are the net/http client probe's, included for its maps). */
export const WRITE_USER_PROGRAMS = ['gt_wu_conn', 'gt_wu_request_write', 'gt_wu_fields_written'] as const;
const P = Object.fromEntries(WRITE_USER_PROGRAMS.map((p) => [p, p as BpfProgramName])) as Record<(typeof WRITE_USER_PROGRAMS)[number], BpfProgramName>;

/**
 * - `active`: loaded and attached with the net/http client probe;
 * - `dry-run`: the build without the helper call is attached instead (tests):
 *   every check runs, nothing is written;
 * - `refused`: the kernel refused the object (`reason`: e.g. `lockdown=integrity`);
 * - `off`: turned off, or the object is not built.
 */
export type WriteUserState = 'active' | 'dry-run' | 'refused' | 'off';
export const WRITE_USER_STATES: readonly WriteUserState[] = ['active', 'dry-run', 'refused', 'off'];

export interface WriteUserStatus {
  method: typeof WRITE_USER_METHOD;
  state: WriteUserState;
  /** One line for people: why it is in that state. */
  reason: string;
  /** The kernel's answer when refused: the load error and the verifier's last line. */
  error?: string;
  /** Refused only for the helper: the same programs without its call load on this kernel. */
  verifiedWithoutHelper?: boolean;
}

export interface WriteUserOptions {
  /** Default true: used wherever the kernel allows it (the agent turns it off with `--no-inject-traceparent`). The destination rules are the socket-level injection's (`--inject-allow`, `--inject-deny`). */
  enabled?: boolean;
  /** The object to load; default the build's gotrail-write-user.bpf.o. A dry-run build makes state `dry-run`. */
  objectPath?: string;
}

/** The verdict for a kernel, in the words `inspect`, `/status` and the log use. */
export function writeUserVerdict(f: Pick<KernelFeatures, 'lockdown' | 'probeWriteUser'>): { allowed: boolean; reason: string } {
  if (f.probeWriteUser) return { allowed: true, reason: 'the kernel allows bpf_probe_write_user' };
  if (f.lockdown === 'integrity' || f.lockdown === 'confidentiality') return { allowed: false, reason: `lockdown=${f.lockdown}` };
  return { allowed: false, reason: 'the kernel refuses bpf_probe_write_user' };
}

const F = {
  treqRequest: 'net/http.transportRequest.Request',
  reqMethod: 'net/http.Request.Method',
  reqUrl: 'net/http.Request.URL',
  urlHost: 'net/url.URL.Host',
  pconn: 'net/http.persistConn.conn',
  pconnTls: 'net/http.persistConn.tlsState',
  tlsConn: 'crypto/tls.Conn.conn',
  bufioBuf: 'bufio.Writer.buf',
  bufioN: 'bufio.Writer.n',
} as const;

/** The injection as a probe: planned and attached per binary with the net/http client probe. */
export const writeUserProbe: ProbeDescriptor = {
  id: 'net/http/client/inject-write-user',
  module: 'std',
  goPackage: 'net/http',
  description: 'traceparent into outgoing net/http requests with bpf_probe_write_user (kernels not in lockdown)',
  onlyWith: ['net/http/client'],
  functions: [
    // the site the client probe uses too: one trap for both
    { symbol: 'net/http.(*persistConn).roundTrip', entryProgram: P.gt_wu_conn },
    // the request's fields are written by its call of Header.writeSubset:
    // right after it, not at writeSubset's own RETs, which every server
    // response would hit too
    { symbol: 'net/http.(*Request).write', entryProgram: P.gt_wu_request_write, afterCall: { callee: 'net/http.Header.writeSubset', program: P.gt_wu_fields_written } },
  ],
  fields: {
    [F.treqRequest]: { reads: 'the request a connection is given' },
    [F.reqMethod]: { reads: 'the request line\'s start (to tell the buffer was not flushed)' },
    [F.reqUrl]: { reads: 'the request URL (its host, for the destination rules)' },
    [F.urlHost]: { reads: 'the destination host (for the destination rules)' },
    [F.pconn]: { reads: 'the destination address (for the destination rules)' },
    [F.pconnTls]: { reads: 'whether the connection is a TLS one' },
    [F.tlsConn]: { reads: 'the TCP connection under a TLS one' },
    [F.bufioBuf]: { reads: 'the buffer the header block is written to' },
    [F.bufioN]: { reads: 'how much of the buffer is written' },
    ...fieldGroup(TCP_FIELDS, { reads: TCP_FIELDS_READ }),
  },
  configMap: 'gt_wu_config' as BpfMapName,
  stateMaps: [],
  encodeConfig(o) {
    return encodeWriteUserConfig({
      flags: WriteUserFlags.GT_WU_ENABLED,
      treq_request: o[F.treqRequest] ?? 0,
      req_method: o[F.reqMethod] ?? 0,
      req_url: o[F.reqUrl] ?? 0,
      url_host: o[F.urlHost] ?? 0,
      pconn_conn: o[F.pconn] ?? 0,
      pconn_tls: o[F.pconnTls] ?? 0,
      tls_conn_conn: o[F.tlsConn] ?? 0,
      bufio_buf: o[F.bufioBuf] ?? 0,
      bufio_n: o[F.bufioN] ?? 0,
      tcp: tcpOffsets(o),
    });
  },
};

/** Result counters' names (GT_WU_NO_ROOM → no_room). */
export const WRITE_USER_RESULTS: ReadonlyArray<[string, number]> = Object.entries(WriteUserResult)
  .filter(([k]) => k !== 'GT_WU_RESULT_MAX')
  .map(([k, v]) => [k.replace('GT_WU_', '').toLowerCase(), v]);

export class WriteUserInjection {
  readonly status: WriteUserStatus;
  /** The descriptor to attach with the probes, when loaded. */
  readonly probe: ProbeDescriptor | undefined;
  private obj: BpfObject | undefined;

  /**
   * Loads the injection's object next to `rt`'s, or says why not; never
   * throws (a refusal leaves every probe as it was). Logs the outcome once.
   */
  constructor(rt: BpfRuntime, log: Logger, opts: WriteUserOptions = {}) {
    const path = opts.objectPath ?? WRITE_USER_OBJECT;
    const dryRun = path.endsWith('dry-run.bpf.o');
    const base = { method: WRITE_USER_METHOD } as const;
    if (opts.enabled === false) {
      this.status = { ...base, state: 'off', reason: 'turned off' };
    } else if (!existsSync(path)) {
      this.status = { ...base, state: 'off', reason: `${path} not built: run bash deploy/setup.sh` };
    } else {
      const loaded = this.tryLoad(rt, path);
      if (loaded.ok) {
        this.obj = loaded.obj;
        rt.addObject(loaded.obj);
        this.probe = writeUserProbe;
        this.status = { ...base, state: dryRun ? 'dry-run' : 'active', reason: dryRun ? 'the build without the helper call (nothing is written)' : writeUserVerdict({ lockdown: rt.features.lockdown, probeWriteUser: true }).reason };
      } else {
        const { reason } = writeUserVerdict(rt.features.probeWriteUser ? { lockdown: 'unknown', probeWriteUser: false } : rt.features);
        const helper = /cannot use helper bpf_probe_write_user/.test(loaded.error);
        const dry = helper && existsSync(WRITE_USER_DRY_RUN_OBJECT) ? this.tryLoad(rt, WRITE_USER_DRY_RUN_OBJECT) : undefined;
        if (dry?.ok) dry.obj.close();
        this.status = {
          ...base, state: 'refused', reason: helper ? reason : 'the kernel refused its programs', error: loaded.error,
          ...(dry ? { verifiedWithoutHelper: dry.ok } : {}),
        };
      }
    }
    const s = this.status;
    const fields = { method: s.method, state: s.state, reason: s.reason, ...(s.error ? { error: s.error } : {}) };
    if (s.state === 'refused') log.info('header injection with bpf_probe_write_user refused; every other probe runs', fields);
    else log.info(`header injection with bpf_probe_write_user ${s.state}`, fields);
  }

  private tryLoad(rt: BpfRuntime, path: string): { ok: true; obj: BpfObject } | { ok: false; error: string } {
    let obj: BpfObject | undefined;
    try {
      obj = new BpfObject(path, { shareMapsFrom: rt.obj, autoload: [...WRITE_USER_PROGRAMS], uprobeMulti: rt.obj.uprobeMulti });
      obj.load();
      return { ok: true, obj };
    } catch (e) {
      obj?.close();
      const log = isNativeError(e) ? e.log ?? '' : '';
      // the verifier's verdict: the last line before its statistics
      const verdict = log.split('\n').map((l) => l.trim()).filter((l) => l && !/^(\d+:|;|processed \d+ insns|libbpf:|-- )/.test(l)).pop();
      const errno = isNativeError(e) ? `${e.code} (errno ${e.errno})` : (e as Error).message;
      return { ok: false, error: verdict ? `${errno}: ${verdict}` : errno };
    }
  }

  /** Requests by outcome since start (all zero unless loaded). */
  results(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, idx] of WRITE_USER_RESULTS) {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(idx);
      const v = this.obj?.mapLookup('gt_wu_results', k);
      let sum = 0n;
      if (v) for (let off = 0; off + 8 <= v.length; off += 8) sum += v.readBigUInt64LE(off);
      out[name] = Number(sum);
    }
    return out;
  }

  /** The dry run's last line for process `tgid` (without its CRLF), if any. */
  lastDryRunLine(tgid: number): string | undefined {
    if (this.status.state !== 'dry-run') return undefined;
    const k = Buffer.alloc(4);
    k.writeUInt32LE(tgid);
    const v = this.obj?.mapLookup('gt_wu_last_line', k);
    return v ? v.toString('latin1').replace(/\r\n$/, '') : undefined;
  }

  close(): void {
    this.obj?.close();
    this.obj = undefined;
  }
}
