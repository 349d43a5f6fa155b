/**
 * OTLP/protobuf encoding of spans (an ExportTraceServiceRequest), written
 * straight into one reusable buffer.
 *
 * Why not the OpenTelemetry serializer: it sizes every message twice (an
 * estimating pass, then the writing pass), encodes strings in JavaScript,
 * turns hex ids back into bytes and `[seconds, nanos]` back into nanoseconds
 * for every span, and writes each resource's attributes again in every batch.
 * Here a span record ({@link SpanRecord}) hands over its ids as bytes and its
 * stamps as nanoseconds, strings go through the native UTF-8 writer, each
 * length prefix is reserved and fixed up in place, and a resource and a scope
 * are encoded once and copied thereafter. Other ReadableSpans are encoded too,
 * through their hex ids and HrTimes. The field order and the fields written
 * are the OpenTelemetry serializer's, so a collector sees the same request.
 *
 * Field numbers: opentelemetry/proto/collector/trace/v1/trace_service.proto,
 * opentelemetry/proto/trace/v1/trace.proto, opentelemetry/proto/common/v1.
 */
import type { Attributes, AttributeValue, HrTime } from '@opentelemetry/api';
import type { InstrumentationScope } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';
import type { Link } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import { SpanRecord, spanRecord } from '../spans/span-record.ts';

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const tag = (field: number, wire: number): number => (field << 3) | wire;

// trace.proto Span.flags: the parent's is_remote is known (0x100), and it is remote (0x200)
const SPAN_FLAGS_HAS_IS_REMOTE = 0x100;
const SPAN_FLAGS_IS_REMOTE = 0x200;

/** Largest UTF-16 length whose UTF-8 form surely fits a one-byte length prefix (3 bytes per code unit). */
const SHORT_STRING = 42;

/** Attribute keys whose encoding is kept (see OtlpTraceEncoder #keyEntry); beyond, keys are encoded each time. */
const MAX_CACHED_KEYS = 1024;
/** Longest KeyValue field kept for reuse (see KeyCache.kv): the values that repeat are short. */
const MAX_CACHED_KV_BYTES = 256;

/**
 * What the encoder keeps of an attribute key: its `KeyValue.key` field, and
 * the last primitive value seen under it with, once that value came twice in
 * a row, its whole encoded `KeyValue` field (tag, length, key, value) under
 * the attributes field `field`. Most attributes of a node's spans repeat from
 * span to span (method, status, scheme, protocol, addresses): those are then
 * copied as they were encoded instead of being encoded again. The bytes are
 * the same either way.
 */
class KeyCache {
  readonly key: Buffer;
  value: string | number | boolean | undefined = undefined;
  field = 0;
  kv: Buffer | undefined = undefined;

  constructor(key: Buffer) {
    this.key = key;
  }
}

/** Bytes of the chunks that prepared spans are written into (see {@link OtlpTraceEncoder.prepare}). */
const CHUNK_BYTES = 256 * 1024;
/** A chunk with less room left than this is not started on: a span this large or larger grows a chunk of its own. */
const CHUNK_SLACK = 4096;
/** Requests' buffers kept for reuse (see {@link OtlpTraceEncoder.recycle}): the exporter's default of two exports at once. */
const FREE_REQUESTS_MAX = 2;
/** Smallest request buffer, in bytes (sizes are powers of two from here). */
const REQUEST_MIN_BYTES = 64 * 1024;
/** Free request buffers are let go after this long without a request (ms), before the agent's quiet-time memory reduction. */
const FREE_REQUESTS_IDLE_MS = 2000;

/**
 * Span records encoded when they were queued ({@link OtlpTraceEncoder.prepare}):
 * `count` `ScopeSpans.spans` entries (tag and length included) side by side
 * at `start`..`end` of `chunk`, a buffer shared with the spans prepared
 * around them, all under the same resource and scope. A queue holds one such
 * run for many consecutive spans (see {@link OtlpTraceEncoder.prepareOnto}),
 * so that nothing per span outlives V8's young-generation collections while
 * spans wait for their batch.
 */
export class EncodedSpan {
  readonly chunk: Buffer;
  start: number;
  end: number;
  /** Spans in the run (at least 1). */
  count: number;
  readonly resource: Resource;
  readonly instrumentationScope: InstrumentationScope;

  constructor(chunk: Buffer, start: number, end: number, resource: Resource, instrumentationScope: InstrumentationScope, count = 1) {
    this.chunk = chunk;
    this.start = start;
    this.end = end;
    this.count = count;
    this.resource = resource;
    this.instrumentationScope = instrumentationScope;
  }

