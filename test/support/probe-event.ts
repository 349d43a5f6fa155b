/**
 * Runs one hand-built probe event through a descriptor's handleEvent, as the
 * agent would (event at offset 8 of `buf`), and returns the spans it made and
 * the problems it reported.
 */
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { EventContext, EventProbe } from '../../daemon/probes/types.ts';
import { MonotonicClock } from '../../daemon/spans/clock.ts';
import { HttpRouteBound } from '../../daemon/spans/http-route.ts';

export function runProbeEvent(probe: Pick<EventProbe, 'handleEvent'>, buf: Buffer, extra: Partial<EventContext> = {}): { spans: ReadableSpan[]; problems: string[] } {
  const spans: ReadableSpan[] = [];
  const problems: string[] = [];
  const ctx: EventContext = {
    clock: new MonotonicClock(),
    resourceOf: (tgid) => resourceFromAttributes({ 'service.name': 'svc', 'process.pid': tgid }),
    emit: (s) => spans.push(s),
    problem: (r) => problems.push(r),
    routes: new HttpRouteBound(),
    ...extra,
  };
  probe.handleEvent(buf, 8, ctx);
  return { spans, problems };
}
