import { Counter, Gauge, type Registry } from 'prom-client';
import type { HibernationStats } from './hibernation.js';

// The agent's hibernatable-WebSocket figures on /metrics, read from Hibernation.stats()
// when scraped (one registry per agent, so several agents can share a process in tests).

export function registerHibernationMetrics(registry: Registry, stats: () => HibernationStats | undefined): void {
  const registers = [registry];
  const read = (f: (s: HibernationStats) => number) => { const s = stats(); return s === undefined ? 0 : f(s); };
  new Gauge({
    name: 'edge_hibernated_websockets', help: 'WebSockets actors accepted with state.acceptWebSocket() that this agent holds now (their actors may be evicted).', registers,
    collect() { this.set(read((s) => s.sockets)); },
  });
  const counter = (name: string, help: string, f: (s: HibernationStats) => number) => new Counter({
    name, help, registers,
    collect() { this.reset(); this.inc(read(f)); },
  });
  counter('edge_hibernation_wakes_total', 'Hibernatable WebSocket events that activated their actor (it was not in memory).', (s) => s.wakes);
  counter('edge_hibernation_events_total', 'Hibernatable WebSocket events run on actors (webSocketMessage, webSocketClose, webSocketError).', (s) => s.events);
  counter('edge_hibernation_auto_responses_total', 'Messages the agent answered with an actor\'s setWebSocketAutoResponse() response, without waking it.', (s) => s.autoResponses);
  counter('edge_hibernation_overflow_closes_total', 'Hibernatable WebSockets closed (1013) because their actor did not keep up with their messages.', (s) => s.overflows);
}
