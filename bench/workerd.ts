import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { maybePinned } from './cpu.js';
import { Proc } from './procs.js';

// workerd, the peer: capnp text configs and a spawn that waits for workerd's own
// "listening" message on --control-fd (so no polling is counted in its start time).

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The native binary from the platform package (not a JS launcher, which would add a node start to every spawn). */
export function workerdBinary(): string {
  const pkg = ({ 'linux x64': 'workerd-linux-64', 'linux arm64': 'workerd-linux-arm64', 'darwin arm64': 'workerd-darwin-arm64', 'darwin x64': 'workerd-darwin-64' } as Record<string, string>)[`${platform()} ${arch()}`];
  if (pkg) {
    try {
      const req = createRequire(join(ROOT, 'node_modules', 'workerd', 'package.json'));
      const bin = join(dirname(req.resolve(`@cloudflare/${pkg}/package.json`)), 'bin', 'workerd');
      if (existsSync(bin)) return bin;
    } catch { /* fall through */ }
  }
  const shim = join(ROOT, 'node_modules', '.bin', 'workerd');
  if (existsSync(shim)) return shim;
  throw new Error('workerd is not installed: `npm run bench` installs it (npm install --no-save workerd@1.20261117.1)');
}

export function workerdVersion(bin: string): string {
  return execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 15_000 }).trim();
}

/** A capnp text string literal. */
export function capnpString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

export interface WdWorker { name: string; source: string; bindings?: { name: string; service: string }[] }
export interface WdSocket { name: string; service: string; address?: string }

const COMPAT = '2025-01-01';

export function capnpConfig(workers: WdWorker[], sockets: WdSocket[]): string {
  const services = workers.map((w) => {
    const bindings = w.bindings?.length
      ? `, bindings = [${w.bindings.map((b) => `(name = ${capnpString(b.name)}, service = ${capnpString(b.service)})`).join(', ')}]`
      : '';
    return `    (name = ${capnpString(w.name)}, worker = (modules = [(name = "worker.js", esModule = ${capnpString(w.source)})], compatibilityDate = "${COMPAT}"${bindings})),`;
  });
  const socks = sockets.map((s) => `    (name = ${capnpString(s.name)}, address = ${capnpString(s.address ?? '127.0.0.1:0')}, http = (), service = ${capnpString(s.service)}),`);
  return [
    'using Workerd = import "/workerd/workerd.capnp";',
    '',
    'const config :Workerd.Config = (',
    '  services = [',
    ...services,
    '  ],',
    '  sockets = [',
    ...socks,
    '  ],',
    ');',
    '',
  ].join('\n');
}

/**
 * The router used when many workers sit behind one socket (the memory row): it forwards by
 * Host `<name>.bench` over a service binding `svc_<name>`, the way the agent routes by Host.
 */
export const ROUTER_SOURCE = `export default {
  async fetch(request, env) {
    const host = (request.headers.get("host") || "").split(":")[0];
    const svc = host.endsWith(".bench") ? env["svc_" + host.slice(0, -6)] : undefined;
    if (!svc) return new Response("no worker for host " + host, { status: 404 });
    return svc.fetch(request);
  }
}
`;

export function routedConfig(workers: { name: string; source: string }[]): string {
  const router: WdWorker = { name: 'router', source: ROUTER_SOURCE, bindings: workers.map((w) => ({ name: `svc_${w.name}`, service: w.name })) };
  return capnpConfig([router, ...workers], [{ name: 'http', service: 'router' }]);
}

export interface Workerd {
  proc: Proc;
  /** Port of each socket, by socket name, as workerd reported it. */
  ports: Map<string, number>;
  /** Milliseconds from spawn() to the last expected socket listening. */
  spawnToListenMs: number;
}

/**
 * Spawns `workerd serve config`, resolves once every socket in `socketNames` listens; with
 * `cpus`, under taskset on those CPUs (bench/percore.ts).
 */
export async function startWorkerd(bin: string, configPath: string, configText: string, socketNames: string[], logFile: string, timeoutMs: number, name = 'workerd', extraArgs: string[] = [], cpus?: string): Promise<Workerd> {
  writeFileSync(configPath, configText);
  const [cmd, args] = maybePinned(cpus, bin, ['serve', configPath, '--control-fd=3', ...extraArgs]);
  const proc = new Proc(name, cmd, args, { logFile, controlPipe: true });
  const ports = new Map<string, number>();
  const lines = createInterface({ input: proc.control });
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolveListen, reject) => {
      timer = setTimeout(() => reject(new Error(`${name}: sockets not listening after ${timeoutMs} ms; log:\n${proc.logTail()}`)), timeoutMs);
      void proc.wait().then(() => reject(new Error(`${name} exited before listening; log:\n${proc.logTail()}`)));
      lines.on('line', (line) => {
        try {
          const msg = JSON.parse(line) as { event?: string; socket?: string; port?: number };
          if (msg.event === 'listen' && msg.socket && msg.port) ports.set(msg.socket, msg.port);
        } catch { /* not ours */ }
        if (socketNames.every((s) => ports.has(s))) resolveListen();
      });
    });
  } catch (err) {
    await proc.stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  const spawnToListenMs = performance.now() - proc.spawnedAt;
  return { proc, ports, spawnToListenMs };
}