  /**
   * Takes the first `n` spans (1 ≤ n < count) off this run: returns them as
   * a run of their own and leaves the rest here. Walks the entries' length
   * prefixes.
   */
  splitOff(n: number): EncodedSpan {
    const r = new Reader(this.chunk, this.start, this.end);
    // each entry: its tag (ScopeSpans.spans = 2), its length, its body
    for (let i = 0; i < n; i++) r.skip(r.tag());
    const p = r.pos;
    const head = new EncodedSpan(this.chunk, this.start, p, this.resource, this.instrumentationScope, n);
    this.start = p;
    this.count -= n;
    return head;
  }
}

/** Spans in a queued item: a run's count, else 1. */
export function spanCount(q: QueuedSpan): number {
  return q instanceof EncodedSpan ? q.count : 1;
}

/** What an exporter with an {@link OtlpTraceEncoder} may be handed: spans, or spans it prepared. */
export type QueuedSpan = ReadableSpan | EncodedSpan;

/** Encodes ExportTraceServiceRequests; one per exporter (it keeps its buffer and caches between calls). */
export class OtlpTraceEncoder {
  #buf: Buffer;
  #pos = 0;
  /** Per attribute key: its encoded KeyValue.key field and its last value's KeyValue (see #attributes). */
  readonly #keys = new Map<string, KeyCache>();
  /** Where {@link prepare} writes: the current chunk and its first free byte. */
  #chunk: Buffer = Buffer.allocUnsafeSlow(CHUNK_BYTES);
  #chunkPos = 0;
  /**
   * The last span prepared, kept alive so that the hidden class of
   * EncodedSpan survives quiet periods: V8's optimized code holds the maps
   * it was specialized for weakly, and a memory-reducing GC that finds no
   * EncodedSpan alive deoptimizes prepare and its callers (see the agent's
   * lastSpanOfScope). It points into the current chunk, which is kept anyway.
   */
  // eslint-disable-next-line no-unused-private-class-members -- held, never read: what it keeps alive is the point
  #lastPrepared: EncodedSpan | undefined;
  /** A resource's encoded `Resource` message (field 1 of ResourceSpans, with its tag), by identity. */
  readonly #resources = new WeakMap<Resource, Buffer>();
  /** An instrumentation scope's encoded `InstrumentationScope` (field 1 of ScopeSpans, with its tag), by identity. */
  readonly #scopes = new WeakMap<InstrumentationScope, Buffer>();

  /**
   * Buffers of requests whose export is over ({@link recycle}), for the next
   * requests: a new buffer per request is external memory to V8, which at
   * thousands of spans per second hastened its full collections.
   */
  readonly #freeRequests: ArrayBuffer[] = [];
  #requestsSince = 0;
  #freeTimer: NodeJS.Timeout | undefined;

  constructor(initialBytes = 1 << 20) {
    this.#buf = Buffer.allocUnsafe(initialBytes);
  }

  /**
   * Takes back a request that {@link encode} returned once nothing reads it
   * any more (its export succeeded: the collector answered the whole
   * request): a later request may be written into its buffer. Anything else
   * is ignored.
   */
  recycle(request: Uint8Array): void {
    const whole = request.buffer;
    if (!(whole instanceof ArrayBuffer) || request.byteOffset !== 0 || whole.byteLength < REQUEST_MIN_BYTES || this.#freeRequests.includes(whole)) return;
    if (this.#freeRequests.length >= FREE_REQUESTS_MAX) return;
    this.#freeRequests.push(whole);
    if (!this.#freeTimer) this.#armFreeTimer();
  }

  /** Lets the free request buffers go once no request was made for {@link FREE_REQUESTS_IDLE_MS}. */
  #armFreeTimer(): void {
    const since = this.#requestsSince;
    this.#freeTimer = setTimeout(() => {
      this.#freeTimer = undefined;
      if (this.#requestsSince !== since) this.#armFreeTimer();
      else this.#freeRequests.length = 0;
    }, FREE_REQUESTS_IDLE_MS);
    this.#freeTimer.unref();
  }

  /** The request's bytes (the buffer's first #pos bytes) in a buffer of their own: a free one when one is large enough. */
  #request(): Buffer {
    const n = this.#pos;
    this.#requestsSince++;
    const free = this.#freeRequests;
    let whole: ArrayBuffer | undefined;
    for (let i = 0; i < free.length; i++) {
      if (free[i]!.byteLength < n) continue;
      whole = free[i]!;
      free.splice(i, 1);
      break;
    }
    if (!whole) {
      let size = REQUEST_MIN_BYTES;
      while (size < n) size *= 2;
      whole = Buffer.allocUnsafeSlow(size).buffer;
    }
    const out = Buffer.from(whole, 0, n);
    this.#buf.copy(out, 0, 0, n);
    return out;
  }

