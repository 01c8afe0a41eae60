import { parseArgs } from 'node:util';
import { UsageError } from './flags.js';

// Entry point of the `edge` command: one sub-command per module under cli/.

const USAGE = `usage: edge <command> [options]

commands:
  dev [DIR] [--port N]
                the whole system on this machine: control plane, NATS, the operator
                and an agent per region (eu-west, us-east, ap-south on ports N, N+1,
                N+2; default 8787), the manifests in DIR (default: examples/) applied and
                re-applied when a file changes; Ctrl-C stops everything
  deploy [FILE.js] [--name N] [--regions a,b] [--namespace NS] ...
                bundle a worker with esbuild and create or update its EdgeWorker, then
                wait until it is Ready in every region; without FILE, the wrangler
                project of this directory (edge deploy --help)
  secret put NAME [--name WORKER]
                store stdin in a Secret and bind it as env.NAME (edge secret --help)
  status        EdgeWorkers and DurableActors: regions, readiness (edge status --help)
  logs NAME [-f]
                a worker's console output from every agent (edge logs --help)
  agent         run a node agent: the workers of a directory, or those the operator
                placed in its region (edge agent --help)
  operator      run the operator (edge operator --help)
  help          show this text

deploy, status and logs find the cluster through --kubeconfig / --nats, then
$KUBECONFIG / $EDGE_NATS_URL, then the \`edge dev\` running on this machine.
`;

const DEV_USAGE = `usage: edge dev [DIR] [--port N]

Starts on loopback, as real processes: etcd, kube-apiserver and nats-server (built from
pinned Go modules the first time, into ~/.cache/edge-isolates/bin), the CRDs, Node
objects for three regions (eu-west, us-east, ap-south), an \`edge agent\` per region on
ports N, N+1, N+2 (default 8787; a taken port is replaced by a free one) and \`edge
operator\`. env.AI calls go to a stand-in model server per region that echoes (there is
no GPU). Then it applies every manifest in DIR (default: examples/) with kubectl
(server-side), waits until the workers and actors are Ready, and prints their URLs, the
kubeconfig, the NATS URL and the metrics URLs. Saving a file in DIR re-applies it (a
manifest removed from DIR deletes its objects). Ctrl-C stops everything and removes the
temporary directory (kept with EDGE_KEEP_TMP=1).
`;

export async function main(argv: string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (err) {
    // A command line that cannot run: its usage and exit 2, as Go's flag package does (no stack trace).
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`edge ${argv[0]}: ${err.message}\n${err.usage ? `\n${err.usage}` : `run "edge ${argv[0]} --help" for usage\n`}`);
    return 2;
  }
}

async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'dev': {
      let parsed;
      try {
        parsed = parseArgs({
          args: rest, allowPositionals: true,
          options: { help: { type: 'boolean', short: 'h' }, port: { type: 'string' } },
        });
      } catch (err) {
        process.stderr.write(`edge dev: ${(err as Error).message}\n\n${DEV_USAGE}`);
        return 2;
      }
      const { values, positionals } = parsed;
      if (values.help) { process.stdout.write(DEV_USAGE); return 0; }
      const port = values.port === undefined ? undefined : Number(values.port);
      if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65534)) {
        process.stderr.write(`edge dev: --port must be a TCP port, got "${values.port}"\n`);
        return 2;
      }
      if (positionals.length > 1) { process.stderr.write(`edge dev: one DIR at most\n\n${DEV_USAGE}`); return 2; }
      const { runDev } = await import('./dev.js');
      return runDev({ dir: positionals[0] ?? 'examples', port });
    }
    case 'deploy': {
      const { runDeploy } = await import('./deploy.js');
      return runDeploy(rest);
    }
    case 'secret': {
      const { runSecret } = await import('./secret.js');
      return runSecret(rest);
    }
    case 'status': {
      const { runStatus } = await import('./status.js');
      return runStatus(rest);
    }
    case 'logs': {
      const { runLogs } = await import('./logs.js');
      return runLogs(rest);
    }
    case 'agent': {
      const { runAgent } = await import('./agent.js');
      return runAgent(rest);
    }
    case 'isolate-host': {
      // Not in the usage: `edge agent --isolate-hosts N` starts these (docs/isolate-hosts.md).
      const { runIsolateHost } = await import('../node-agent/isolate-host.js');
      return runIsolateHost();
    }
    case 'operator': {
      const { runOperator } = await import('./operator.js');
      return runOperator(rest);
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`edge: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}
