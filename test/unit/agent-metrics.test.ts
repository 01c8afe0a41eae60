import { AggregatorRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../node-agent/serving/metrics.js';

// The per-request counters are plain numbers the Prometheus counters read when scraped
// (serving/metrics.ts): what /metrics shows, and what the front's aggregation of its hosts
// adds up, must be the counts, every scrape, not only the first.

describe('AgentMetrics', () => {
  it('shows requests and starts counted on the hot path, cumulatively across scrapes', async () => {
    const m = new AgentMetrics();
    for (let i = 0; i < 3; i++) m.observeRequest('ns/a', 200, 0.002);
    m.observeRequest('ns/a', 503, 0.2);
    m.observeRequest('', 404, undefined);
    m.observeStart('ns/a', false);
    m.observeStart('ns/a', false);
    m.observeStart('ns/a', true);
    const first = await m.registry.metrics();
    expect(first).toContain('edge_requests_total{worker="ns/a",status="200"} 3');
    expect(first).toContain('edge_requests_total{worker="ns/a",status="503"} 1');
    expect(first).toContain('edge_requests_total{worker="",status="404"} 1');
    expect(first).toContain('edge_worker_starts_total{worker="ns/a",start="warm"} 2');
    expect(first).toContain('edge_worker_starts_total{worker="ns/a",start="cold"} 1');
    expect(first).toContain('edge_request_duration_seconds_count{worker="ns/a"} 4');

    m.observeRequest('ns/a', 200, 0.001);
    m.observeStart('ns/b', true);
    const second = await m.registry.metrics();
    expect(second).toContain('edge_requests_total{worker="ns/a",status="200"} 4');
    expect(second).toContain('edge_worker_starts_total{worker="ns/b",start="cold"} 1');
    expect(second).not.toContain('edge_worker_starts_total{worker="ns/b",start="warm"}');
  });

  it('adds up across hosts as the front aggregates them', async () => {
    const hosts = [new AgentMetrics(), new AgentMetrics()];
    hosts[0]!.observeRequest('ns/a', 200, 0.001);
    hosts[1]!.observeRequest('ns/a', 200, 0.001);
    hosts[1]!.observeRequest('ns/a', 200, 0.001);
    const text = await AggregatorRegistry.aggregate(await Promise.all(hosts.map((h) => h.registry.getMetricsAsJSON()))).metrics();
    expect(text).toContain('edge_requests_total{worker="ns/a",status="200"} 3');
  });
});
