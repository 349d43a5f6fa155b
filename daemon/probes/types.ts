/**
 * What a probe declares to the agent. One instrumented Go package = one
 * descriptor (daemon/probes/go/<import path>/descriptor.ts) + one BPF source
 * (probes/go/<import path>/*.bpf.c) + one registry line.
 */
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { Attributes, SpanKind, SpanStatus, TraceState } from '@opentelemetry/api';
import { nanosToHrTime, type MonotonicClock } from '../spans/clock.ts';
import { eventSpanRecord, instrumentationScope, spanRecord, STATUS_ERROR, STATUS_UNSET } from '../spans/span-record.ts';
import { rawSpanContext, rawSpanContextAt, type RawSpanContext } from '../spans/span-context.ts';
import { SpanFlags } from '../generated/layouts.ts';
import type { HttpRouteBound } from '../spans/http-route.ts';
import type { BpfMapName, BpfProgramName, SpanContext as SpanContextLayout } from '../generated/layouts.ts';

export interface ProbedFunction {
  /** Fully qualified Go symbol, e.g. `net/http.serverHandler.ServeHTTP`. */
  symbol: string;
  /**
   * The same function under the names other Go versions give it (HTTP/2 moved
   * from net/http's bundled `http2*` names to `net/http/internal/http2` in Go
   * 1.27): the first name found in the binary is probed. With `atCalls`, the
   * names may be different functions of one binary (the closures of one
   * function, numbered by the compiler): the first found that makes exactly
   * one of each of the calls is probed.
   */
  alternativeSymbols?: string[];
  /** Program attached past the stack-growth prologue (a `BpfPrograms` constant). */
  entryProgram?: BpfProgramName;
  /**
   * Attach `entryProgram` on the stack-growth check's branch instead: the
   * kernel emulates a probed branch, where the instruction after the check
   * is single-stepped in Go before 1.21 (a second trap per hit). For
   * programs that a second hit, when the stack grows, does not harm.
   * Without it, entry programs go on the branch only where the instruction
   * after the check is single-stepped, and `gt_probe_enter` skips the hit
   * that grows the stack (`BinaryPlan` site `atStackCheck`).
   */
  entryAtStackCheck?: boolean;
  /** Program attached at every RET instruction (a `BpfPrograms` constant). */
  returnProgram?: BpfProgramName;
  /**
   * Program attached right after each direct call from this function to
   * `callee` (where the callee has returned into it): one site instead of
   * the callee's entry and RETs, which every other caller would hit too.
   */
  afterCall?: { callee: string; program: BpfProgramName };
  /**
   * Programs attached at each direct CALL from this function to `callee`
   * (the CALL instruction itself; the first of `callee`, `alternativeCallees`
   * found in the binary). The kernel emulates a probed CALL rel32, one trap
   * per hit, where a probed RET is single-stepped out of line, a second trap
   * (16 µs against 0.5 µs per hit on a Firecracker VM): a call the function
   * makes once its work is done ends a span more cheaply than its RETs. Go's
   * register ABI has put the callee's arguments in RAX, RBX, RCX, ... there.
   */
  atCalls?: { callee: string; alternativeCallees?: string[]; program: BpfProgramName }[];
  /**
   * With `returnProgram`: `program` attached at the conditional branch that
   * tests the error result of this function's one direct call of `callee`
   * (`CALL callee; TEST RBX, RBX; JE/JNE`), which the kernel emulates, RAX
   * and RBX still holding the callee's results there (a pointer and the
   * error's itab, 0 for nil); and `returnProgram` at every RET but those
   * reached only through the branch's nil-error edge, which end no call the
   * branch did not end already. A call that succeeds then costs one emulated
   * hit instead of a single-stepped RET (0.5 against 16 µs on a Firecracker
   * VM); one that fails still ends at a RET. Where the code is not exactly
   * that shape (see `errCheckAfterCall`), the function cannot be planned so:
   * for {@link PreferredSites}, whose `otherwise` is then probed.
   */
  atErrCheck?: { callee: string; program: BpfProgramName };
  /**
   * Set when the probe works without this function: what is lost if it is
   * missing, or if its code does not decode or lacks one of `atCalls` (then
   * none of its sites is probed). Ignored in `PreferredSites.functions`,
   * which are all required.
   */
  optional?: string;
  /**
   * Probed where the binary has it; its absence loses nothing and is not
   * reported (code that only some programs link, e.g. coroutines).
   */
  whenLinked?: boolean;
  /**
   * What it means when the package is linked but this function is not (the
   * linker keeps only what the program can call), e.g. `this program never
   * sends client requests through http.Transport`.
   */
  absentMeans?: string;
}

