/**
 * `http.route`: the route template a server matched (`/users/{id}`), as a
 * span attribute and in the span name (`GET /users/{id}`), with its
 * cardinality bounded per service.
 *
 * Routes come from the router's own template (a ServeMux pattern, gorilla/mux,
 * chi, gin), never from the request path: a template's values are few by
 * construction. A program can still register many (generated patterns, one
 * per tenant): past `maxPerService` distinct routes of one service, further
 * new routes are not reported (the span keeps its method-only name) and are
 * counted, so the back-end's series stay bounded and the loss is visible.
 */
import { HttpRouteSource } from '../generated/layouts.ts';
import { goString } from './go-values.ts';

/** Default of `--max-http-routes`: distinct `http.route` values per service. */
export const DEFAULT_MAX_HTTP_ROUTES = 1000;

/** Why a matched route was not reported. */
export type RouteCutReason = 'cardinality' | 'truncated';

/**
 * The distinct routes seen per service, up to a limit. One per agent; memory
 * is bounded by services × `maxPerService` templates of at most 128 bytes.
 */
export class HttpRouteBound {
  private readonly seen = new Map<string, Set<string>>();
  /** Routes not reported, by reason (`gotrail_http_routes_cut_total`). */
  readonly cut: Record<RouteCutReason, number> = { cardinality: 0, truncated: 0 };

  /** Distinct routes reported per service (≥ 0; 0 reports none). */
  readonly maxPerService: number;

  /** @param maxPerService distinct routes reported per service (default DEFAULT_MAX_HTTP_ROUTES) */
  constructor(maxPerService = DEFAULT_MAX_HTTP_ROUTES) {
    this.maxPerService = maxPerService;
  }

  /** `route` if it is one of the service's first `maxPerService` distinct routes, else undefined (counted). */
  admit(service: string, route: string): string | undefined {
    let routes = this.seen.get(service);
    if (!routes) {
      routes = new Set();
      this.seen.set(service, routes);
    }
    if (routes.has(route)) return route;
    if (routes.size >= this.maxPerService) {
      this.cut.cardinality++;
      return undefined;
    }
    routes.add(route);
    return route;
  }

  /** Counts a route that could not be reported for `reason`. */
  count(reason: RouteCutReason): void {
    this.cut[reason]++;
  }

  /** Distinct routes kept, over all services. */
  get size(): number {
    let n = 0;
    for (const s of this.seen.values()) n += s.size;
    return n;
  }
}

/**
 * The route template of a probe's `struct gt_http_route` (bytes, full length,
 * source), or undefined when there is none or it cannot be used: a template
 * longer than the probe copies is never reported cut short (counted as
 * `truncated` in `bound`). A ServeMux pattern is `[METHOD ][HOST]/PATH`; its
 * route is the path part, as OpenTelemetry's own net/http instrumentation
 * reports it.
 */
export function routeTemplate(bytes: Buffer, len: number, source: number, bound: HttpRouteBound): string | undefined {
  if (source === HttpRouteSource.GT_HTTP_ROUTE_NONE || len <= 0) return undefined;
  if (len > bytes.length) {
    bound.count('truncated');
    return undefined;
  }
  const raw = goString(bytes, len);
  const slash = raw.indexOf('/');
  if (slash < 0) return undefined;
  if (source === HttpRouteSource.GT_HTTP_ROUTE_SERVEMUX) return raw.slice(slash);
  if (slash !== 0) return undefined;
  return source === HttpRouteSource.GT_HTTP_ROUTE_CHI ? chiRoutePattern(raw) : raw;
}

/**
 * chi's `Context.RoutePattern()` of its joined `RoutePatterns`: the `/*` of
 * each mount point removed (`/api/*` + `/users/{id}` → `/api/users/{id}`),
 * and a trailing slash dropped except from `/`.
 */
export function chiRoutePattern(joined: string): string {
  let p = joined;
  while (p.includes('/*/')) p = p.replaceAll('/*/', '/');
  if (p === '/') return p;
  if (p.endsWith('//')) p = p.slice(0, -2);
  if (p.endsWith('/')) p = p.slice(0, -1);
  return p;
}
