import { DEFAULT_EGRESS_POLICY, type EgressPolicy } from '../../common/api/policy.js';
import { EgressRules } from '../../common/egress.js';
import type { BindingsFactory } from '../isolate/worker-isolate.js';
import { ActorCalls, type ActorRouter } from './actor-binding.js';
import { ServiceCalls, type ServiceRouter } from './service-binding.js';
import { LoaderCalls, type LoaderRouter } from './worker-loader.js';
import type { ActorStorage } from './actor-storage.js';
import { AiCalls } from './ai-binding.js';
import { hostCallbacks, type HibernationCalls } from './host-callbacks.js';
import { HostTimers } from './host-timers.js';
import { HostCrypto } from './host-crypto.js';
import { Subrequests, type Resolver } from './subrequests.js';

// The one place that builds the host side of an isolate's env.*, fetch and state.storage:
// the agent hands this factory to the isolate core (isolate/ never constructs a binding).

export interface HostBindingsOptions {
  /** Where env.<actor binding>.get(id).fetch() calls go (the agent's actor router); without one they fail. */
  actorRouter?: ActorRouter;
  /** Where env.<service binding> calls go (the agent's worker server); without one they fail. */
  serviceRouter?: ServiceRouter;
  /** Where env.<worker loader> runs dynamic workers (the agent's DynamicWorkers); without one they fail. */
  loaderRouter?: LoaderRouter;
  /** An actor isolate's state.storage; absent in a worker isolate. */
  storage?: ActorStorage;
  /**
   * Allowances every worker gets on top of its own egress policy (the agent's
   * --egress-allow: directory mode, `edge dev`, tests that fetch a local server).
   */
  egressAllow?: readonly string[];
  /** How fetch() looks names up (default: the system resolver); a test seam. */
  resolve?: Resolver;
  /** An actor isolate's hibernatable WebSockets (actors/hibernation.ts). */
  hibernation?: HibernationCalls;
}

/** workerd's error for fetch() in a dynamic worker whose globalOutbound is null. */
export const OUTBOUND_BLOCKED = 'This worker is not permitted to access the internet via global functions like fetch(). It must use capabilities (such as bindings in \'env\') to talk to the outside world.';

/** The policy a worker's fetch() runs under: its namespace's, plus the agent's allowances. */
export function egressRules(key: string, policy: EgressPolicy | undefined, extra: readonly string[] = []): EgressRules {
  const base = policy ?? DEFAULT_EGRESS_POLICY;
  const ns = key.includes('/') ? key.slice(0, key.indexOf('/')) : key;
  return new EgressRules({ publicInternet: base.publicInternet, allow: [...base.allow, ...extra] }, `namespace "${ns}"`);
}

/** A socket the actor accepts goes out in its 101 response: the isolate may name it there. */
function grantingAccepted(calls: HibernationCalls, grant: (id: number) => void): HibernationCalls {
  return (op, a, b, c) => {
    const r = calls(op, a, b, c);
    if (op === 'accept') grant(r as number);
    return r;
  };
}

export function hostBindings(opts: HostBindingsOptions = {}): BindingsFactory {
  return (ctx) => {
    // env.<ai binding>.run() calls under way; all aborted when a request ends or the isolate goes.
    const ai = new AiCalls(ctx.def.env.ai ?? {});
    const timers = new HostTimers(ctx.def.name);
    const crypto = new HostCrypto(ctx.def.name);
    const rules = egressRules(ctx.def.key, ctx.def.egress, opts.egressAllow);
    for (const bad of rules.invalid) ctx.onLog('warn', `egress allowance ignored: ${bad.message}`);
    const subrequests = new Subrequests({ worker: ctx.def.name, rules, ...(opts.resolve ? { resolve: opts.resolve } : {}) });
    const actors = new ActorCalls(ctx.def.env.actors, opts.actorRouter, ctx.def.name, ctx.grantSocket, ctx.invokeLocal);
    const loaders = new LoaderCalls(ctx.def, opts.loaderRouter, () => ctx.requestDepth?.() ?? 0, ctx.invokeLocal);
    // A dynamic worker with a globalOutbound never fetches itself: null refuses, a binding gets the requests (shim/index.js).
    const outbound = ctx.def.env.outbound;
    const callbacks = hostCallbacks({
      workerName: ctx.def.name,
      settleHost: ctx.settleHost,
      ai,
      subrequests,
      actors,
      services: new ServiceCalls(ctx.def.env.services, opts.serviceRouter, ctx.def.name, () => ctx.requestDepth?.() ?? 0, ctx.invokeLocal),
      loaders,
      ...(outbound !== undefined ? { fetchRefused: outbound === 'block' ? OUTBOUND_BLOCKED : `worker ${ctx.def.name}: its fetch() goes to its globalOutbound binding` } : {}),
      storage: opts.storage ?? null,
      sockets: ctx.sockets,
      onLog: ctx.onLog,
      countSubrequest: ctx.countSubrequest,
      timers,
      crypto,
      ...(opts.hibernation ? { hibernation: grantingAccepted(opts.hibernation, ctx.grantSocket) } : {}),
    });
    return {
      callbacks,
      // An actor body still open when the request ends is cancelled: that reaches the actor.
      requestEnded: () => { loaders.requestEnded(); ai.closeAll(); subrequests.closeAll(); actors.streams.closeAll('the caller\'s request ended'); },
      dispose: () => { loaders.dispose(); ai.closeAll(true); subrequests.closeAll(true); timers.close(); crypto.close(); actors.streams.closeAll('the caller\'s isolate is gone'); },
      hostBytes: () => subrequests.heldBytes() + actors.streams.heldBytes(),
    };
  };
}
