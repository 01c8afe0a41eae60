import type { AgentReports, AgentView, ViewChange } from '../agent-view.js';
import type { AgentReport, Presence, WorkerReport } from '../nats.js';

// Live agents and their reports, set by the test: no presence TTL, no NATS. An agent is
// live from setAgent until removeAgent; setAgents replaces them all and tells onChange
// listeners (the hash ring rebuilds on it).

export class FakeAgentView implements AgentReports, Pick<AgentView, 'agents' | 'onChange'> {
  private readonly live = new Map<string, Presence>();
  private readonly reports = new Map<string, AgentReport>();
  private readonly listeners: ((c: ViewChange) => void)[] = [];

  constructor(initial: readonly Presence[] = []) {
    for (const p of initial) this.live.set(p.agent, p);
  }

  setAgent(p: Presence): void { this.live.set(p.agent, p); }
  removeAgent(agent: string): void { this.live.delete(agent); }

  setAgents(next: readonly Presence[]): void {
    this.live.clear();
    for (const p of next) this.live.set(p.agent, p);
    for (const l of this.listeners) l({ all: true });
  }

  onChange(cb: (c: ViewChange) => void): void { this.listeners.push(cb); }

  /** Sets what `agent` says about one worker (workerKey form). */
  setWorkerReport(agent: string, worker: string, report: WorkerReport): void {
    const r = this.reportOf(agent);
    r.workers[worker] = report;
  }

  /** Sets how many actors of one DurableActor (workerKey form) are active on `agent`. */
  setActiveActors(agent: string, actor: string, active: number): void {
    this.reportOf(agent).actors[actor] = { active };
  }

  agents(region?: string): Presence[] {
    return [...this.live.values()].filter((p) => region === undefined || p.region === region);
  }

  reportsFor(worker: string, region: string): { agent: string; report: WorkerReport | undefined }[] {
    return this.agents(region).map((p) => ({ agent: p.agent, report: this.reports.get(p.agent)?.workers[worker] }));
  }

  reportsForActors(actor: string, region: string): { agent: string; active: number }[] {
    return this.agents(region).map((p) => ({ agent: p.agent, active: this.reports.get(p.agent)?.actors[actor]?.active ?? 0 }));
  }

  private reportOf(agent: string): AgentReport {
    let r = this.reports.get(agent);
    if (!r) {
      r = { agent, region: this.live.get(agent)?.region ?? 'unknown', seq: 0, workers: {}, actors: {} };
      this.reports.set(agent, r);
    }
    r.seq++;
    return r;
  }
}