/** One struct field a probe reads. */
export interface ProbeField {
  /** What the probe reads it for (the offsets database's coverage notes). */
  reads: string;
  /**
   * Set when the probe runs without the field: what is lost when its offset
   * is unknown (`gotrail inspect` and the agent's log say it). Without it the
   * field is required: an unknown offset disables the probe for that binary.
   */
  optional?: string;
  /**
   * The Go release that introduced the field (`1.23`), for an optional field
   * of a feature older Go versions lack: its absence from a binary of an
   * older Go loses nothing, so it is not reported as a degradation there.
   */
  goSince?: string;
  /**
   * The module of the field's struct when it is neither std nor the probe's
   * own module (`github.com/jackc/pgx/v5` for a database/sql probe reading a
   * driver's struct): its offset is taken at the binary's version of that
   * module, and a binary that does not link the module loses nothing by the
   * field's absence (not reported as a degradation). Only for an optional field.
   */
  module?: string;
}

/** The fields without which `probe` cannot run. */
export function requiredFields(probe: Pick<ProbeDescriptor, 'fields'>): string[] {
  return Object.entries(probe.fields).filter(([, f]) => f.optional === undefined).map(([name]) => name);
}

/** The fields that enable extra features of `probe`; missing ones degrade it. */
export function optionalFields(probe: Pick<ProbeDescriptor, 'fields'>): string[] {
  return Object.entries(probe.fields).filter(([, f]) => f.optional !== undefined).map(([name]) => name);
}

/**
 * The module whose versions select the offset of `field` (`pkg.Struct.field`)
 * read by `probe`: the field's own `module` when it names one, `std` for a
 * standard-library package (no dot in the first element of its import path:
 * `net.netFD.laddr`), else the probe's module. A gRPC probe reading
 * `net.conn.fd` reads it at the binary's Go version, not at its grpc version.
 */
export function fieldModule(probe: Pick<ProbeDescriptor, 'module'> & Partial<Pick<ProbeDescriptor, 'fields'>>, field: string): string {
  const own = probe.fields?.[field]?.module;
  if (own !== undefined) return own;
  const slash = field.indexOf('/');
  const first = slash >= 0 ? field.slice(0, slash) : field.slice(0, field.indexOf('.'));
  return first.includes('.') ? probe.module : 'std';
}

/**
 * Declares `names` as fields read for the same purpose: `fieldGroup(LINK,
 * { reads: 'the 4-tuple', optional: 'not linked' })` inside a descriptor's
 * `fields`.
 */
export function fieldGroup(names: readonly string[], field: ProbeField): Record<string, ProbeField> {
  return Object.fromEntries(names.map((n) => [n, field]));
}

export interface EventContext {
  clock: MonotonicClock;
  /** The resource of a traced process, undefined when it is unknown (exited). */
  resourceOf(tgid: number): Resource | undefined;
  emit(span: ReadableSpan): void;
  /** Counts a decoding problem once per reason (metrics + one log line). */
  problem(reason: string): void;
  /** The agent's bound on distinct `http.route` values per service. */
  routes: HttpRouteBound;
  /** Whether database spans carry db.query.text (always sanitised): `--db-query-text`. Default false; read per event (a reload changes it). */
  dbQueryText?: boolean;
  /** Whether Kafka spans carry messaging.kafka.message.key: `--kafka-message-key`. Default false; read per event. */
  kafkaMessageKey?: boolean;
}

/** An in-flight map of a probe (ProbeDescriptor.inflightMaps). */
export interface InflightMap {
  map: BpfMapName;
  /**
   * The paired functions (enum gt_paired_function) whose entries fill it: a
   * call swept from it marks its goroutine, so that its return, should it
   * come after all, is not counted as a second loss. Empty for state that
   * has no return of its own.
   */
  paired: readonly number[];
  /**
   * For a map whose records outlive their call (kept for the goroutine's next
   * one): whether the record `value` is idle, i.e. holds no call. An idle
   * record is no span: the sweep deletes it without counting a loss.
   */
  idle?: (value: Buffer) => boolean;
}

/**
 * Cheaper sites (`atCalls`, `atErrCheck`) that replace others when the
 * binary's code has them: when every function of `functions` is found (a
 * `whenLinked` one may be absent) with exactly one of each of its calls (and
 * its error check in the expected shape), and none of `unless` is linked,
 * they are probed; otherwise (another Go version's code, a call inlined
 * away) `otherwise` is, whole, so that the two sets never mix.
 */
export interface PreferredSites {
  functions: ProbedFunction[];
  otherwise: ProbedFunction[];
  /**
   * Functions whose presence means `functions` would miss calls that
   * `otherwise` catches (another library's HTTP/2 server calling the same
   * handler): `otherwise` is probed where one of them is linked.
   */
  unless?: string[];
}

