import type { AiServiceRef, ResolvedEnv } from '../../common/resolve-bindings.js';
import type { WorkerEnv } from '../abi/bridge.js';

// The last step of binding resolution, the same for both desired-state sources: resolved
// env (common/resolve-bindings.ts; from the operator over NATS, or from a directory) becomes
// the env of this agent's isolates, with each ai binding pointed at this region's model server.

/** How this agent reaches a model server's Service. */
export type AiUrl = (ref: AiServiceRef, binding: string) => string;

/** Cluster DNS; the chart passes its own clusterDomain as --ai-url-template. */
export const DEFAULT_AI_URL_TEMPLATE = 'http://{service}.{namespace}.svc.cluster.local:{port}';

/** {service}, {namespace}, {port} and {binding} are substituted. */
export function aiUrlFromTemplate(template: string = DEFAULT_AI_URL_TEMPLATE): AiUrl {
  return (ref, binding) => template.replaceAll('{service}', ref.service).replaceAll('{namespace}', ref.namespace)
    .replaceAll('{port}', String(ref.port)).replaceAll('{binding}', binding);
}

export function isolateWorkerEnv(env: ResolvedEnv, region: string, aiUrl: AiUrl): WorkerEnv {
  const ai: NonNullable<WorkerEnv['ai']> = {};
  for (const [binding, b] of Object.entries(env.ai)) {
    const ref = b.services[region];
    // Placement puts a worker only where its model servers are; a missing ref means no
    // Service exists for this region (yet), and env.<binding>.run() fails with a clear error.
    ai[binding] = { model: b.model, url: ref ? aiUrl(ref, binding) : '', ...(ref?.task ? { task: ref.task } : {}) };
    if (b.models) {
      const models: NonNullable<WorkerEnv['ai']>[string]['models'] = {};
      for (const [model, refs] of Object.entries(b.models)) {
        const r = refs[region];
        models[model] = { url: r ? aiUrl(r, binding) : '', task: r?.task ?? 'text-generation' };
      }
      ai[binding]!.models = models;
    }
  }
  return { text: { ...env.text, ...env.secrets }, ai, actors: env.actors, ...(env.services ? { services: env.services } : {}), ...(env.workerLoaders?.length ? { loaders: env.workerLoaders } : {}) };
}
