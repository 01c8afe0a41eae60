// The host callbacks (see node-agent/bridge.ts, HostCallbacks). They exist only after
// __edgeInstall has run in an isolate made from the snapshot; calling one before that
// (at snapshot time) is a bug in the shim.
const callbacks = {};

const missing = (name) => () => {
  throw new Error(`edge-isolates shim: host callback ${name} used before __edgeInstall`);
};

export const host = {
  log: missing('log'),
  randomBytes: missing('randomBytes'),
  parseURL: missing('parseURL'),
  setURL: missing('setURL'),
  digest: missing('digest'),
  crypto: missing('crypto'),
  cryptoRelease: missing('cryptoRelease'),
  sleep: missing('sleep'),
  timerCancel: missing('timerCancel'),
  fetch: missing('fetch'),
  fetchWrite: missing('fetchWrite'),
  fetchRead: missing('fetchRead'),
  fetchCancel: missing('fetchCancel'),
  aiRun: missing('aiRun'),
  aiRead: missing('aiRead'),
  aiCancel: missing('aiCancel'),
  actorId: missing('actorId'),
  actorFetch: missing('actorFetch'),
  serviceCall: missing('serviceCall'),
  rpcCallback: missing('rpcCallback'),
  actorWrite: missing('actorWrite'),
  actorRead: missing('actorRead'),
  actorCancel: missing('actorCancel'),
  bodyDemand: missing('bodyDemand'),
  storage: missing('storage'),
  socketSend: missing('socketSend'),
  socketClose: missing('socketClose'),
  hibernation: missing('hibernation'),
  htmlRewriter: missing('htmlRewriter'),
  lib: missing('lib'),
  loaderGet: missing('loaderGet'),
  loaderLoad: missing('loaderLoad'),
  loaderCall: missing('loaderCall'),
  respond: missing('respond'),
};

export function setHost(cbs) {
  for (const name of Object.keys(host)) {
    if (typeof cbs[name] !== 'function') throw new Error(`edge-isolates shim: host callback ${name} is missing`);
    callbacks[name] = cbs[name];
    host[name] = cbs[name];
  }
  Object.freeze(host);
}
