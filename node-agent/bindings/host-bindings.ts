import type { BindingsFactory } from '../isolate/worker-isolate.js';
import { ActorCalls, type ActorRouter } from './actor-binding.js';
import type { ActorStorage } from './actor-storage.js';
import { AiCalls } from './ai-binding.js';
import { hostCallbacks } from './host-callbacks.js';
import { HostTimers } from './host-timers.js';

// The one place that builds the host side of an isolate's env.*, fetch and state.storage:
// the agent hands this factory to the isolate core (isolate/ never constructs a binding).

export interface HostBindingsOptions {
  /** Where env.<actor binding>.get(id).fetch() calls go (the agent's actor router); without one they fail. */
  actorRouter?: ActorRouter;
  /** An actor isolate's state.storage; absent in a worker isolate. */
  storage?: ActorStorage;
}

export function hostBindings(opts: HostBindingsOptions = {}): BindingsFactory {
  return (ctx) => {
    // env.<ai binding>.run() calls under way; all aborted when a request ends or the isolate goes.
    const ai = new AiCalls(ctx.def.env.ai ?? {});
    const timers = new HostTimers(ctx.def.name);
    const callbacks = hostCallbacks({
      workerName: ctx.def.name,
      ai,
      actors: new ActorCalls(ctx.def.env.actors, opts.actorRouter, ctx.def.name, ctx.grantSocket),
      storage: opts.storage ?? null,
      sockets: ctx.sockets,
      onLog: ctx.onLog,
      countSubrequest: ctx.countSubrequest,
      timers,
    });
    return { callbacks, requestEnded: () => ai.closeAll(), dispose: () => { ai.closeAll(true); timers.close(); } };
  };
}
