import { randomUUID } from 'node:crypto';
import { RPC_CALLBACK_HEADER, RPC_METHOD } from '../abi/bridge.js';
import { EdgeError } from '../../common/errors.js';

// Functions and RpcTargets passed as arguments of an RPC call (node-agent/shim/rpc.js):
// the callee gets stubs that call back into the caller's isolate while the call is in
// flight. The caller's host registers the call here under a random token (carried to the
// callee in RPC_CALLBACK_HEADER, which only the runtime sets and the callee's runtime
// reads) and removes it when the call settles: a stub used later fails. The registry is
// this process's: a callee on another agent cannot call back (its calls fail saying so).

export class RpcCallbackError extends EdgeError {}

/** Runs a callback message in the caller's isolate and answers its text. */
export type LocalInvoke = (message: string) => Promise<string>;

const calls = new Map<string, LocalInvoke>();

/**
 * For an RPC request whose arguments hold callbacks: registers `invoke` while `run` is in
 * flight and gives the request's headers with the token in place. Other requests pass as they are.
 */
export async function withCallbacks<T>(method: string, headers: [string, string][], invoke: LocalInvoke | undefined, run: (headers: [string, string][]) => Promise<T>): Promise<T> {
  if (method !== RPC_METHOD || !headers.some(([k]) => k === RPC_CALLBACK_HEADER)) return run(headers);
  if (!invoke) throw new RpcCallbackError('functions and RpcTargets cannot be passed as RPC arguments from here');
  const token = randomUUID();
  calls.set(token, invoke);
  try {
    return await run(headers.map(([k, v]) => (k === RPC_CALLBACK_HEADER ? [k, token] : [k, v])));
  } finally {
    calls.delete(token);
  }
}

/** The rpcCallback callback's work. */
export function invokeCallback(token: unknown, message: unknown): Promise<string> {
  if (typeof token !== 'string' || typeof message !== 'string') return Promise.reject(new TypeError('rpcCallback: malformed call'));
  const invoke = calls.get(token);
  if (!invoke) {
    return Promise.reject(new RpcCallbackError('RPC stub used after the call it was passed to ended (or its caller is on another agent, where calling back is not supported)'));
  }
  return invoke(message);
}

/**
 * A long-lived registration: the functions and RpcTargets a caller put in a dynamic worker's
 * env (bindings/worker-loader.ts) are called back with this token for as long as the
 * dynamic worker may use them; `unlendEnv` ends it.
 */
export function lendEnv(invoke: LocalInvoke): string {
  const token = randomUUID();
  calls.set(token, invoke);
  return token;
}

export function unlendEnv(token: string): void {
  calls.delete(token);
}