/** Every BPF program `probe` may attach, whichever of its sites a binary gets. */
export function programsOfProbe(probe: Pick<ProbeDescriptor, 'functions' | 'preferredSites'>): BpfProgramName[] {
  const fns = [...probe.functions, ...(probe.preferredSites?.functions ?? []), ...(probe.preferredSites?.otherwise ?? [])];
  const progs = fns.flatMap((f) => [f.entryProgram, f.returnProgram, f.afterCall?.program, f.atErrCheck?.program, ...(f.atCalls ?? []).map((c) => c.program)]);
  return [...new Set(progs.filter((x): x is BpfProgramName => !!x))];
}

export interface ProbeDescriptor {
  /** Stable id, the Go import path plus role: `net/http/server`. */
  id: string;
  /** Module whose version selects offsets: `std` for the standard library. */
  module: string;
  /** Package whose presence in the binary makes the probe relevant. */
  goPackage: string;
  description: string;
  functions: ProbedFunction[];
  /** Sites probed in place of others where the binary has them (see {@link PreferredSites}). */
  preferredSites?: PreferredSites;
  /**
   * Every struct field whose offset the probe reads (`pkg.Struct.field`, of
   * `module`'s packages): the one declaration of them. The offsets database
   * (offsets-db/fields.ts, generate.ts and its coverage table), `gotrail
   * inspect` and the agent's per-binary plan all derive from it, and a test
   * fails when the database holds a field no probe declares or lacks one a
   * probe declares.
   */
  fields: Readonly<Record<string, ProbeField>>;
  /**
   * Probe ids of which at least one must attach to a binary for this probe
   * to attach too (a probe that serves others, such as goroutine ancestry,
   * costs the program without them); unset: no such condition.
   */
  onlyWith?: readonly string[];
  /** BPF maps keyed by gt_goroutine_key holding this probe's in-flight state: cleared for a process that exits. */
  stateMaps: BpfMapName[];
  /**
   * Those of `stateMaps` that hold a call's state from its entry to its
   * return (plain hash maps, which refuse a call when full): the agent sweeps
   * state whose return never came from them (see BpfRuntime.sweepInflight).
   * Unset: none.
   */
  inflightMaps?: readonly InflightMap[];
  /**
   * Optional fields left unread in a binary that links function `linked`
   * (pclntab name): they count as missing (`encodeConfig` sees them in
   * `missingOptional`) and `loses` is reported as the plan's degradation.
   * For code that hands the probed functions values of a look-alike type
   * the probe cannot tell from the one the fields belong to, where reading
   * them would put wrong values in spans.
   */
  unreadWhere?: { linked: string; fields: string[]; loses: string }[];
  /** BPF array map (indexed by binary id) receiving `encodeConfig`'s bytes. */
  configMap: BpfMapName;
  /**
   * The probe's config for one binary; `moduleVersion` is the binary's
   * version of `module` (as its build info says, e.g. `v1.64.1`), for a
   * probe whose functions' signatures changed between versions.
   */
  encodeConfig(offsets: Record<string, number>, missingOptional: string[], moduleVersion?: string): Buffer;
  /**
   * Pairs of optional fields that stand for each other (the same fact under a
   * name that changed between versions): one of a pair missing is no loss
   * while the other resolves.
   */
  alternativeFields?: Array<[string, string]>;
  /**
   * The probe's id in the event type family: `EventType.<its enum gt_event_type_<probe> value>`.
   * Absent, as are `eventSize` and `handleEvent`, for a probe that makes no
   * spans of its own: it adds to another probe's (a router's `http.route`,
   * carried on the net/http server's event) or keeps state for the others
   * (goroutine ancestry).
   */
  eventType?: number;
  eventSize?: number;
  handleEvent?(buf: Buffer, off: number, ctx: EventContext): void;
}

/** A probe that makes spans from events of its own. */
export type EventProbe = ProbeDescriptor & Required<Pick<ProbeDescriptor, 'eventType' | 'eventSize' | 'handleEvent'>>;

/**
 * The common start of every span-producing event: the process's resource and
 * the request method; undefined (and a counted problem) when either is
 * missing, so the event is skipped.
 */
export function eventBasics(ctx: EventContext, what: string, tgid: number, method: string): { resource: Resource } | undefined {
  const resource = eventResource(ctx, what, tgid, method);
  return resource === undefined ? undefined : { resource };
}

/** {@link eventBasics}, the resource alone (no object per event). */
export function eventResource(ctx: EventContext, what: string, tgid: number, method: string): Resource | undefined {
  const resource = ctx.resourceOf(tgid);
  if (!resource) {
    ctx.problem(`${what} event from an unknown process`);
    return undefined;
  }
  if (!method) {
    ctx.problem(`${what} event without a readable method`);
    return undefined;
  }
  return resource;
}

