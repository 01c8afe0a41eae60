import { execFile, execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { send } from '../agent/agent-harness.js';
import { kubectl } from '../../cli/local/kubectl.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

// `edge dev` as a user runs it, on a fresh copy of examples/: the whole system as real
// processes (control plane, NATS, operator, an agent per region), every example answering,
// an edit re-applied, and Ctrl-C leaving nothing behind. Issue 18: a taken port is an
// error naming its holder; a worker's uncaught exception shows in the terminal and in
// `edge logs` (positions in its YAML file), and in the browser as a page with the stack;
// errors name the YAML file and line; the ai example is not Degraded.

const EDGE = join(REPO_ROOT, 'bin/edge.mjs');
const execFileAsync = promisify(execFile);

/** Running, not merely an exited process waiting to be reaped (a zombie is dead). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \([^)]*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

/** Every descendant of `root` (children, their children, ...), from /proc. */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const c of children.get(p) ?? []) { out.push(c); walk(c); } };
  walk(root);
  return out;
}

const describePid = (p: number) => {
  try { return `${p} ${execFileSync('ps', ['-o', 'stat=,args=', '-p', String(p)], { encoding: 'utf8' }).trim()}`; } catch { return `${p} (gone)`; }
};

function wsOpen(port: number, path: string): Promise<{ ws: WebSocket; got: Record<string, unknown>[] }> {
  return new Promise((resolveOpen, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, [], { headers: { host: 'chat.localhost' } });
    const got: Record<string, unknown>[] = [];
    ws.on('message', (d) => got.push(JSON.parse(String(d)) as Record<string, unknown>));
    ws.once('open', () => resolveOpen({ ws, got }));
    ws.once('error', reject);
  });
}

