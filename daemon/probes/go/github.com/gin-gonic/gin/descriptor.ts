/**
 * github.com/gin-gonic/gin: the full path of the matched route
 * (`Context.FullPath()`) becomes the request's `http.route` (on the net/http
 * SERVER span, which it also names). No span of its own.
 */
import { PairedFunction, BpfMaps, BpfPrograms, GinFlags, encodeGinConfig } from '../../../../../generated/layouts.ts';
import type { ProbeDescriptor } from '../../../../types.ts';

const FULL_PATH = 'github.com/gin-gonic/gin.Context.fullPath';

export const ginProbe: ProbeDescriptor = {
  id: 'github.com/gin-gonic/gin',
  module: 'github.com/gin-gonic/gin',
  goPackage: 'github.com/gin-gonic/gin',
  description: 'gin routes (http.route of net/http SERVER spans)',
  functions: [
    {
      symbol: 'github.com/gin-gonic/gin.(*Engine).handleHTTPRequest',
      entryProgram: BpfPrograms.gt_gin_entry,
      returnProgram: BpfPrograms.gt_gin_return,
      absentMeans: 'this program never serves requests with a gin.Engine',
    },
  ],
  fields: {
    [FULL_PATH]: { reads: 'http.route: the full path of the matched route' },
  },
  configMap: BpfMaps.gt_gin_config,
  stateMaps: [BpfMaps.gt_http_router_objects],
  inflightMaps: [{ map: BpfMaps.gt_http_router_objects, paired: [PairedFunction.GT_PAIRED_GIN] }],
  encodeConfig(o) {
    return encodeGinConfig({ ctx_full_path: o[FULL_PATH] ?? 0, flags: GinFlags.GT_GIN_ENABLED });
  },
};
