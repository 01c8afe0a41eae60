import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANY_MODEL, startOpenAiServer, type OpenAiServer } from '../../cli/local/model-stub.js';
import { createLogger } from '../../common/log.js';
import { Agent } from '../../node-agent/agent.js';
import { send } from './agent-harness.js';

// examples/code-mode.yaml as `edge dev` runs it: the stand-in model server (asked for code
// mode, it answers a fixed program: cli/local/model-stub.ts codeModeProgram), a tool worker
// behind a service binding, and the program run in a Dynamic Worker with globalOutbound: null.

describe('examples/code-mode.yaml', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-code-mode-'));
  let model: OpenAiServer;
  let agent: Agent;

  beforeAll(async () => {
    copyFileSync(join(import.meta.dirname, '..', '..', 'examples', 'code-mode.yaml'), join(dir, 'code-mode.yaml'));
    model = await startOpenAiServer({ model: ANY_MODEL, label: 'stand-in' });
    agent = await Agent.start({
      log: createLogger({}, () => undefined),
      source: { kind: 'directory', dir },
      agentName: 'code-mode',
      listen: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 2,
      // Every ai binding reaches the one stand-in server.
      aiUrlTemplate: model.url,
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await model?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('asks the model for a program, runs it sandboxed with the one tool, and answers with its result', async () => {
    const res = await send(agent.port, 'code-mode.localhost', '/?q=Porto');
    const text = await res.text();
    expect(res.status, text).toBe(200);
    expect(JSON.parse(text)).toEqual({ question: 'Porto', answer: { tool: 'forecast', result: { city: 'Porto', celsius: 19, sky: 'cloudy' } } });
    // One completion: the program came back in the model's answer.
    expect(model.requests.length).toBe(1);
  });
});
