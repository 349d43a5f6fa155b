/**
 * Reading the agent's Prometheus text exposition in tests and benchmarks.
 */
import { httpRequest } from './go-server.ts';
import type { AgentProcess } from './agent-process.ts';

/** The sum of a metric's samples whose labels include all of `labels` (0 when none). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** The agent's metrics page, as text. */
export async function scrapeMetrics(agent: AgentProcess): Promise<string> {
  return (await httpRequest(await agent.metricsUrl())).body;
}
