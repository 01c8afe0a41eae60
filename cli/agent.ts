import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../common/log.js';
import { Agent, DEFAULT_MAX_ISOLATES_PER_WORKER } from '../node-agent/agent.js';
import { startAdminServer } from '../node-agent/admin-server.js';
import type { NatsConnection } from 'nats';
import { DNS_LABEL_PATTERN } from '../common/api/index.js';
import { connectNats, DEFAULT_PRESENCE_TTL_MS, openBuckets, type EdgeBuckets } from '../common/nats.js';
import { DirectorySource, type DesiredStateSource } from '../node-agent/desired-state.js';
import { NatsSource } from '../node-agent/nats-source.js';
import { AgentPresence } from '../node-agent/presence.js';

// `edge agent --workers DIR ...` (standalone) or `edge agent --nats URL --region R --node N ...`
// (following the operator).

export const AGENT_USAGE = `usage: edge agent (--workers DIR | --nats URL --region R --node N)
                  [--listen HOST:PORT] [--admin HOST:PORT] [--advertise URL]
                  [--agent-name NAME] [--presence-ttl-ms N] [--ai-url-template T]
                  [--max-body-mb N] [--pool-size N] [--max-isolates-per-worker N]

With --workers, serves every EdgeWorker manifest in DIR (reloading when it changes).
With --nats, serves the workers the operator placed in region R, announces itself
(presence with a TTL) and reports per-worker readiness. Requests are routed by Host
header and path prefix. /metrics, /healthz, /readyz and /status are on the admin port.

--ai-url-template: how to reach a model server's Service; {service}, {namespace},
{port} and {binding} are substituted (default
http://{service}.{namespace}.svc.cluster.local:{port}).
`;

function hostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) throw new Error(`${flag} must be HOST:PORT, got "${value}"`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

export async function runAgent(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      workers: { type: 'string' },
      nats: { type: 'string' },
      region: { type: 'string' },
      node: { type: 'string' },
      'agent-name': { type: 'string' },
      advertise: { type: 'string' },
      'presence-ttl-ms': { type: 'string', default: String(DEFAULT_PRESENCE_TTL_MS) },
      'ai-url-template': { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:8080' },
      admin: { type: 'string', default: '127.0.0.1:9090' },
      'max-body-mb': { type: 'string', default: '100' },
      'pool-size': { type: 'string', default: '4' },
      'max-isolates-per-worker': { type: 'string', default: String(DEFAULT_MAX_ISOLATES_PER_WORKER) },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(AGENT_USAGE); return 0; }
  const fail = (msg: string) => { process.stderr.write(`edge agent: ${msg}\n\n${AGENT_USAGE}`); return 2; };
  if (!values.workers === !values.nats) return fail('give exactly one of --workers DIR or --nats URL');
  if (values.nats && (!values.region || !values.node)) return fail('--nats needs --region and --node');
  if (values.region && !new RegExp(DNS_LABEL_PATTERN).test(values.region)) return fail(`--region must be a DNS label, got "${values.region}"`);
  const log = createLogger({ component: 'agent', ...(values.region ? { region: values.region, node: values.node } : {}) });
  const listen = hostPort('--listen', values.listen);
  const admin = hostPort('--admin', values.admin);
  const num = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${flag} must be a non-negative number, got "${v}"`);
    return n;
  };
  let source: DesiredStateSource;
  let nc: NatsConnection | undefined;
  let buckets: EdgeBuckets | undefined;
  if (values.workers) {
    const dir = resolve(values.workers);
    if (!existsSync(dir)) { process.stderr.write(`edge agent: no such directory: ${dir}\n`); return 2; }
    source = new DirectorySource(dir, log);
  } else {
    nc = await connectNats(values.nats!, `edge-agent ${values.region}/${values.node}`);
    buckets = await openBuckets(nc);
    const template = values['ai-url-template'];
    source = new NatsSource({
      buckets, region: values.region!, log,
      ...(template ? { aiUrl: (ref, binding) => template.replaceAll('{service}', ref.service).replaceAll('{namespace}', ref.namespace).replaceAll('{port}', String(ref.port)).replaceAll('{binding}', binding) } : {}),
    });
  }
  const agent = new Agent({
    source,
    log,
    metricLabels: values.region ? { region: values.region, node: values.node! } : undefined,
    maxBodyBytes: num('--max-body-mb', values['max-body-mb']) * 1024 * 1024,
    poolSize: num('--pool-size', values['pool-size']),
    maxIsolatesPerWorker: num('--max-isolates-per-worker', values['max-isolates-per-worker']),
  });
  const adminServer = await startAdminServer(agent, admin.port, admin.host);
  const port = await agent.start(listen.port, listen.host);
  let presence: AgentPresence | undefined;
  if (nc && buckets) {
    presence = new AgentPresence({
      nc, buckets, log,
      agent: values['agent-name'] ?? values.node!, node: values.node!, region: values.region!,
      address: values.advertise ?? `http://${listen.host}:${port}`,
      ttlMs: num('--presence-ttl-ms', values['presence-ttl-ms']),
      status: () => agent.status(),
    });
    await presence.start();
  }
  log.info('agent listening', { http: `http://${listen.host}:${port}`, admin: `http://${admin.host}:${adminServer.port}`, workers: values.workers ?? values.nats });
  await new Promise<void>((resolveStop) => {
    const stop = () => resolveStop();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log.info('agent stopping');
  await presence?.stop();
  await agent.stop();
  await nc?.drain();
  adminServer.server.close();
  return 0;
}
