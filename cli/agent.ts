import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../common/log.js';
import { Agent, DEFAULT_MAX_ISOLATES_PER_WORKER } from '../node-agent/agent.js';
import { startAdminServer } from '../node-agent/admin-server.js';
import { DirectorySource } from '../node-agent/desired-state.js';

// `edge agent --workers DIR --listen 127.0.0.1:8080 [--admin 127.0.0.1:9090]`

export const AGENT_USAGE = `usage: edge agent --workers DIR [--listen HOST:PORT] [--admin HOST:PORT]
                  [--max-body-mb N] [--pool-size N] [--max-isolates-per-worker N]

Serves every EdgeWorker manifest in DIR (reloading when it changes), routing requests by
Host header and path prefix. /metrics, /healthz, /readyz and /status are on the admin port.
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
      listen: { type: 'string', default: '127.0.0.1:8080' },
      admin: { type: 'string', default: '127.0.0.1:9090' },
      'max-body-mb': { type: 'string', default: '100' },
      'pool-size': { type: 'string', default: '4' },
      'max-isolates-per-worker': { type: 'string', default: String(DEFAULT_MAX_ISOLATES_PER_WORKER) },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(AGENT_USAGE); return 0; }
  const log = createLogger({ component: 'agent' });
  if (!values.workers) { process.stderr.write(`edge agent: --workers DIR is required\n\n${AGENT_USAGE}`); return 2; }
  const dir = resolve(values.workers);
  if (!existsSync(dir)) { process.stderr.write(`edge agent: no such directory: ${dir}\n`); return 2; }
  const listen = hostPort('--listen', values.listen);
  const admin = hostPort('--admin', values.admin);
  const num = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${flag} must be a non-negative number, got "${v}"`);
    return n;
  };
  const agent = new Agent({
    source: new DirectorySource(dir, log),
    log,
    maxBodyBytes: num('--max-body-mb', values['max-body-mb']) * 1024 * 1024,
    poolSize: num('--pool-size', values['pool-size']),
    maxIsolatesPerWorker: num('--max-isolates-per-worker', values['max-isolates-per-worker']),
  });
  const adminServer = await startAdminServer(agent, admin.port, admin.host);
  const port = await agent.start(listen.port, listen.host);
  log.info('agent listening', { http: `http://${listen.host}:${port}`, admin: `http://${admin.host}:${adminServer.port}`, workers: dir });
  await new Promise<void>((resolveStop) => {
    const stop = () => resolveStop();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log.info('agent stopping');
  await agent.stop();
  adminServer.server.close();
  return 0;
}
