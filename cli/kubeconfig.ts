import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import type { RequestOptions } from 'node:https';
import { parse } from 'yaml';
import type { KubeCredentials } from '../operator/runtime/kube-client.js';

// The kubeconfig of `edge status`, `deploy` and `secret`, read without @kubernetes/client-node:
// loading client-node costs about 0.7 s of CPU, more than the rest of such a command. Covers
// what kubeconfigs of certificates and tokens use (those of `edge dev`, kind, kubeadm, most
// managed clusters' admin configs); a user authenticating through an exec plugin or an
// auth-provider, impersonating, or a cluster behind a proxy gets undefined, and the caller
// loads client-node, which does all of that.

interface NamedCluster { name: string; cluster: Record<string, unknown> }
interface NamedUser { name: string; user?: Record<string, unknown> }
interface NamedContext { name: string; context: { cluster: string; user: string; namespace?: string } }
interface KubeconfigFile {
  clusters?: NamedCluster[]; users?: NamedUser[]; contexts?: NamedContext[]; 'current-context'?: string;
}

/** What the light loader understands; any other key in the user or cluster sends the caller to client-node. */
const CLUSTER_KEYS = new Set(['server', 'certificate-authority', 'certificate-authority-data', 'insecure-skip-tls-verify', 'tls-server-name', 'extensions']);
const USER_KEYS = new Set(['client-certificate', 'client-certificate-data', 'client-key', 'client-key-data', 'token', 'tokenFile', 'username', 'password', 'extensions']);

export interface LightKubeconfig { credentials: KubeCredentials; namespace: string; context: string }

/** The files kubectl would read: --kubeconfig, else each of $KUBECONFIG, else ~/.kube/config. */
export function kubeconfigFiles(flag: string | undefined): string[] {
  if (flag) return [flag];
  if (process.env.KUBECONFIG) return process.env.KUBECONFIG.split(':').filter((f) => f !== '');
  return [join(homedir(), '.kube', 'config')];
}

/**
 * The current context of these kubeconfig files (merged as kubectl merges them: the first
 * file to name a cluster, user or context, or to set current-context, wins), or undefined
 * when its user or cluster needs client-node. Relative paths are relative to the file that
 * holds them, as kubectl reads them. Throws when a file given by name is unreadable or names
 * no current context.
 */
export function loadKubeconfig(files: string[]): LightKubeconfig | undefined {
  const clusters = new Map<string, { cluster: Record<string, unknown>; dir: string }>();
  const users = new Map<string, { user: Record<string, unknown>; dir: string }>();
  const contexts = new Map<string, NamedContext['context']>();
  let current: string | undefined;
  for (const file of files) {
    // $KUBECONFIG may list files that do not exist (kubectl skips them); a flag's file must.
    if (files.length > 1 && !existsSync(file)) continue;
    const doc = (parse(readFileSync(file, 'utf8')) ?? {}) as KubeconfigFile;
    const dir = dirname(file);
    for (const c of doc.clusters ?? []) if (!clusters.has(c.name)) clusters.set(c.name, { cluster: c.cluster ?? {}, dir });
    for (const u of doc.users ?? []) if (!users.has(u.name)) users.set(u.name, { user: u.user ?? {}, dir });
    for (const c of doc.contexts ?? []) if (!contexts.has(c.name)) contexts.set(c.name, c.context);
    current ??= doc['current-context'] || undefined;
  }
  if (!current) throw new Error(`no current-context in ${files.join(', ')}`);
  const ctx = contexts.get(current);
  if (!ctx) throw new Error(`context "${current}" is not in ${files.join(', ')}`);
  const cluster = clusters.get(ctx.cluster);
  if (!cluster || typeof cluster.cluster.server !== 'string') throw new Error(`context "${current}": no cluster "${ctx.cluster}" with a server`);
  const user = users.get(ctx.user) ?? { user: {}, dir: cluster.dir };
  if (Object.keys(cluster.cluster).some((k) => !CLUSTER_KEYS.has(k)) || Object.keys(user.user).some((k) => !USER_KEYS.has(k))) return undefined;
  return { credentials: new StaticCredentials(cluster.cluster, cluster.dir, user.user, user.dir), namespace: ctx.namespace || 'default', context: current };
}

/** file (relative to dir), else base64 data, else undefined. */
function fileOrData(file: unknown, data: unknown, dir: string): Buffer | undefined {
  if (typeof file === 'string' && file) return readFileSync(isAbsolute(file) ? file : join(dir, file));
  if (typeof data === 'string' && data) return Buffer.from(data, 'base64');
  return undefined;
}

/** A cluster and user of certificates, a token (or token file) or a password. */
class StaticCredentials implements KubeCredentials {
  private readonly server: string;
  private readonly tls: Pick<RequestOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'>;

  constructor(cluster: Record<string, unknown>, clusterDir: string, private readonly user: Record<string, unknown>, private readonly userDir: string) {
    this.server = cluster.server as string;
    this.tls = {};
    const ca = fileOrData(cluster['certificate-authority'], cluster['certificate-authority-data'], clusterDir);
    if (ca) this.tls.ca = ca;
    if (cluster['insecure-skip-tls-verify'] === true) this.tls.rejectUnauthorized = false;
    if (typeof cluster['tls-server-name'] === 'string') this.tls.servername = cluster['tls-server-name'];
    const cert = fileOrData(user['client-certificate'], user['client-certificate-data'], userDir);
    const key = fileOrData(user['client-key'], user['client-key-data'], userDir);
    if (cert) this.tls.cert = cert;
    if (key) this.tls.key = key;
  }

  getCurrentCluster(): { server: string } { return { server: this.server }; }

  applyToHTTPSOptions(opts: RequestOptions): Promise<void> {
    Object.assign(opts, this.tls);
    const headers = (opts.headers ??= {}) as Record<string, string>;
    // A token file is read per request: it may be rotated under a long-running command.
    const tokenFile = this.user.tokenFile;
    const token = typeof tokenFile === 'string' && tokenFile
      ? readFileSync(isAbsolute(tokenFile) ? tokenFile : join(this.userDir, tokenFile), 'utf8').trim()
      : this.user.token;
    if (typeof token === 'string' && token) headers.Authorization = `Bearer ${token}`;
    else if (typeof this.user.username === 'string') headers.Authorization = `Basic ${Buffer.from(`${this.user.username}:${String(this.user.password ?? '')}`).toString('base64')}`;
    return Promise.resolve();
  }
}
