import { parseArgs } from 'node:util';

// Entry point of the `edge` command: one sub-command per module under cli/.

const USAGE = `usage: edge <command> [options]

commands:
  agent         run a node agent: the workers of a directory, or those the operator
                placed in its region (edge agent --help)
  operator      run the operator (edge operator --help)
  dev [DIR] [--port N]
                run a local control plane with NATS, install the CRDs, apply the
                manifests in DIR (default: examples/) and serve its workers on
                127.0.0.1:N (default 8787); edits reload; Ctrl-C stops everything
  help          show this text
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'dev': {
      const { values, positionals } = parseArgs({
        args: rest, allowPositionals: true,
        options: { help: { type: 'boolean', short: 'h' }, port: { type: 'string' } },
      });
      if (values.help) { process.stdout.write(USAGE); return 0; }
      const port = values.port === undefined ? undefined : Number(values.port);
      if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) {
        process.stderr.write(`edge dev: --port must be a TCP port, got "${values.port}"\n`);
        return 2;
      }
      const { runDev } = await import('./dev.js');
      return runDev({ dir: positionals[0] ?? 'examples', port });
    }
    case 'agent': {
      const { runAgent } = await import('./agent.js');
      return runAgent(rest);
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
