import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createLogger, type LogFields } from '../../common/log.js';
import { inferenceName } from '../../common/model-servers.js';
import { Agent } from '../../node-agent/agent.js';
import { DirectorySource, STANDALONE_REGION, standaloneActorUid } from '../../node-agent/control/desired-state.js';
import type { DesiredWorker } from '../../node-agent/serving/desired.js';
import { startOpenAiServer, type OpenAiServer } from '../../cli/local/model-stub.js';
import { send } from './agent-harness.js';

// `edge agent --workers DIR` resolves bindings as the operator does (common/resolve-bindings.ts):
// an ai binding reaches a model server, and an actor binding is there (with no actor
// runtime in this mode its calls fail naming the binding). Both used to be dropped silently.

const MODEL = 'llama-3.1-8b';

const edgeWorker = (name: string, bindings: Record<string, unknown>, source: string) => stringify({
  apiVersion: 'edge.isolates.dev/v1alpha1',
  kind: 'EdgeWorker',
  metadata: { name },
  spec: {
    routes: [{ host: `${name}.test` }],
    placement: { minWarmIsolates: 1 },
    limits: { cpuMsPerRequest: 50, memoryMiB: 64, subrequests: 5, wallMsPerRequest: 10_000 },
    bindings,
    source: { inline: source },
  },
});

const durableActor = (name: string) => stringify({
  apiVersion: 'edge.isolates.dev/v1alpha1',
  kind: 'DurableActor',
  metadata: { name },
  spec: { workerRef: { name: 'chat' }, className: 'Counter' },
});

const CHAT = `export default { async fetch(request, env) {
  const q = new URL(request.url).searchParams.get('q');
  const answer = await env.AI.run('${MODEL}', { messages: [{ role: 'user', content: q }] });
  let actorCall;
  try {
    await env.COUNTER.get(env.COUNTER.idFromName('room-1')).fetch('http://actor/');
    actorCall = 'answered';
  } catch (err) {
    actorCall = String(err.message);
  }
  return Response.json({ answer: answer.response, actor: typeof env.COUNTER, idFromName: typeof env.COUNTER.idFromName, actorCall });
} };
export class Counter { fetch() { return new Response('counted'); } }`;

describe('edge agent --workers: ai and actor bindings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bindings-'));
  const logs: LogFields[] = [];
  let model: OpenAiServer;
  let agent: Agent;

  beforeAll(async () => {
    model = await startOpenAiServer({ model: MODEL, label: 'standalone-model' });
    writeFileSync(join(dir, 'chat.yaml'), [
      edgeWorker('chat', { ai: [{ name: 'AI', model: MODEL }], actors: [{ name: 'COUNTER', actor: 'counter' }] }, CHAT),
      durableActor('counter'),
    ].join('---\n'));
    // Refers to a DurableActor that no manifest defines: not served, and the log says which binding.
    writeFileSync(join(dir, 'orphan.yaml'), edgeWorker('orphan', { actors: [{ name: 'ROOMS', actor: 'rooms' }] }, 'export default { fetch() { return new Response("orphan"); } };'));
    agent = await Agent.start({
      log: createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug'),
      source: { kind: 'directory', dir },
      agentName: 'standalone',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      // No {service}: every ai binding goes to this one server.
      aiUrlTemplate: model.url,
      actorLogReplicas: 1,
      maxBodyBytes: 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 2,
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await model?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('env.AI reaches the model server, and env.COUNTER is a namespace whose calls fail naming the binding', async () => {
    const res = await send(agent.port, 'chat.test', '/?q=hello%20there');
    const body = await res.text();
    expect(res.status, body).toBe(200);
    expect(JSON.parse(body)).toEqual({
      answer: '[standalone-model] echo: hello there',
      actor: 'object',
      idFromName: 'function',
      actorCall: 'env.COUNTER.get(id).fetch(): actors are not available on this agent',
    });
    expect(model.requests.map((r) => [r.path, (r.body as { model?: string }).model])).toEqual([['/v1/chat/completions', MODEL]]);
  });

  it('keys the actor binding by a uid derived from the DurableActor manifest', () => {
    expect(agent.server.workerDefinition('default/chat')?.env.actors).toEqual({
      COUNTER: { namespace: 'default', actor: 'counter', uid: standaloneActorUid('default', 'counter') },
    });
  });

  it('does not serve a worker whose DurableActor is missing, and logs the field and binding', async () => {
    expect((await send(agent.port, 'orphan.test', '/')).status).toBe(404);
    const line = logs.find((l) => l.msg === 'EdgeWorker cannot be served' && l.worker === 'default/orphan');
    expect(line?.error).toBe('spec.bindings.actors ROOMS: DurableActor default/rooms not found');
  });
});

describe('DirectorySource: ai bindings without a URL template', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bindings-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const load = async (opts: { region?: string }) => {
    const log = createLogger({}, () => undefined, 'error');
    const source = new DirectorySource(dir, log, opts);
    const workers = await new Promise<DesiredWorker[]>((resolve) => { void source.start(resolve); });
    await source.stop();
    return workers;
  };

  it('reach the in-cluster Service the operator would run for this worker, binding and region', async () => {
    writeFileSync(join(dir, 'chat.yaml'), edgeWorker('chat', { ai: [{ name: 'AI', model: MODEL }] }, 'export default { fetch() { return new Response("x"); } };'));
    const [standalone] = await load({});
    expect(standalone?.def.env.ai).toEqual({ AI: { model: MODEL, url: `http://${inferenceName('chat', 'AI', STANDALONE_REGION)}.default.svc.cluster.local:8000` } });
    const [eu] = await load({ region: 'eu-west' });
    expect(eu?.def.env.ai).toEqual({ AI: { model: MODEL, url: `http://${inferenceName('chat', 'AI', 'eu-west')}.default.svc.cluster.local:8000` } });
  });

  it('a binding\'s other models reach their own Services, with the task the EdgeModels in the directory give them', async () => {
    const BGE = '@cf/baai/bge-base-en-v1.5';
    const SDXL = '@cf/stabilityai/stable-diffusion-xl-base-1.0';
    writeFileSync(join(dir, 'chat.yaml'), edgeWorker('chat', { ai: [{ name: 'AI', model: MODEL, models: [BGE, SDXL] }] }, 'export default { fetch() { return new Response("x"); } };'));
    writeFileSync(join(dir, 'catalogue.yaml'), [
      { metadata: { name: 'bge' }, spec: { model: BGE, task: 'text-embeddings' } },
      { metadata: { name: 'sdxl' }, spec: { model: SDXL, task: 'text-to-image', image: 'registry.example/sdxl:1' } },
    ].map((m) => stringify({ apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeModel', ...m })).join('---\n'));
    const url = (key: string) => `http://${inferenceName('chat', key, 'eu-west')}.default.svc.cluster.local:8000`;
    const [eu] = await load({ region: 'eu-west' });
    expect(eu?.def.env.ai).toEqual({
      AI: {
        model: MODEL, url: url('AI'),
        models: { [BGE]: { url: url(`AI/${BGE}`), task: 'text-embeddings' }, [SDXL]: { url: url(`AI/${SDXL}`), task: 'text-to-image' } },
      },
    });
    rmSync(join(dir, 'catalogue.yaml'));
  });
});