  /**
   * The request carrying `spans`, grouped by resource and then by scope
   * (each by identity). Returns bytes of their own, which the caller owns
   * (an exporter may still be sending them when the next batch is encoded)
   * until it hands them back with {@link recycle}.
   */
  encode(spans: readonly QueuedSpan[]): Uint8Array {
    this.#pos = 0;
    const groups = new Map<Resource, Map<InstrumentationScope, QueuedSpan[]>>();
    for (const span of spans) {
      let scopes = groups.get(span.resource);
      if (!scopes) groups.set(span.resource, (scopes = new Map<InstrumentationScope, QueuedSpan[]>()));
      const list = scopes.get(span.instrumentationScope);
      if (list) list.push(span);
      else scopes.set(span.instrumentationScope, [span]);
    }
    for (const [resource, scopes] of groups) {
      // ExportTraceServiceRequest.resource_spans = 1
      const rs = this.#begin(tag(1, WIRE_LEN), 5);
      this.#raw(this.#resourceBytes(resource));
      for (const [scope, list] of scopes) {
        // ResourceSpans.scope_spans = 2
        const ss = this.#begin(tag(2, WIRE_LEN), 5);
        this.#raw(this.#scopeBytes(scope));
        // prepared spans side by side in a chunk are copied as one run
        let run: Buffer | undefined;
        let runStart = 0;
        let runEnd = 0;
        for (const span of list) {
          if (span instanceof EncodedSpan) {
            if (span.chunk === run && span.start === runEnd) {
              runEnd = span.end;
              continue;
            }
            if (run) this.#rawRange(run, runStart, runEnd);
            run = span.chunk;
            runStart = span.start;
            runEnd = span.end;
            continue;
          }
          if (run) this.#rawRange(run, runStart, runEnd);
          run = undefined;
          if (span instanceof SpanRecord) this.#record(span);
          else this.#span(span);
        }
        if (run) this.#rawRange(run, runStart, runEnd);
        // ScopeSpans.schema_url = 3
        if (scope.schemaUrl) this.#string(3, scope.schemaUrl);
        this.#end(ss, 5);
      }
      // ResourceSpans.schema_url = 3
      if (resource.schemaUrl) this.#string(3, resource.schemaUrl);
      this.#end(rs, 5);
    }
    return this.#request();
  }

  /**
   * Encodes a span record now, to be sent later: an exporter's queue that
   * holds the returned {@link EncodedSpan} (its share of a chunk) instead of
   * the record lets the record, its attributes and strings die young, rather
   * than surviving in V8's heap until their batch is exported (which at
   * thousands of spans per second made them outlive young-generation
   * collections and fed major ones). Other spans are returned as they are.
   * Never throws: a span that cannot be encoded now is returned as it is.
   */
  prepare(span: ReadableSpan): QueuedSpan {
    return this.prepareOnto(undefined, span);
  }

