import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { isCordonShare } from '../common/isolate-hosts.js';
import { createLogger, type Logger } from '../common/log.js';
import { Agent, type IsolateHostConfig } from './agent.js';
import { pinThisProcess } from './hosts/cpu-affinity.js';
import { asToHost, USAGE_REPORT_MS, type FromHost, type ToHost } from './hosts/protocol.js';

// An isolate-host process (`edge isolate-host`, started only by an agent front, never by
// hand; docs/isolate-hosts.md). It boots (loads every module), says so, and waits to be told
// which host to be: a spare waits here until a host dies. Then it is an Agent serving its
// share of namespaces on a Unix socket in the front's private directory, answering the
// front's status, metrics, drain and stop over the IPC channel.

/** The cordon host's niceness: the lowest CPU priority, so the kernel serves every other process first. */
export const CORDON_NICE = 19;

/**
 * Every other host's niceness: one step below the front (nice 0), far above the cordon.
 * When the front and its hosts share a busy core, the front then reads and writes its
 * clients' requests in bursts and a host answers the burst in one event-loop turn, where at
 * equal priority each wake-up preempted the other side after a request or two. Pinned to one
 * core, hello-world through the agent went from 11,600-12,000 to 13,500-14,300 requests
 * per CPU-second (three pairs of runs; docs/agent.md, "Throughput against workerd"). On an
 * idle core nice changes nothing; the cordon stays 22 times lighter (weight 15 against 335).
 */
export const HOST_NICE = 5;

/**
 * Lowers this process's CPU priority. On Linux a nice value is per thread (setpriority on a
 * thread id): every thread there is now, and threads started later inherit it from the one
 * that starts them. Raising one's own nice value needs no privilege (lowering it back would).
 */
function renice(nice: number, log: Logger): void {
  let tids: number[] = [process.pid];
  try { tids = readdirSync('/proc/self/task').map(Number).filter(Number.isInteger); } catch { /* not Linux: the main thread only */ }
  let failed = 0;
  for (const tid of tids) {
    try { setPriority(tid, nice); } catch { failed++; }
  }
  log.info('isolate host lowered its CPU priority', { nice, threads: tids.length, failed });
}

/** Pins the whole process to `cpu` (hosts/cpu-affinity.ts); a host that cannot be pinned still serves, unpinned. */
function pin(cpu: number, log: Logger): boolean {
  try {
    log.info('isolate host pinned to its CPU', { cpu, threads: pinThisProcess(cpu) });
    return true;
  } catch (err) {
    log.warn('isolate host could not be pinned to its CPU; it runs unpinned', { cpu, error: err });
    return false;
  }
}

/** Exit code when the front went away (its IPC channel closed): nothing routes here any more. */
const EXIT_FRONT_GONE = 70;

export async function runIsolateHost(): Promise<number> {
  if (!process.send) {
    process.stderr.write('edge isolate-host is started by `edge agent --isolate-hosts N`, not by hand\n');
    return 2;
  }
  const post = (m: FromHost) => { if (process.connected) process.send!(m); };
  // A signal to the agent's process group (Ctrl-C, a pod's SIGTERM) is the front's to act
  // on: it drains and stops its hosts over this channel, in order.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);
  process.on('disconnect', () => process.exit(EXIT_FRONT_GONE));

  const start = await new Promise<Extract<ToHost<IsolateHostConfig>, { type: 'start' }>>((resolveStart) => {
    const onStart = (raw: unknown) => {
      const m = asToHost<IsolateHostConfig>(raw);
      // A spare that is never needed.
      if (m?.type === 'stop') process.exit(0);
      if (m?.type !== 'start') return;
      process.off('message', onStart);
      resolveStart(m);
    };
    process.on('message', onStart);
    post({ type: 'booted' });
  });

  const { config, index, count, socketDir, cpu } = start;
  const source = config.source;
  const cordon = isCordonShare({ index, count });
  const log = createLogger({ component: 'isolate-host', host: cordon ? 'cordon' : index, ...(source.kind === 'nats' ? { region: source.region, node: source.node } : {}) });
  // Before any isolate exists: isolated-vm's threads, started later, inherit the CPU and the nice value.
  const pinned = cpu !== undefined && pin(cpu, log);
  renice(cordon ? CORDON_NICE : HOST_NICE, log);
  const socketPath = join(socketDir, `h${index}.${process.pid}.sock`);
  const framesPath = join(socketDir, `h${index}.${process.pid}.f.sock`);
  let agent: Agent;
  try {
    agent = await Agent.start({ ...config, log, listen: { path: socketPath } });
    await agent.server.front.listenFrames(framesPath);
  } catch (err) {
    log.error('isolate host failed to start', { error: err });
    process.exit(1);
  }
  const server = agent.server;
  server.routeListeners.add((routes) => post({ type: 'routes', routes }));
  // The front's cordon decides with these (hosts/cordon.ts); an idle host says nothing.
  setInterval(() => {
    const usage = server.takeUsage();
    if (Object.keys(usage).length > 0) post({ type: 'usage', usage });
  }, USAGE_REPORT_MS).unref();
  process.on('message', (raw: unknown) => {
    const m = asToHost(raw);
    if (!m) return;
    switch (m.type) {
      case 'status':
        post({ type: 'status', id: m.id, status: { ready: server.ready, workers: server.status(), actors: agent.actors() } });
        return;
      case 'metrics':
        void server.metrics.registry.getMetricsAsJSON().then((metrics) => post({ type: 'metrics', id: m.id, metrics }));
        return;
      case 'cordon':
        agent.setCordoned(m.namespaces);
        return;
      case 'drain':
        void agent.drain().then(() => post({ type: 'drained' }), (err: unknown) => {
          log.error('isolate host drain failed', { error: err });
          post({ type: 'drained' });
        });
        return;
      case 'stop':
        void agent.stop().finally(() => process.exit(0));
        return;
      case 'start':
        return;
    }
  });
  post({ type: 'ready', socketPath, framesPath, routes: server.routes(), ...(pinned ? { cpu } : {}) });
  // Runs until the front says stop (or goes away): the IPC channel keeps the process alive.
  return new Promise<number>(() => undefined);
}
