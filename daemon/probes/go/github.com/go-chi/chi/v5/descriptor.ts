/**
 * github.com/go-chi/chi/v5: the route pattern of the matched route
 * (`Context.RoutePattern()`) becomes the request's `http.route` (on the
 * net/http SERVER span, which it also names). No span of its own.
 */
import { PairedFunction, BpfMaps, BpfPrograms, ChiFlags, encodeChiConfig } from '../../../../../../generated/layouts.ts';
import type { ProbeDescriptor } from '../../../../../types.ts';

const ROUTE_PATTERNS = 'github.com/go-chi/chi/v5.Context.RoutePatterns';

export const chiProbe: ProbeDescriptor = {
  id: 'github.com/go-chi/chi/v5',
  module: 'github.com/go-chi/chi/v5',
  goPackage: 'github.com/go-chi/chi/v5',
  description: 'chi routes (http.route of net/http SERVER spans)',
  functions: [
    {
      symbol: 'github.com/go-chi/chi/v5.(*node).FindRoute',
      entryProgram: BpfPrograms.gt_chi_entry,
      returnProgram: BpfPrograms.gt_chi_return,
      absentMeans: 'this program never routes requests with a chi.Mux',
    },
  ],
  fields: {
    [ROUTE_PATTERNS]: { reads: 'http.route: the patterns each router matched, joined' },
  },
  configMap: BpfMaps.gt_chi_config,
  stateMaps: [BpfMaps.gt_http_router_objects],
  inflightMaps: [{ map: BpfMaps.gt_http_router_objects, paired: [PairedFunction.GT_PAIRED_CHI] }],
  encodeConfig(o) {
    return encodeChiConfig({ ctx_route_patterns: o[ROUTE_PATTERNS] ?? 0, flags: ChiFlags.GT_CHI_ENABLED });
  },
};