  /**
   * As {@link prepare}, but when `tail` is the run this encoder prepared
   * last (the queue's last item: the span lands right after it in the same
   * chunk, under the same resource and scope), the span is added to that run
   * and `tail` is returned; otherwise a new run, or the span as it is. A
   * queue that pushes only what is not `tail` then holds one object per run
   * of spans instead of one per span (a chunk holds ~900 HTTP server spans).
   */
  prepareOnto(tail: QueuedSpan | undefined, span: ReadableSpan): QueuedSpan {
    if (!(span instanceof SpanRecord)) return span;
    const scratch = this.#buf;
    const scratchPos = this.#pos;
    try {
      if (this.#chunkPos + CHUNK_SLACK > this.#chunk.length) {
        this.#chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
        this.#chunkPos = 0;
      }
      const start = this.#chunkPos;
      this.#buf = this.#chunk;
      this.#pos = start;
      this.#record(span);
      // a span larger than the room left grew the chunk into a new buffer, which holds it
      const chunk = this.#buf;
      if (chunk !== this.#chunk) this.#chunk = chunk;
      this.#chunkPos = this.#pos;
      if (tail instanceof EncodedSpan && tail.chunk === chunk && tail.end === start && tail.resource === span.resource && tail.instrumentationScope === span.instrumentationScope) {
        tail.end = this.#pos;
        tail.count++;
        return tail;
      }
      const e = new EncodedSpan(chunk, start, this.#pos, span.resource, span.instrumentationScope);
      this.#lastPrepared = e;
      return e;
    } catch {
      return span;
    } finally {
      this.#buf = scratch;
      this.#pos = scratchPos;
    }
  }

  #rawRange(src: Buffer, start: number, end: number): void {
    this.#ensure(end - start);
    src.copy(this.#buf, this.#pos, start, end);
    this.#pos += end - start;
  }

  #resourceBytes(resource: Resource): Buffer {
    let b = this.#resources.get(resource);
    // A resource whose detectors have not settled is encoded as it is now, and again next time.
    if (!b || resource.asyncAttributesPending) {
      b = this.#detached(() => {
        // ResourceSpans.resource = 1; Resource.attributes = 1, dropped_attributes_count = 2
        const r = this.#begin(tag(1, WIRE_LEN), 5);
        this.#attributes(1, resource.attributes);
        this.#varintField(2, 0);
        this.#end(r, 5);
      });
      if (!resource.asyncAttributesPending) this.#resources.set(resource, b);
    }
    return b;
  }

  #scopeBytes(scope: InstrumentationScope): Buffer {
    let b = this.#scopes.get(scope);
    if (!b) {
      b = this.#detached(() => {
        // ScopeSpans.scope = 1; InstrumentationScope.name = 1, version = 2
        const s = this.#begin(tag(1, WIRE_LEN), 1);
        this.#string(1, scope.name);
        if (scope.version) this.#string(2, scope.version);
        this.#end(s, 1);
      });
      this.#scopes.set(scope, b);
    }
    return b;
  }

  /** Runs `write` at the end of the buffer and returns what it wrote as a copy, leaving the buffer as it was. */
  #detached(write: () => void): Buffer {
    const at = this.#pos;
    write();
    const out = Buffer.from(this.#buf.subarray(at, this.#pos));
    this.#pos = at;
    return out;
  }

  /** A span record: ids and stamps copied from its slot, as they are kept. */
  #record(s: SpanRecord): void {
    // ScopeSpans.spans = 2
    const m = this.#begin(tag(2, WIRE_LEN), 2);
    this.#ensure(2 + 16 + 2 + 8);
    const b = this.#buf;
    const src = s.bytes;
    const at = s.at;
    let p = this.#pos;
    // Span.trace_id = 1, span_id = 2
    b[p++] = tag(1, WIRE_LEN);
    b[p++] = 16;
    p = copy(src, at, b, p, 16);
    b[p++] = tag(2, WIRE_LEN);
    b[p++] = 8;
    p = copy(src, at + 16, b, p, 8);
    this.#pos = p;
    // Span.trace_state = 3
    const traceState = s.traceState?.serialize();
    if (traceState) this.#string(3, traceState);
    // Span.parent_span_id = 4
    if (s.hasParent) {
      // the trace state may have moved the buffer
      this.#ensure(10);
      const pb = this.#buf;
      p = this.#pos;
      pb[p++] = tag(4, WIRE_LEN);
      pb[p++] = 8;
      this.#pos = copy(src, at + 24, pb, p, 8);
    }
    this.#stamps = src;
    this.#stampsAt = at + 32;
    this.#spanBody(s.name, s.kind, s.attributes, s.droppedAttributesCount, s.events, s.droppedEventsCount, s.links, s.droppedLinksCount, s.status);
    // Span.flags = 16: the trace flags, and whether the parent is remote
    this.#fixed32Field(16, (s.traceFlags & 0xff) | SPAN_FLAGS_HAS_IS_REMOTE | (s.parentRemote ? SPAN_FLAGS_IS_REMOTE : 0));
    this.#end(m, 2);
  }

  /** Any other ReadableSpan, through its hex ids and HrTimes. */
  #span(s: ReadableSpan): void {
    const m = this.#begin(tag(2, WIRE_LEN), 2);
    const ctx = s.spanContext();
    this.#hexBytes(1, ctx.traceId);
    this.#hexBytes(2, ctx.spanId);
    const traceState = ctx.traceState?.serialize();
    if (traceState) this.#string(3, traceState);
    const parent = s.parentSpanContext;
    if (parent?.spanId) this.#hexBytes(4, parent.spanId);
    this.#spanBodyTimed(s);
    // Span.flags = 16
    this.#fixed32Field(16, (ctx.traceFlags & 0xff) | SPAN_FLAGS_HAS_IS_REMOTE | (parent?.isRemote ? SPAN_FLAGS_IS_REMOTE : 0));
    this.#end(m, 2);
  }

  #spanBodyTimed(s: ReadableSpan): void {
    this.#spanBody(s.name, s.kind, s.attributes, s.droppedAttributesCount, s.events, s.droppedEventsCount, s.links, s.droppedLinksCount, s.status, s.startTime, s.endTime);
  }

  /** Span fields 5 to 15: name, kind, stamps, attributes, events, links, status. */
  #spanBody(
    name: string, kind: number, attributes: Attributes, droppedAttributes: number, events: readonly TimedEvent[], droppedEvents: number,
    links: readonly Link[], droppedLinks: number, status: ReadableSpan['status'], start?: HrTime, end?: HrTime,
  ): void {
    this.#string(5, name);
    // SpanKind is one less than OTLP's (which has UNSPECIFIED = 0)
    this.#varintField(6, kind + 1);
    this.#ensure(18);
    this.#buf[this.#pos++] = tag(7, WIRE_FIXED64);
    this.#writeStamp(start);
    this.#buf[this.#pos++] = tag(8, WIRE_FIXED64);
    this.#writeStamp(end, true);
    this.#attributes(9, attributes);
    this.#varintField(10, droppedAttributes);
    // Indexed loops, not for-of: here V8 kept the array iterators and their
    // results as heap objects, ~180 bytes of garbage per span even with no
    // events and no links (measured on V8's heap, Node 24).
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      // Span.events = 11; Event.time_unix_nano = 1, name = 2, attributes = 3, dropped_attributes_count = 4
      const em = this.#begin(tag(11, WIRE_LEN), 1);
      this.#ensure(9);
      this.#buf[this.#pos++] = tag(1, WIRE_FIXED64);
      this.#hrTime(e.time);
      this.#string(2, e.name);
      if (e.attributes) this.#attributes(3, e.attributes);
      this.#varintField(4, e.droppedAttributesCount ?? 0);
      this.#end(em, 1);
    }
    this.#varintField(12, droppedEvents);
    for (let i = 0; i < links.length; i++) {
      const l = links[i]!;
      // Span.links = 13; Link.trace_id = 1, span_id = 2, trace_state = 3, attributes = 4, dropped_attributes_count = 5, flags = 6
      const lm = this.#begin(tag(13, WIRE_LEN), 1);
      this.#hexBytes(1, l.context.traceId);
      this.#hexBytes(2, l.context.spanId);
      const ts = l.context.traceState?.serialize();
      if (ts) this.#string(3, ts);
      if (l.attributes) this.#attributes(4, l.attributes);
      this.#varintField(5, l.droppedAttributesCount ?? 0);
      this.#fixed32Field(6, (l.context.traceFlags & 0xff) | SPAN_FLAGS_HAS_IS_REMOTE | (l.context.isRemote ? SPAN_FLAGS_IS_REMOTE : 0));
      this.#end(lm, 1);
    }
    this.#varintField(14, droppedLinks);
    // Span.status = 15; Status.message = 2, code = 3
    const sm = this.#begin(tag(15, WIRE_LEN), 1);
    if (status.message) this.#string(2, status.message);
    this.#varintField(3, status.code);
    this.#end(sm, 1);
  }

  // Where the span record being encoded keeps its start and end stamps, for #writeStamp (set by #record).
  #stamps: Buffer | undefined;
  #stampsAt = 0;

  #writeStamp(t: HrTime | undefined, end = false): void {
    if (t) this.#hrTime(t);
    else this.#pos = copy(this.#stamps!, this.#stampsAt + (end ? 8 : 0), this.#buf, this.#pos, 8);
  }

  /** An HrTime as fixed64 nanoseconds, exactly (seconds × 1e9 exceeds 2^53). */
  #hrTime(t: HrTime): void {
    const secLo = t[0] % 0x10000;
    const secHi = Math.floor(t[0] / 0x10000);
    // ns = secHi·1e9·2^16 + secLo·1e9 + nanos; each product < 2^53
    const a = secLo * 1e9 + t[1];
    const b = secHi * 1e9;
    const bLo = (b % 0x10000) * 0x10000;
    const lo = a % 0x100000000 + bLo;
    const low32 = lo % 0x100000000;
    const high32 = (Math.floor(a / 0x100000000) + Math.floor(b / 0x10000) + Math.floor(lo / 0x100000000)) >>> 0;
    this.#buf.writeUInt32LE(low32, this.#pos);
    this.#buf.writeUInt32LE(high32, this.#pos + 4);
    this.#pos += 8;
  }

  #attributes(field: number, attributes: Attributes): void {
    for (const key in attributes) {
      if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
      const value = attributes[key];
      if (value === undefined || value === null) continue;
      const e = this.#keyEntry(key);
      if (e !== undefined && e.kv !== undefined && e.value === value && e.field === field) {
        this.#copy(e.kv);
        continue;
      }
      const at = this.#pos;
      // KeyValue.key = 1, value = 2
      const kv = this.#begin(tag(field, WIRE_LEN), 1);
      if (e === undefined) this.#string(1, key);
      else this.#copy(e.key);
      const v = this.#begin(tag(2, WIRE_LEN), 1);
      this.#anyValue(value);
      this.#end(v, 1);
      this.#end(kv, 1);
      if (e === undefined) continue;
      if (typeof value === 'object') {
        // an array may change under the same identity: never reused
        e.value = undefined;
        e.kv = undefined;
      } else if (e.value === value && e.field === field) {
        // the same value twice in a row: it repeats (a method, a status, an address)
        if (this.#pos - at <= MAX_CACHED_KV_BYTES) e.kv = Buffer.from(this.#buf.subarray(at, this.#pos));
      } else {
        e.value = value;
        e.field = field;
        e.kv = undefined;
      }
    }
  }

  /**
   * The cache entry of an attribute key, made the first time, for the first
   * {@link MAX_CACHED_KEYS} keys (attribute keys are few and repeat in every
   * span); undefined beyond.
   */
  #keyEntry(key: string): KeyCache | undefined {
    let e = this.#keys.get(key);
    if (e === undefined) {
      if (this.#keys.size >= MAX_CACHED_KEYS) return undefined;
      e = new KeyCache(this.#detached(() => this.#string(1, key)));
      this.#keys.set(key, e);
    }
    return e;
  }

  /**
   * Appends `src` (short) with TypedArray.prototype.set: a builtin of V8's
   * own, no call into Node as Buffer.copy, and measured here at about half
   * the time of a byte loop for the 18 to 40 bytes of a cached KeyValue.
   */
  #copy(src: Buffer): void {
    const n = src.length;
    this.#ensure(n);
    this.#buf.set(src, this.#pos);
    this.#pos += n;
  }

  /** AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4, array_value = 5. */
  #anyValue(value: AttributeValue | null | undefined): void {
    switch (typeof value) {
      case 'string':
        this.#string(1, value);
        return;
      case 'boolean':
        this.#varintField(2, value ? 1 : 0);
        return;
      case 'number':
        if (Number.isInteger(value) && value >= -(2 ** 63) && value < 2 ** 63) this.#int64Field(3, value);
        else {
          this.#ensure(9);
          this.#buf[this.#pos++] = tag(4, WIRE_FIXED64);
          this.#buf.writeDoubleLE(value, this.#pos);
          this.#pos += 8;
        }
        return;
      default:
        if (Array.isArray(value)) {
          // ArrayValue.values = 1
          const a = this.#begin(tag(5, WIRE_LEN), 2);
          for (const item of value as Array<AttributeValue | null | undefined>) {
            const i = this.#begin(tag(1, WIRE_LEN), 1);
            if (item !== null && item !== undefined) this.#anyValue(item);
            this.#end(i, 1);
          }
          this.#end(a, 2);
        }
    }
  }

  // --- wire primitives -------------------------------------------------------

  #ensure(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#buf.copy(next, 0, 0, this.#pos);
    this.#buf = next;
  }

  #raw(b: Buffer): void {
    this.#ensure(b.length);
    b.copy(this.#buf, this.#pos);
    this.#pos += b.length;
  }

  /** Writes a field's tag and reserves `reserve` bytes for its length; returns where the body starts. */
  #begin(tagByte: number, reserve: number): number {
    this.#ensure(2 + reserve);
    this.#writeVarint(tagByte);
    this.#pos += reserve;
    return this.#pos;
  }

  /** Writes the length of the message begun at `start` into its reserved bytes, moving the body when it needs more or fewer. */
  #end(start: number, reserve: number): void {
    const len = this.#pos - start;
    const size = varintSize(len);
    if (size !== reserve) {
      this.#ensure(size - reserve);
      this.#buf.copyWithin(start - reserve + size, start, this.#pos);
      this.#pos += size - reserve;
    }
    let p = start - reserve;
    let v = len;
    while (v > 0x7f) {
      this.#buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.#buf[p] = v;
  }

  #writeVarint(v: number): void {
    while (v > 0x7f) {
      this.#buf[this.#pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.#buf[this.#pos++] = v;
  }

  #varintField(field: number, v: number): void {
    this.#ensure(7);
    this.#writeVarint(tag(field, WIRE_VARINT));
    this.#writeVarint(v >>> 0);
  }

  /** An int64 varint field: negatives as their 10-byte two's complement. */
  #int64Field(field: number, v: number): void {
    if (v >= 0 && v <= 0xffffffff) {
      this.#varintField(field, v);
      return;
    }
    this.#ensure(12);
    this.#writeVarint(tag(field, WIRE_VARINT));
    let x = BigInt.asUintN(64, BigInt(v));
    while (x > 0x7fn) {
      this.#buf[this.#pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.#buf[this.#pos++] = Number(x);
  }

  #fixed32Field(field: number, v: number): void {
    this.#ensure(6);
    this.#writeVarint(tag(field, WIRE_FIXED32));
    this.#buf.writeUInt32LE(v >>> 0, this.#pos);
    this.#pos += 4;
  }

  #string(field: number, s: string): void {
    const len = s.length;
    if (len <= SHORT_STRING) {
      this.#ensure(2 + 1 + 3 * len);
      this.#writeVarint(tag(field, WIRE_LEN));
      // Short ASCII (nearly every key and value) copied here: cheaper than a call into the native writer.
      const b = this.#buf;
      const at = this.#pos + 1;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[at + i] = c;
      }
      const n = i === len ? len : b.write(s, at, 'utf8');
      b[this.#pos] = n;
      this.#pos = at + n;
      return;
    }
    const n = Buffer.byteLength(s, 'utf8');
    this.#ensure(2 + 5 + n);
    this.#writeVarint(tag(field, WIRE_LEN));
    this.#writeVarint(n);
    this.#pos += this.#buf.write(s, this.#pos, n, 'utf8');
  }

  #hexBytes(field: number, hex: string): void {
    const n = hex.length >>> 1;
    this.#ensure(2 + 1 + n);
    this.#writeVarint(tag(field, WIRE_LEN));
    this.#writeVarint(n);
    this.#pos += this.#buf.write(hex, this.#pos, n, 'hex');
  }
}

