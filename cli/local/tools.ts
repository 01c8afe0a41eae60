import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Where the real components built by scripts/tools.sh live. Versions are read from
// tools/versions.env, the one place they are pinned.

/**
 * The repository root: the nearest folder above this module with a package.json, two up from
 * cli/local/tools.ts and three from its build (dist/cli/local/tools.js).
 */
export const REPO_ROOT = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

export type Tool = 'kube-apiserver' | 'etcd' | 'nats-server' | 'helm';
const VERSION_VARS: Record<Tool, string> = {
  'kube-apiserver': 'KUBE_VERSION',
  etcd: 'ETCD_VERSION',
  'nats-server': 'NATS_SERVER_VERSION',
  helm: 'HELM_VERSION',
};

export function toolVersions(): Record<Tool, string> {
  const env = new Map<string, string>();
  for (const line of readFileSync(join(REPO_ROOT, 'tools/versions.env'), 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(\S+)/.exec(line);
    if (m?.[1] && m[2]) env.set(m[1], m[2]);
  }
  const out = {} as Record<Tool, string>;
  for (const [tool, key] of Object.entries(VERSION_VARS) as [Tool, string][]) {
    const v = env.get(key);
    if (!v) throw new Error(`tools/versions.env has no ${key}`);
    out[tool] = v;
  }
  return out;
}

export function toolsDir(): string {
  return process.env.EDGE_TOOLS_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'edge-isolates/bin');
}

const isExecutable = (p: string) => {
  try { accessSync(p, constants.X_OK); return true; } catch { return false; }
};

/**
 * Path of a cached tool, building the missing ones first (minutes, once). A binary without
 * the recipe stamp scripts/tools.sh writes beside it predates the stamps: tools.sh decides
 * whether it is still good (it stamps it) or is rebuilt. A stamp from an older recipe is
 * caught by tools.sh itself, which `make dev` and `make test` run first.
 */
export function toolPath(tool: Tool): string {
  const p = join(toolsDir(), `${tool}-${toolVersions()[tool]}`);
  if (isExecutable(p) && existsSync(`${p}.recipe`)) return p;
  const r = spawnSync('bash', [join(REPO_ROOT, 'scripts/tools.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !isExecutable(p)) {
    throw new Error(`${tool} is not built and scripts/tools.sh failed (exit ${r.status ?? r.signal}); see its output above`);
  }
  return p;
}

/** The tools among `tools` that are not built yet. */
export function missingTools(tools: Tool[]): Tool[] {
  const v = toolVersions();
  return tools.filter((t) => !isExecutable(join(toolsDir(), `${t}-${v[t]}`)));
}

/**
 * Builds the missing ones of `tools` with scripts/tools.sh (minutes, once), passing its
 * progress lines to `progress` and saying every 30 s that it is still at it. Resolves
 * at once when everything is there.
 */
export async function buildTools(tools: Tool[], progress: (line: string) => void): Promise<void> {
  const missing = missingTools(tools);
  if (missing.length === 0) return;
  progress(`building ${missing.join(', ')} from pinned Go modules into ${toolsDir()} (first run only; about 5 minutes on 2 cores)`);
  const t0 = Date.now();
  const child = spawn('bash', [join(REPO_ROOT, 'scripts/tools.sh'), ...missing], { stdio: ['ignore', 'pipe', 'pipe'] });
  const tick = setInterval(() => progress(`  still building (${Math.round((Date.now() - t0) / 1000)} s)...`), 30_000);
  let buf = '';
  const onData = (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const l of lines) if (l.trim()) progress(`  ${l}`);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const code = await new Promise<number | null>((r) => { child.on('close', (c) => r(c)); child.on('error', () => r(-1)); });
  clearInterval(tick);
  if (buf.trim()) progress(`  ${buf}`);
  const still = missingTools(tools);
  if (code !== 0 || still.length > 0) throw new Error(`scripts/tools.sh failed (exit ${code}); ${still.join(', ')} not built: see its output above`);
  progress(`built ${missing.join(', ')} in ${Math.round((Date.now() - t0) / 1000)} s`);
}
