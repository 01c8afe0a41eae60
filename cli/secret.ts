import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { API_VERSION, DATA_KEY_PATTERN, DNS_LABEL_PATTERN, JS_IDENTIFIER_PATTERN } from '../common/api/index.js';
import { MANAGED_BY_LABEL, WORKER_LABEL } from '../common/labels.js';
import { crPath, isNotFound, KubeClient, KubeError } from '../operator/runtime/kube-client.js';
import { resolveCluster, type EdgeWorkerObj } from './cluster-client.js';
import { waitReady } from './deploy.js';
import { findWranglerConfig, loadWranglerProject, WranglerConfigError } from './wrangler-config.js';

// `edge secret put NAME`: wrangler's `secret put`. The value (stdin) goes in the Secret
// WORKER-secrets, key NAME, owned by the worker (deleted with it); the worker gets the
// binding env.NAME -> that key. Both writes are server-side applies whose field manager is
// per secret (`edge-secret.NAME`), so one put never removes another's key or binding, and
// `edge deploy` (its own manager, setting no secrets) leaves them all in place.

export const SECRET_USAGE = `usage: edge secret put NAME [--name WORKER] [--env ENV] [--namespace NS]
                       [--kubeconfig FILE] [--no-wait] [--timeout SECONDS]

Reads the value from stdin (one trailing newline is dropped), writes it to the Secret
WORKER-secrets (key NAME) in the worker's namespace, and binds it to the EdgeWorker as
env.NAME (spec.bindings.secrets), then waits until the worker's new version is Ready.
WORKER: --name, else the name of the wrangler project in this directory (with --env, its
environment's worker). The worker must exist (edge deploy it first).
`;

const readStdin = async (): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
};

export async function runSecret(argv: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        name: { type: 'string' }, env: { type: 'string' }, namespace: { type: 'string', short: 'n' }, kubeconfig: { type: 'string' },
        'no-wait': { type: 'boolean' }, timeout: { type: 'string', default: '120' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`edge secret: ${(err as Error).message}\n\n${SECRET_USAGE}`);
    return 2;
  }
  if (values.help) { process.stdout.write(SECRET_USAGE); return 0; }
  const usage = (msg: string) => { process.stderr.write(`edge secret: ${msg}\n\n${SECRET_USAGE}`); return 2; };
  const fail = (msg: string) => { process.stderr.write(`edge secret: ${msg}\n`); return 1; };
  const [verb, key, ...rest] = positionals;
  if (verb !== 'put' || key === undefined || rest.length) return usage('give put NAME');
  if (!new RegExp(JS_IDENTIFIER_PATTERN).test(key) || !new RegExp(DATA_KEY_PATTERN).test(key)) return usage(`"${key}" is not a JavaScript identifier (it becomes env.${key})`);
  let worker = values.name;
  if (!worker) {
    const config = findWranglerConfig(process.cwd());
    if (!config) return usage('give --name WORKER, or run it in a wrangler project');
    try { worker = loadWranglerProject(config, values.env).name; } catch (err) {
      if (err instanceof WranglerConfigError) return fail(err.message);
      throw err;
    }
    process.stdout.write(`worker ${worker} (from ${basename(config)})\n`);
  }
  if (!new RegExp(DNS_LABEL_PATTERN).test(worker)) return usage(`--name must be a DNS label, got "${worker}"`);
  const timeout = Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout < 0) return usage(`--timeout must be a whole number, got "${values.timeout}"`);

  const value = (await readStdin()).replace(/\r?\n$/, '');
  if (value === '') return fail('the value is empty (it is read from stdin: echo VALUE | edge secret put NAME)');

  let target;
  try { target = await resolveCluster(values.kubeconfig); } catch (err) { return fail((err as Error).message); }
  const namespace = values.namespace ?? target.namespace;
  const kube = new KubeClient(target.kc);
  const manager = `edge-secret.${key}`.slice(0, 128);
  const apply = { fieldManager: manager, fieldValidation: 'Strict' };
  const secretName = `${worker}-secrets`;
  let ew: EdgeWorkerObj;
  try {
    ew = await kube.request<EdgeWorkerObj>('GET', crPath('edgeworkers', namespace, worker));
  } catch (err) {
    if (isNotFound(err)) return fail(`EdgeWorker ${namespace}/${worker} not found: deploy it first (edge deploy)`);
    throw err;
  }
  try {
    await kube.request('PATCH', `/api/v1/namespaces/${namespace}/secrets/${secretName}`, {
      patch: 'apply', query: apply,
      body: {
        apiVersion: 'v1', kind: 'Secret', type: 'Opaque',
        metadata: {
          name: secretName, namespace, labels: { [MANAGED_BY_LABEL]: 'edge-secret', [WORKER_LABEL]: worker },
          ownerReferences: [{ apiVersion: API_VERSION, kind: 'EdgeWorker', name: worker, uid: ew.metadata.uid, controller: false, blockOwnerDeletion: false }],
        },
        data: { [key]: Buffer.from(value, 'utf8').toString('base64') },
      },
    });
    process.stdout.write(`wrote key ${key} of Secret ${namespace}/${secretName}\n`);
    const applied = await kube.request<EdgeWorkerObj>('PATCH', crPath('edgeworkers', namespace, worker), {
      patch: 'apply', query: apply,
      body: {
        apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name: worker, namespace },
        spec: { bindings: { secrets: [{ name: key, secretKeyRef: { name: secretName, key } }] } },
      },
    });
    process.stdout.write(`bound env.${key} to EdgeWorker ${namespace}/${worker} (generation ${applied.metadata.generation})\n`);
    if (values['no-wait'] || applied.metadata.generation === ew.metadata.generation) return 0;
    return await waitReady(kube, namespace, worker, applied.metadata.generation, timeout * 1000, target.dev, (s) => process.stdout.write(`${s}\n`));
  } catch (err) {
    if (err instanceof KubeError) return fail(`the apiserver refused it: ${err.message.replace(/^PATCH \S+: \d+ /, '')}`);
    throw err;
  }
}
