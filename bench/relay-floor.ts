import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { Agent, createServer, request, type IncomingMessage } from 'node:http';
import ivm from 'isolated-vm';
import { TRANSFORM_JS } from './workloads.js';

// The floor of the agent's shape, for bench/percore.ts: a front process relaying each
// request with Node's http over a Unix socket to a child process whose Node http server
// answers it with one asynchronous isolated-vm call, and nothing else: no routing table,
// limits, metrics, Request or Response objects, logs. The hello-world call returns its
// text; the JSON call parses the body, runs the bench's transform and serializes it, as the
// worker does. What the agent spends per request beyond this row is its own work; what
// this row spends beyond workerd is the shape's (two Node HTTP stacks and an isolate hop).
//
// `single` is the same isolate call answered by one process on TCP: the floor without the
// process boundary.
//
//   node --import tsx bench/relay-floor.ts front PORT SOCKET   (spawns the back itself)
//   node --import tsx bench/relay-floor.ts single PORT -

const [role, portArg, sock] = process.argv.slice(2);
if (!sock) throw new Error('usage: relay-floor.ts front|back|single PORT SOCKET');

const body = (req: IncomingMessage): Promise<string> => new Promise((resolve, reject) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => resolve(Buffer.concat(chunks).toString()));
  req.on('error', reject);
});

if (role === 'back' || role === 'single') {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = isolate.createContextSync();
  context.evalSync(`${TRANSFORM_JS}
    globalThis.hello = async () => 'hello';
    globalThis.json = async (text) => JSON.stringify(transform(JSON.parse(text)));`);
  const calls = { hello: context.global.getSync('hello', { reference: true }) as ivm.Reference, json: context.global.getSync('json', { reference: true }) as ivm.Reference };
  const server = createServer({ keepAliveTimeout: role === 'single' ? 5_000 : 60_000 }, (req, res) => {
    void body(req).then(async (text) => {
      const json = (req.headers.host ?? '').startsWith('json');
      const out = await (json ? calls.json : calls.hello).apply(undefined, json ? [text] : [], { result: { promise: true, copy: true } }) as string;
      res.writeHead(200, { 'content-type': json ? 'application/json' : 'text/plain;charset=UTF-8', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    }, () => res.destroy());
  });
  if (role === 'single') server.listen(Number(portArg), '127.0.0.1');
  else {
    rmSync(sock, { force: true });
    server.listen(sock, () => process.stdout.write('READY\n'));
  }
} else {
  const back = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'back', '0', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  back.stdout.once('data', () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 256 });
    createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
      const headers: string[] = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
      const preq = request({ socketPath: sock, agent, method: req.method, path: req.url, headers, setHost: false }, (pres) => {
        const out: string[] = [];
        for (let i = 0; i < pres.rawHeaders.length; i += 2) {
          const k = pres.rawHeaders[i]!.toLowerCase();
          if (k !== 'connection' && k !== 'keep-alive') out.push(pres.rawHeaders[i]!, pres.rawHeaders[i + 1]!);
        }
        res.writeHead(pres.statusCode ?? 502, out);
        pres.pipe(res);
      });
      preq.on('error', () => res.destroy());
      req.pipe(preq);
    }).listen(Number(portArg), '127.0.0.1');
  });
  const stop = (): void => { back.kill('SIGKILL'); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  back.on('exit', () => process.exit(1));
}