describe('edge dev', () => {
  const work = mkdtempSync(join(tmpdir(), 'edge-dev-test-'));
  const dir = join(work, 'examples');
  cpSync(join(REPO_ROOT, 'examples'), dir, { recursive: true });
  const state = join(work, 'dev.json');
  const env = { ...process.env, EDGE_DEV_STATE: state };
  afterAll(() => { if (process.env.EDGE_KEEP_TMP !== '1') rmSync(work, { recursive: true, force: true }); });

  // Asynchronous: a blocked event loop would not see an agent close an idle keep-alive
  // connection, and the next request on it would fail with "socket hang up".
  const edge = async (args: string[]) => {
    try {
      const r = await execFileAsync(process.execPath, ['--no-node-snapshot', EDGE, ...args], { env, encoding: 'utf8', timeout: 60_000 });
      return { code: 0, out: r.stdout };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, out: `${e.stdout}${e.stderr}` };
    }
  };

  it('refuses a taken port, naming the process that holds it, before starting anything', async () => {
    const port = await freePort();
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(port, '127.0.0.1', () => r()));
    try {
      const r = await edge(['dev', dir, '--port', String(port)]);
      expect(r.code).toBe(1);
      expect(r.out).toContain(`port ${port} is in use by pid ${process.pid} (`);
      expect(r.out).toMatch(/--port 0 for free ports/);
      expect(r.out).not.toMatch(/starting etcd/);
    } finally {
      holder.close();
    }
  }, 60_000);

  it('runs three regions with the operator, serves every example, re-applies edits and stops cleanly on SIGINT', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--no-node-snapshot', EDGE, 'dev', dir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor('edge dev to be ready', async () => {
        if (child.exitCode !== null) throw new Error(`edge dev exited early:\n${out}`);
        return out.includes('Ctrl-C stops everything');
      }, 180_000, 100);
      // Progress while it started, then the banner.
      expect(out).toMatch(/control plane ready/);
      expect(out).toMatch(/agent isolate-us-east ready on/);
      expect(out).toMatch(/operator ready/);
      const kubeconfig = /^kubeconfig\s+(\S+)$/m.exec(out)?.[1];
      expect(kubeconfig).toBeTruthy();
      expect(out).toMatch(/^NATS\s+nats:\/\/127\.0\.0\.1:\d+ \(a user per role/m);
      expect(out).toContain(`export KUBECONFIG=${kubeconfig}`);
      const portOf = (region: string) => {
        const m = new RegExp(`^  ${region}\\s+http://127\\.0\\.0\\.1:(\\d+)\\s+metrics (http://\\S+/metrics)$`, 'm').exec(out);
        expect(m, `banner line for ${region}`).toBeTruthy();
        return { port: Number(m![1]), metrics: m![2]! };
      };
      const eu = portOf('eu-west');
      const us = portOf('us-east');
      const ap = portOf('ap-south');
      expect(eu.port).toBe(port);
      expect(out).toContain(`http://hello.localhost:${port}/`);
      expect((await fetch(eu.metrics)).status).toBe(200);

      // The manifests are in the apiserver, and Ready.
      const got = await kubectl(kubeconfig!, ['get', 'edgeworkers,durableactors', '-o', 'name']);
      expect(got.stdout.split('\n').filter(Boolean).sort()).toEqual([
        'durableactor.edge.isolates.dev/counters',
        'durableactor.edge.isolates.dev/hibernating-rooms',
        'durableactor.edge.isolates.dev/notebooks',
        'durableactor.edge.isolates.dev/rooms',
        'durableactor.edge.isolates.dev/tickers',
        'edgeworker.edge.isolates.dev/ai',
        'edgeworker.edge.isolates.dev/api',
        'edgeworker.edge.isolates.dev/chat',
        'edgeworker.edge.isolates.dev/code-mode',
        'edgeworker.edge.isolates.dev/counter',
        'edgeworker.edge.isolates.dev/hello',
        'edgeworker.edge.isolates.dev/notes',
        'edgeworker.edge.isolates.dev/rooms',
        'edgeworker.edge.isolates.dev/ticker',
        'edgeworker.edge.isolates.dev/weather-tools',
      ]);
      const status = await edge(['status']);
      expect(status.code).toBe(0);
      expect(status.out).toMatch(/^default\s+hello\s+True\s+(?=.*ap-south 1\/1)(?=.*eu-west 1\/1)(?=.*us-east 1\/1)/m);
      expect(status.out).toMatch(/^default\s+rooms\s+ChatRoom\s+chat\s+us-east\s+True/m);

      // A SQLite-backed actor (examples/notes.yaml): rows written through it, read back, a CHECK refused.
      expect(await (await send(eu.port, 'notes.localhost', '/home', { method: 'POST', body: 'buy milk' })).text()).toBe('{"id":1,"notes":1}');
      expect((await (await send(eu.port, 'notes.localhost', '/home')).json() as { body: string }[]).map((n) => n.body)).toEqual(['buy milk']);
      expect((await send(eu.port, 'notes.localhost', '/home', { method: 'POST', body: '' })).status).toBe(400);

      // Hibernating rooms (examples/rooms.yaml): "ping" is answered "pong" by the agent.
      const member = new WebSocket(`ws://127.0.0.1:${us.port}/ws?room=lobby&name=ada`, [], { headers: { host: 'rooms.localhost' } });
      const heard: string[] = [];
      member.on('message', (d) => heard.push(String(d)));
      await new Promise<void>((r, j) => { member.once('open', () => r()); member.once('error', j); });
      member.send('ping');
      await waitFor('pong from the agent', async () => heard.includes('pong'), 10_000, 50);
      member.close();

      // A streamed actor response and a streamed upload (examples/ticker.yaml, cloudflare:workers).
      expect(await (await send(eu.port, 'ticker.localhost', '/launch?from=2&ms=20')).text()).toBe('launch 1:\nT-2\nT-1\nliftoff\n');
      expect(await (await send(eu.port, 'ticker.localhost', '/count', { method: 'POST', body: 'a\nb\nc\n' })).json()).toEqual({ lines: 3, bytes: 6 });

      // hello world, in every region.
      for (const p of [eu, us, ap]) expect(await (await send(p.port, 'hello.localhost', '/abc')).text()).toBe('Hello from /abc\n');

      // The JSON API and its router.
      const items = await send(us.port, 'api.localhost', '/api/items?tag=tea');
      expect(items.status).toBe(200);
      expect(((await items.json()) as { count: number }).count).toBe(2);
      expect(((await (await send(ap.port, 'api.localhost', '/api/items/3')).json()) as { name: string }).name).toBe('sencha');
      const created = await send(eu.port, 'api.localhost', '/api/items', { method: 'POST', body: JSON.stringify({ name: 'mocha', price: 3.9 }) });
      expect(created.status).toBe(201);
      expect(created.headers.get('location')).toMatch(/^\/api\/items\/[0-9a-f-]{36}$/);
      expect((await send(eu.port, 'api.localhost', '/api/items', { method: 'POST', body: '{"name":""}' })).status).toBe(400);
      const put = await send(eu.port, 'api.localhost', '/api/items', { method: 'PUT' });
      expect(put.status).toBe(405);
      expect(put.headers.get('allow')).toBe('GET, POST');
      expect((await send(eu.port, 'api.localhost', '/api/nope')).status).toBe(404);

      // The counter actor keeps its count, also when called from another region; it is not placed in ap-south.
      const count = async (p: number) => ((await (await send(p, 'counter.localhost', '/apples')).json()) as { value: number }).value;
      const first = await count(eu.port);
      expect(await count(us.port)).toBe(first + 1);
      expect(await count(eu.port)).toBe(first + 2);
      const elsewhere = await send(ap.port, 'counter.localhost', '/apples');
      expect(elsewhere.status).toBe(404);
      expect(await elsewhere.text()).toMatch(/^worker default\/counter is routed for counter\.localhost\/apples but is not placed in region ap-south: it runs in (eu-west, us-east|us-east, eu-west)/);

      // The chat page, and a WebSocket round trip through the room actor from two regions.
      const page = await send(ap.port, 'chat.localhost', '/');
      expect(page.headers.get('content-type')).toContain('text/html');
      expect(await page.text()).toContain('<title>edge chat</title>');
      const alice = await wsOpen(eu.port, '/ws?room=test&name=alice');
      const bob = await wsOpen(ap.port, '/ws?room=test&name=bob');
      await waitFor('bob joined, seen by alice', async () => alice.got.some((m) => m.type === 'joined' && m.name === 'bob'), 15_000, 50);
      alice.ws.send('hi bob');
      await waitFor('bob got the message', async () => bob.got.some((m) => m.type === 'message' && m.text === 'hi bob' && m.name === 'alice'), 15_000, 50);
      alice.ws.close();
      bob.ws.close();
      const history = (await (await send(us.port, 'chat.localhost', '/history?room=test')).json()) as { text: string }[];
      expect(history.map((m) => m.text)).toEqual(['hi bob']);
      // Its console output reaches `edge logs`.
      await waitFor('edge logs chat shows who joined', async () => /us-east\/isolate-us-east log\s+bob joined room test/.test((await edge(['logs', 'chat'])).out), 15_000, 500);

      // env.AI, streamed from the region's own (stand-in) model server.
      const ai = await send(us.port, 'ai.localhost', '/?prompt=hello+there');
      expect(ai.status).toBe(200);
      expect(await ai.text()).toBe('[stand-in model, us-east] echo: hello there\n');
      // The stand-in model servers count as ready: the ai worker is not Degraded.
      await waitFor('ai not Degraded', async () => (await kubectl(kubeconfig!, ['get', 'ew', 'ai', '-o', 'jsonpath={.status.conditions[?(@.type=="Degraded")].status}'])).stdout === 'False', 30_000, 500);
      // Code mode (examples/code-mode.yaml): the model's program, run in a Dynamic Worker with one tool.
      const program = await send(eu.port, 'code-mode.localhost', '/?q=Porto');
      expect(await program.json()).toEqual({ question: 'Porto', answer: { tool: 'forecast', result: { city: 'Porto', celsius: 19, sky: 'cloudy' } } });

      // An edit is re-applied and served; a broken edit is refused while the last good version serves.
      const hello = join(dir, 'hello.yaml');
      writeFileSync(hello, readFileSync(hello, 'utf8').replace('GREETING: Hello', 'GREETING: Bonjour'));
      await waitFor('the edited worker to answer', async () => (await (await send(ap.port, 'hello.localhost', '/x')).text()) === 'Bonjour from /x\n', 60_000, 200);
      await waitFor('the reload reported', async () => /updated worker hello \(generation 2\)/.test(out) && /ready\s+worker hello/.test(out.slice(out.indexOf('updated worker hello'))), 30_000, 100);
      const api = join(dir, 'api.yaml');
      writeFileSync(api, readFileSync(api, 'utf8').replace('const ITEMS = [', 'const ITEMS = [[['));
      await waitFor('the broken edit refused', async () => /refused\s+worker api\s+BundleInvalid: .*does not compile/.test(out), 60_000, 100);
      expect((await send(eu.port, 'api.localhost', '/api/items/1')).status).toBe(200);
      // Its position is a line of api.yaml (the inline source starts after line 20), with the lines around it.
      const refusal = out.slice(out.search(/refused\s+worker api/));
      const edited = readFileSync(api, 'utf8').split('\n').findIndex((l) => l.includes('const ITEMS = [[[')) + 1;
      const at = Number(/\[\S*api\.yaml:(\d+):\d+\]/.exec(refusal)?.[1]);
      expect(at).toBeGreaterThanOrEqual(edited);
      expect(refusal).toMatch(new RegExp(`^\\s+> ${at} \\|`, 'm'));
      expect(refusal).not.toContain('worker:default/api.js');

      // A schema error names the file it is in.
      writeFileSync(join(dir, 'bad.yaml'), 'apiVersion: edge.isolates.dev/v1alpha1\nkind: EdgeWorker\nmetadata:\n  name: bad\nspec:\n  routes: not-a-list\n  source:\n    inline: "export default {}"\n');
      await waitFor('the schema error reported with its file', async () => /kubectl apply found problems[^]*\n\s+bad\.yaml:\n[^]*routes/.test(out), 30_000, 100);
      rmSync(join(dir, 'bad.yaml'));

      // A worker that throws: the terminal, edge logs and the browser.
      writeFileSync(join(dir, 'boom.yaml'), [
        'apiVersion: edge.isolates.dev/v1alpha1', 'kind: EdgeWorker', 'metadata:', '  name: boom', 'spec:',
        '  routes:', '    - host: boom.localhost', '  placement:', '    regions: [eu-west]', '  source:', '    inline: |',
        '      function check(n) {', "        throw new RangeError('too big: ' + n);", '      }',
        '      export default {', '        async fetch(request) {', '          return check(42);', '        },', '      };', '',
      ].join('\n'));
      await waitFor('boom ready', async () => /ready\s+worker boom/.test(out), 60_000, 100);
      const errorPage = await send(eu.port, 'boom.localhost', '/x', { headers: { accept: 'text/html' } });
      expect(errorPage.status).toBe(500);
      const ray = errorPage.headers.get('x-edge-ray')!;
      const html = await errorPage.text();
      expect(html).toContain('<h1>RangeError: too big: 42</h1>');
      expect(html).toMatch(/at check \(worker:default\/boom\.js:2:9\)/);
      // The terminal: the exception with its position in boom.yaml (line 13: the throw) and a code frame.
      await waitFor('the exception in the terminal', async () => out.includes(`(ray ${ray};`), 15_000, 100);
      const shown = out.slice(out.lastIndexOf('[boom eu-west] Uncaught RangeError: too big: 42'));
      expect(shown).toMatch(/at check \(\S*boom\.yaml:13:15\)/);
      expect(shown).toMatch(/at Object\.fetch \(\S*boom\.yaml:17:18\)/);
      expect(shown).toMatch(/> 13 \|\s+throw new RangeError/);
      // edge logs: the exception (YAML positions, the ray), one line per request with --requests, filters, JSON.
      await waitFor('edge logs boom shows the exception', async () => (await edge(['logs', 'boom'])).out.includes(`(ray ${ray})`), 15_000, 500);
      const js = join(work, 'nowhere.js');
      writeFileSync(js, 'export default { fetch() { return new Response("x"); } };\n');
      // Independent commands, run side by side (each is a Node process start).
      const [logged, reqs, oks, searched, jsonLines, nosuch, nowhere] = await Promise.all([
        edge(['logs', 'boom']), edge(['logs', 'boom', '--status', '5xx']), edge(['logs', 'boom', '--status', 'ok']),
        edge(['logs', 'boom', '--requests', '--search', 'nothing-like-this']), edge(['logs', 'boom', '--format', 'json']),
        edge(['logs', 'nosuch']), edge(['deploy', js, '--regions', 'nowhere', '--no-wait']),
      ]);
      expect(logged.code).toBe(0);
      expect(logged.out).toMatch(/eu-west\/isolate-eu-west error Uncaught RangeError: too big: 42\n\s+at check \(\S*boom\.yaml:13:15\)/);
      expect(reqs.out).toMatch(new RegExp(`eu-west/isolate-eu-west GET http://boom\\.localhost/x 500 [\\d.]+ ms cpu [\\d.]+ ms ray ${ray}`));
      expect(oks.out).not.toContain('/x 500');
      expect(searched.out).not.toMatch(/GET|Uncaught/);
      const asJson = jsonLines.out.trim().split('\n').map((l) => JSON.parse(l) as { kind?: string; ray?: string; stack?: string });
      expect(asJson.find((l) => l.kind === 'exception' && l.ray === ray)?.stack).toMatch(/worker:default\/boom\.js:2:9/);
      // A worker that does not exist is an error; a region that does not exist is refused before anything is applied.
      expect(nosuch.code).toBe(1);
      expect(nosuch.out).toContain('there is no EdgeWorker default/nosuch');
      expect(nowhere.code).toBe(1);
      expect(nowhere.out).toContain('--regions: no region "nowhere" in this cluster (regions with isolate nodes: ap-south, eu-west, us-east); nothing was applied');
      expect((await kubectl(kubeconfig!, ['get', 'ew', 'nowhere', '--ignore-not-found', '-o', 'name'])).stdout).toBe('');

      // Every manifest moved out: a friendly word (no kubectl error), and their objects deleted.
      const away = join(work, 'away');
      mkdirSync(away);
      for (const f of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n))) renameSync(join(dir, f), join(away, f));
      await waitFor('the empty directory reported', async () => /no manifests in \S+ \(\*\.yaml, \*\.yml, \*\.json\): add one/.test(out) && /deleted worker boom/.test(out), 30_000, 100);
      expect(out).not.toMatch(/no objects passed to apply/);

      // Ctrl-C: everything stops, nothing is left.
      const pids = descendants(child.pid!);
      expect(pids.length).toBeGreaterThanOrEqual(7);
      const tmp = dirname(kubeconfig!);
      expect(existsSync(state)).toBe(true);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(pids.filter(alive).map(describePid)).toEqual([]);
      expect(out).toContain('nothing left running');
      expect(existsSync(tmp)).toBe(false);
      expect(existsSync(state)).toBe(false);
    } finally {
      child.kill('SIGKILL');
    }
  }, 400_000);
});
