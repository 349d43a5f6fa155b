/**
 * The OTLP/HTTP protobuf span exporter: the OpenTelemetry exporter's
 * transport (its endpoint, headers, timeout, compression and retries from the
 * OTEL_EXPORTER_OTLP_* variables, its self-observability) with gotrail's
 * encoder ({@link OtlpTraceEncoder}) in place of the generic serializer.
 */
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import type { OTLPExporterNodeConfigBase } from '@opentelemetry/otlp-exporter-base';
import type { IExporterMetricsHelper, ISerializer, IExportTraceServiceResponse } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { createRequire, registerHooks } from 'node:module';
import { OtlpTraceEncoder, spanCount, type QueuedSpan } from './otlp-proto.ts';
import { withoutCredentials } from '../util/url-credentials.ts';

// The exporter's transport loads its HTTP client with import('http') (or
// 'https'). An ES import of a Node builtin builds the module's ES facade,
// which reads every export, among them node:http's lazy WebSocket ones:
// that loads Node's bundled undici, ~2.4 MiB of heap (its 770 KB source and
// compiled code) kept for nothing. Those imports, and only the OpenTelemetry
// exporter's, get a module of the builtin's own exports instead (JavaScript
// in a data: URL: nothing to strip of types, so Node's TypeScript stripper
// stays unloaded even where the compile cache lacks it).
const builtinModule = (name: 'http' | 'https'): string =>
  `data:text/javascript,const m=process.getBuiltinModule("node:${name}");export default m;export const{Agent,request}=m;`;
registerHooks({
  resolve: (specifier, context, next) => {
    const name = specifier.replace(/^node:/, '');
    return (name === 'http' || name === 'https') && context.parentURL?.includes('/@opentelemetry/otlp-exporter-base/')
      ? { url: builtinModule(name), shortCircuit: true }
      : next(specifier, context);
  },
});

// The response decoder alone: the transformer's entry point loads its metrics
// and logs serializers and with them @opentelemetry/sdk-metrics (~100 modules
// resident in the agent, none used).
const { deserializeExportTraceServiceResponse } = createRequire(import.meta.url)('@opentelemetry/otlp-transformer/build/src/trace/protobuf/response-deserializer.js') as {
  deserializeExportTraceServiceResponse: (data: Uint8Array) => IExportTraceServiceResponse;
};

/** What the exporter's `otel.sdk.exporter.span.*` self-metrics count (the transformer's TraceExporterMetricsHelper): spans, a prepared run counting its spans. */
const SPAN_METRICS: IExporterMetricsHelper<ReadableSpan[]> = {
  name: 'span',
  countItems: (spans) => {
    let n = 0;
    for (const s of spans as QueuedSpan[]) n += spanCount(s);
    return n;
  },
};

/** semconv's otel.component.type of an OTLP/HTTP span exporter. */
const COMPONENT_TYPE = 'otlp_http_span_exporter';

/**
 * Serializes with one encoder per exporter (`encoder` when given); responses
 * are read by the OpenTelemetry deserializer. `onRequest` is told each
 * request made.
 */
export function otlpTraceSerializer(encoder = new OtlpTraceEncoder(), onRequest?: (request: Uint8Array) => void): ISerializer<ReadableSpan[], IExportTraceServiceResponse> {
  return {
    serializeRequest: (spans) => {
      const request = encoder.encode(spans);
      onRequest?.(request);
      return request;
    },
    deserializeResponse: (data) => deserializeExportTraceServiceResponse(data),
  };
}

/**
 * Same options as `OTLPTraceExporter` of `@opentelemetry/exporter-trace-otlp-proto`.
 * Also takes the spans its {@link prepare} returned (see {@link PreparingExporter}).
 */
export class OtlpProtoTraceExporter extends OTLPExporterBase<ReadableSpan[]> implements SpanExporter, PreparingExporter {
  readonly #encoder: OtlpTraceEncoder;
  /**
   * The traces URL the exporter sends to, as resolved from the options and
   * the variables, for the log: without the user name and password a URL
   * may carry (`http://user:secret@host/...` logs as `http://host/...`),
   * since log lines are shipped and read where credentials must not be.
   */
  readonly destination: string;

  /** The request the serializer made last (see export). */
  readonly #made: { request?: Uint8Array | undefined };

  constructor(config: OTLPExporterNodeConfigBase = {}, encoder = new OtlpTraceEncoder()) {
    const options = convertLegacyHttpOptions(config, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' });
    const made: { request?: Uint8Array | undefined } = {};
    super(createOtlpHttpExportDelegate(options, otlpTraceSerializer(encoder, (r) => {
      made.request = r;
    }), COMPONENT_TYPE, SPAN_METRICS, undefined));
    this.#made = made;
    this.#encoder = encoder;
    this.destination = withoutCredentials(options.url);
  }

  /**
   * As the OpenTelemetry exporter's, and the request's buffer goes back to
   * the encoder once the export succeeded: the collector answered, so the
   * request was sent whole and its retries are over. After a failure (a
   * timeout may leave a compression stream or a socket still reading it)
   * it is left to the garbage collector.
   */
  override export(items: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    // the delegate serializes at once and answers later (a refusal before
    // it serialized may answer at once: nothing to recycle then)
    const mine: { request?: Uint8Array | undefined } = {};
    this.#made.request = undefined;
    super.export(items, (result) => {
      if (mine.request && result.code === ExportResultCode.SUCCESS) this.#encoder.recycle(mine.request);
      resultCallback(result);
    });
    mine.request = this.#made.request;
    this.#made.request = undefined;
  }

  /** See {@link OtlpTraceEncoder.prepare}. */
  prepare(span: ReadableSpan): QueuedSpan {
    return this.#encoder.prepare(span);
  }

  /** See {@link OtlpTraceEncoder.prepareOnto}. */
  prepareOnto(tail: QueuedSpan | undefined, span: ReadableSpan): QueuedSpan {
    return this.#encoder.prepareOnto(tail, span);
  }
}

/**
 * An exporter that encodes a span when it is queued (`prepare`, or
 * `prepareOnto` the queue's last item, which may then hold it as well) and
 * is then handed what those returned, with any other span, in `export`.
 * Every such exporter takes what any other one prepared (runs of OTLP
 * protobuf Span messages).
 */
export interface PreparingExporter {
  prepare(span: ReadableSpan): QueuedSpan;
  prepareOnto(tail: QueuedSpan | undefined, span: ReadableSpan): QueuedSpan;
}