/** Copies `n` bytes from `src` at `from` to `dst` at `to`; returns the end in `dst`. Cheaper than Buffer.copy for ids and stamps. */
function copy(src: Buffer, from: number, dst: Buffer, to: number, n: number): number {
  for (let i = 0; i < n; i++) dst[to + i] = src[from + i]!;
  return to + n;
}

/**
 * The span records an {@link EncodedSpan} run was made from, decoded from its
 * bytes: for a queue whose exporter is replaced by one that takes spans, not
 * bytes (a configuration reload from OTLP to the console). Reads the fields
 * {@link OtlpTraceEncoder} writes for a span record.
 */
export function decodeEncodedSpans(e: EncodedSpan): ReadableSpan[] {
  const out: ReadableSpan[] = [];
  const r = new Reader(e.chunk, e.start, e.end);
  while (r.pos < r.end) out.push(decodeSpanEntry(r, e));
  return out;
}

/** The `ScopeSpans.spans` entry at `r`'s position, which `r` then skips. */
function decodeSpanEntry(r: Reader, e: EncodedSpan): ReadableSpan {
  r.tag();
  const end = r.len() + r.pos;
  const ids = Buffer.alloc(32);
  let hasParent = false;
  let flags = 0;
  let traceState: TraceState | undefined;
  let name = '';
  let kind = 0;
  let start = 0n;
  let stop = 0n;
  const attributes: Attributes = {};
  let droppedAttributes = 0;
  const events: TimedEvent[] = [];
  let droppedEvents = 0;
  let status: ReadableSpan['status'] = { code: 0 };
  while (r.pos < end) {
    const t = r.tag();
    switch (t >>> 3) {
      case 1: r.bytes().copy(ids, 0); break;
      case 2: r.bytes().copy(ids, 16); break;
      case 3: traceState = new TraceState(r.string()); break;
      case 4: r.bytes().copy(ids, 24); hasParent = true; break;
      case 5: name = r.string(); break;
      case 6: kind = r.varint() - 1; break;
      case 7: start = r.fixed64(); break;
      case 8: stop = r.fixed64(); break;
      case 9: {
        const [k, v] = r.keyValue();
        attributes[k] = v;
        break;
      }
      case 10: droppedAttributes = r.varint(); break;
      case 11: {
        const m = r.message();
        let time = 0n;
        let evName = '';
        while (m.pos < m.end) {
          const et = m.tag();
          if (et >>> 3 === 1) time = m.fixed64();
          else if (et >>> 3 === 2) evName = m.string();
          else m.skip(et);
        }
        events.push({ name: evName, time: [Number(time / 1_000_000_000n), Number(time % 1_000_000_000n)] });
        break;
      }
      case 12: droppedEvents = r.varint(); break;
      case 15: {
        const m = r.message();
        let code = 0;
        let message: string | undefined;
        while (m.pos < m.end) {
          const st = m.tag();
          if (st >>> 3 === 2) message = m.string();
          else if (st >>> 3 === 3) code = m.varint();
          else m.skip(st);
        }
        status = message === undefined ? { code } : { code, message };
        break;
      }
      case 16: flags = r.fixed32(); break;
      default: r.skip(t);
    }
  }
  return spanRecord({
    name, kind, ids: ids.toString('latin1'), hasParent, parentRemote: (flags & SPAN_FLAGS_IS_REMOTE) !== 0, sampled: (flags & 1) !== 0, traceState,
    startUnixNano: start, endUnixNano: stop, attributes, status, resource: e.resource, scope: e.instrumentationScope, events, droppedEvents, droppedAttributes,
  });
}