/** What a probe event carries about its span, in the layout every probe event shares. */
export interface ProbeSpanFields {
  name: string;
  kind: SpanKind;
  attributes: Attributes;
  error: boolean;
  resource: Resource;
  /** the instrumented Go package */
  scope: string;
  traceState?: TraceState;
  /** An explicit status (the program's own, through the OpenTelemetry API): wins over `error`. */
  status?: SpanStatus;
  /** Span events, at monotonic stamps; `droppedEvents` more were not kept. */
  events?: Array<{ name: string; time_ns: bigint }>;
  droppedEvents?: number;
  /** Attributes the probe could not keep. */
  droppedAttributes?: number;
}

/** The span context and stamps, decoded. */
export interface ProbeSpanDecoded {
  /** The event's span context: decoded, or read in place (`rawSpanContextAt`). */
  span: SpanContextLayout | RawSpanContext;
  start_ns: bigint;
  end_ns: bigint;
}

/**
 * The span context and stamps, read in place from the event (the cheap way:
 * no id strings, no BigInts): the struct gt_span_context at `spanAt` of
 * `event`, the CLOCK_MONOTONIC stamps (u64) at `startAt` and `endAt`.
 */
export interface ProbeSpanInPlace {
  event: Buffer;
  spanAt: number;
  startAt: number;
  endAt: number;
}

export type ProbeSpan = ProbeSpanFields & (ProbeSpanDecoded | ProbeSpanInPlace);

/**
 * {@link emitProbeSpan} of a span read in place ({@link ProbeSpanInPlace}) with
 * no span events, no explicit status and nothing dropped, its fields passed
 * one by one: for the busiest events, whose handler would otherwise make a
 * {@link ProbeSpan} object per event only to hand it over (~140 bytes of
 * garbage per span where V8 does not inline the call).
 */
export function emitEventSpan(
  ctx: EventContext, event: Buffer, spanAt: number, startAt: number, endAt: number,
  name: string, kind: SpanKind, traceState: TraceState | undefined, attributes: Attributes, error: boolean, resource: Resource, scope: string,
): void {
  ctx.emit(eventSpanRecord(event, spanAt, startAt, endAt, ctx.clock, name, kind, traceState, attributes, error ? STATUS_ERROR : STATUS_UNSET, resource, instrumentationScope(scope)));
}

/** Emits the span of a probe event: ids made in BPF, monotonic stamps turned to wall time. */
export function emitProbeSpan(ctx: EventContext, s: ProbeSpan): void {
  const status = s.status ?? (s.error ? STATUS_ERROR : STATUS_UNSET);
  if ('event' in s && !s.events?.length && !s.droppedEvents && !s.droppedAttributes) {
    ctx.emit(eventSpanRecord(s.event, s.spanAt, s.startAt, s.endAt, ctx.clock, s.name, s.kind, s.traceState, s.attributes, status, s.resource, instrumentationScope(s.scope)));
    return;
  }
  const d: ProbeSpanDecoded = 'event' in s
    ? { span: rawSpanContextAt(s.event, s.spanAt), start_ns: s.event.readBigUInt64LE(s.startAt), end_ns: s.event.readBigUInt64LE(s.endAt) }
    : s;
  const raw = 'ids' in d.span ? d.span : rawSpanContext(d.span);
  ctx.emit(spanRecord({
    name: s.name,
    kind: s.kind,
    ids: raw.ids,
    hasParent: (raw.flags & SpanFlags.GT_SPAN_HAS_PARENT) !== 0,
    parentRemote: (raw.flags & SpanFlags.GT_SPAN_PARENT_REMOTE) !== 0,
    sampled: (raw.flags & SpanFlags.GT_SPAN_SAMPLED) !== 0,
    traceState: s.traceState,
    startUnixNano: ctx.clock.toUnixNano(d.start_ns),
    endUnixNano: ctx.clock.toUnixNano(d.end_ns),
    attributes: s.attributes,
    status,
    resource: s.resource,
    scope: s.scope,
    events: s.events ? s.events.map((e) => ({ name: e.name, time: nanosToHrTime(ctx.clock.toUnixNano(e.time_ns)) })) : [],
    droppedEvents: s.droppedEvents ?? 0,
    droppedAttributes: s.droppedAttributes ?? 0,
  }));
}

/**
 * For `encodeConfig`: whether a field was resolved for this binary (an
 * offset is known and the field is not among the optional ones missing), so
 * the config enables only what its offsets allow.
 */
export function fieldResolved(offsets: Record<string, number>, missingOptional: readonly string[]): (field: string) => boolean {
  return (field) => offsets[field] !== undefined && !missingOptional.includes(field);
}
