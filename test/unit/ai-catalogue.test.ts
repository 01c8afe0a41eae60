import { describe, expect, it } from 'vitest';
import { AiBindingSchema, EdgeModelSpecSchema } from '../../common/api/index.js';
import { desiredInference } from '../../operator/controllers/inference.js';
import { isolateWorkerEnv } from '../../node-agent/control/worker-env.js';

// The Workers AI catalogue in the API: model ids (@cf/..., @hf/..., plain), EdgeModel task
// types and weights, and how a binding's models reach the agent's env.

describe('model ids', () => {
  const ok = (model: string) => AiBindingSchema.safeParse({ name: 'AI', model }).success;

  it('accepts Workers AI ids (@cf/<vendor>/<name>, @hf/<org>/<name>) and the plain form', () => {
    for (const m of ['@cf/meta/llama-3.1-8b-instruct', '@cf/baai/bge-base-en-v1.5', '@hf/thebloke/deepseek-coder-6.7b-instruct-awq',
      '@cf/stabilityai/stable-diffusion-xl-base-1.0', 'llama-3.1-8b-instruct', 'meta-llama/Llama-3.1-8B-Instruct']) {
      expect(ok(m), m).toBe(true);
    }
  });

  it('refuses malformed ids with a message naming the forms', () => {
    for (const m of ['@xx/meta/llama', '@cf/meta', '@cf//llama', '@cf/meta/', '@cf/meta/llama/extra', '-llama', '@', 'a b', '@cf/me ta/x']) {
      expect(ok(m), m).toBe(false);
    }
    const r = AiBindingSchema.safeParse({ name: 'AI', model: '@cf/meta' });
    expect(r.error?.issues[0]).toMatchObject({ path: ['model'], message: expect.stringContaining('@cf/<vendor>/<name>') });
    expect(AiBindingSchema.safeParse({ name: 'AI', model: '@cf/meta/llama-3.1-8b-instruct', models: ['@cf/baai'] }).error?.issues[0]?.path).toEqual(['models', 0]);
  });
});

describe('EdgeModel: task and weights', () => {
  it('defaults to text-generation; knows text-embeddings and text-to-image, not speech recognition yet', () => {
    expect(EdgeModelSpecSchema.parse({ model: '@cf/meta/llama-3.1-8b-instruct' }).task).toBe('text-generation');
    expect(EdgeModelSpecSchema.parse({ model: '@cf/baai/bge-small-en-v1.5', task: 'text-embeddings' }).task).toBe('text-embeddings');
    expect(EdgeModelSpecSchema.safeParse({ model: '@cf/openai/whisper', task: 'automatic-speech-recognition' }).success).toBe(false);
  });

  it('the server loads `source` and serves it under the catalogue id', () => {
    const want = desiredInference({ name: 'w', namespace: 'shop', uid: 'u' }, [
      { name: 'AI', model: '@cf/meta/llama-3.1-8b-instruct', source: 'meta-llama/Llama-3.1-8B-Instruct', gpus: 1, replicasPerRegion: 1 },
      { name: 'AI/@cf/baai/bge-base-en-v1.5', model: '@cf/baai/bge-base-en-v1.5', task: 'text-embeddings', gpus: 0, replicasPerRegion: 1, args: ['--runner', 'pooling'] },
    ], ['eu'], { defaultImage: 'vllm:1' });
    const args = want.deployments.map((d) => d.spec.template.spec?.containers[0]?.args);
    expect(args).toEqual([
      ['--model', 'meta-llama/Llama-3.1-8B-Instruct', '--port', '8000', '--served-model-name', '@cf/meta/llama-3.1-8b-instruct'],
      ['--model', '@cf/baai/bge-base-en-v1.5', '--port', '8000', '--served-model-name', '@cf/baai/bge-base-en-v1.5', '--runner', 'pooling'],
    ]);
    // Service names are DNS labels whatever the key holds ('/', '@', '.').
    for (const d of want.deployments) expect(d.metadata.name).toMatch(/^[a-z][a-z0-9-]{0,62}$/);
    expect(want.refs['AI/@cf/baai/bge-base-en-v1.5']?.eu?.task).toBe('text-embeddings');
    expect(want.refs.AI?.eu?.task).toBeUndefined();
  });
});

describe('the agent\'s env for a binding with several models', () => {
  it('points each model at this region\'s server, with its task', () => {
    const ref = (service: string, task?: 'text-embeddings') => ({ service, namespace: 'shop', port: 8000, ...(task ? { task } : {}) });
    const env = isolateWorkerEnv({
      text: {}, secrets: {}, actors: {},
      ai: { AI: { model: '@cf/meta/llama-3.1-8b-instruct', services: { eu: ref('llm') }, models: { '@cf/baai/bge-base-en-v1.5': { eu: ref('bge', 'text-embeddings'), us: ref('bge-us', 'text-embeddings') } } } },
    }, 'eu', (r) => `http://${r.service}:${r.port}`);
    expect(env.ai).toEqual({
      AI: { model: '@cf/meta/llama-3.1-8b-instruct', url: 'http://llm:8000', models: { '@cf/baai/bge-base-en-v1.5': { url: 'http://bge:8000', task: 'text-embeddings' } } },
    });
  });
});