/** Reads protobuf wire values from `buf` between `pos` and `end`. */
class Reader {
  buf: Buffer;
  pos: number;
  end: number;
  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** A varint as a number (tags, lengths, enums, counts: exact below 2^53); {@link varint64} for int64 values. */
  varint(): number {
    let v = 0;
    let scale = 1;
    for (;;) {
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 128;
    }
  }

  varint64(): bigint {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = this.buf[this.pos++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
      shift += 7n;
    }
  }

  tag(): number {
    return this.varint();
  }

  len(): number {
    return this.varint();
  }

  bytes(): Buffer {
    const n = this.len();
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  string(): string {
    return this.bytes().toString('utf8');
  }

  /** A reader of the embedded message here (length first), which this one skips. */
  message(): Reader {
    const n = this.len();
    const m = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return m;
  }

  fixed64(): bigint {
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }

  fixed32(): number {
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  skip(t: number): void {
    switch (t & 7) {
      case WIRE_VARINT: while (this.buf[this.pos++]! >= 0x80); break;
      case WIRE_FIXED64: this.pos += 8; break;
      case WIRE_LEN: {
        // the length first: `pos += len()` would add it to the position before the length was read
        const n = this.len();
        this.pos += n;
        break;
      }
      case WIRE_FIXED32: this.pos += 4; break;
    }
  }

  /** A KeyValue message (length first). */
  keyValue(): [string, AttributeValue] {
    const end = this.len() + this.pos;
    let key = '';
    let value: AttributeValue = '';
    while (this.pos < end) {
      const t = this.tag();
      if (t >>> 3 === 1) key = this.string();
      else if (t >>> 3 === 2) value = this.anyValue() ?? '';
      else this.skip(t);
    }
    return [key, value];
  }

  /** An AnyValue message (length first); undefined when empty (an array's null item). */
  anyValue(): AttributeValue | undefined {
    const end = this.len() + this.pos;
    let value: AttributeValue | undefined;
    while (this.pos < end) {
      const t = this.tag();
      switch (t >>> 3) {
        case 1: value = this.string(); break;
        case 2: value = this.varint() !== 0; break;
        case 3: value = Number(BigInt.asIntN(64, this.varint64())); break;
        case 4: value = this.buf.readDoubleLE(this.pos); this.pos += 8; break;
        case 5: {
          const arrEnd = this.len() + this.pos;
          const items: Array<string | number | boolean | null | undefined> = [];
          while (this.pos < arrEnd) {
            const it = this.tag();
            if (it >>> 3 === 1) items.push(this.anyValue() as string | number | boolean | undefined ?? null);
            else this.skip(it);
          }
          value = items as AttributeValue;
          break;
        }
        default: this.skip(t);
      }
    }
    return value;
  }
}

function varintSize(v: number): number {
  let n = 1;
  while (v > 0x7f) {
    v >>>= 7;
    n++;
  }
  return n;
}
