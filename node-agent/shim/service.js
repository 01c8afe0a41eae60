// Service bindings: env.<binding> naming another worker of the namespace. `fetch()` sends a
// request to the bound worker's fetch handler; any other name is an RPC method of its
// entrypoint (rpc.js; the host knows which entrypoint the binding names). Both go through
// the serviceCall host callback (node-agent/bindings/service-binding.ts), which counts a
// subrequest and bounds the depth of service calls.
//
// Runs at snapshot time: nothing here calls a host callback until used.
import { host } from './host.js';
import { hostOutcome, toArrayBuffer } from './web/util.js';
import { Request, requestBody } from './web/request.js';
import { fetchedResponse } from './web/response.js';
import { headerList } from './web/headers.js';
import { bodyBytes } from './web/body.js';
import { ArrayMap } from './web/primordials.js';
import { TextDecoder, TextEncoder } from './web/encoding.js';
import { RPC_CALLBACK_HEADER, RPC_METHOD, rpcStub } from './rpc.js';

const freeze = Object.freeze;
const ErrorCtor = Error;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** The host puts the binding's entrypoint in the path. */
const RPC_URL = 'https://rpc.internal/';

/** env.<binding> for a service binding. */
export function serviceBinding(binding) {
  return internalStub(`env.${binding}`, (init) => host.serviceCall(binding, init));
}

/**
 * A stub whose fetch() and RPC methods are internal requests: `call(init)` hands one to the
 * host (serviceCall, or loaderCall for a dynamic worker's entrypoint) and gives its pending outcome.
 */
export function internalStub(what, call) {
  const base = freeze({
    async fetch(input, init = undefined) {
      const request = new Request(input, init);
      const bytes = await bodyBytes(requestBody(request), `${what}.fetch()`);
      const result = await hostOutcome(call({
        url: request.url,
        method: request.method,
        headers: ArrayMap(headerList(request.headers), (e) => [e[0], e[1]]),
        body: bytes === null ? null : toArrayBuffer(bytes),
      }));
      return fetchedResponse({ ...result, url: request.url, redirected: false }, request.method);
    },
  });
  const send = async (text, callbacks) => {
    const result = await hostOutcome(call({
      url: RPC_URL, method: RPC_METHOD, headers: callbacks ? [[RPC_CALLBACK_HEADER, '1']] : [], body: toArrayBuffer(encoder.encode(text)),
    }));
    const answer = decoder.decode(result.body);
    if (result.status !== 200) throw new ErrorCtor(`${what}: the RPC call failed: ${answer}`);
    return answer;
  };
  return rpcStub(base, send);
}
