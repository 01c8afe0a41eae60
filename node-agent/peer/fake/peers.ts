import { CallOutcomeUnknownError, NotHereError, type PeerForwarder, type PeerHandler, type PeerRequest, type PeerResponse } from '../protocol.js';
import { PeerUnreachableError } from '../peer-server.js';

// Other agents' peer ports without HTTP: a forwarded call goes straight to the handler
// registered for the address, with the transport's rules kept: NotHereError from the
// handler is the 421 the caller may retry, any other error comes back as a 500 answer
// (the call may have run), an unknown or downed address is PeerUnreachableError (nothing
// was sent), and a lost answer (or an outcome the handler itself did not know) is
// CallOutcomeUnknownError after the handler ran.

const enc = new TextEncoder();

export class FakePeers {
  private readonly handlers = new Map<string, PeerHandler>();
  private readonly lost = new Set<string>();
  /** Every forward, in order, whether or not it reached a handler. */
  readonly calls: { address: string; namespace: string; actor: string; id: string; hops: number; token: string | undefined }[] = [];

  /** The transport, to give to ActorRouter as `forward`. */
  readonly forward: PeerForwarder = async (address, namespace, actor, id, req, hops, token) => {
    this.calls.push({ address, namespace, actor, id, hops, token });
    const h = this.handlers.get(address);
    if (!h) throw new PeerUnreachableError(`${address}: connection refused`);
    let res: PeerResponse;
    try {
      res = await h.call(namespace, actor, id, copy(req), hops);
    } catch (err) {
      if (err instanceof NotHereError) throw new NotHereError(err.message);
      if (err instanceof CallOutcomeUnknownError) throw new CallOutcomeUnknownError(err.message);
      const msg = err instanceof Error ? err.message : String(err);
      return { status: 500, statusText: 'Internal Server Error', headers: [], body: enc.encode(`${msg}\n`) };
    }
    if (this.lost.has(address)) throw new CallOutcomeUnknownError(`the call reached ${address}, then socket hang up: it may or may not have run`);
    return res;
  };

  /** The agent at `address` answers with `handler` (e.g. its ActorRouter). */
  add(address: string, handler: PeerHandler): void {
    this.handlers.set(address, handler);
    this.lost.delete(address);
  }

  /** Connections to `address` are refused from now on. */
  down(address: string): void {
    this.handlers.delete(address);
  }

  /** Calls to `address` run there but their answers never come back. */
  loseAnswers(address: string): void {
    this.lost.add(address);
  }
}

function copy(req: PeerRequest): PeerRequest {
  return { ...req, headers: [...req.headers], body: req.body ? new Uint8Array(req.body) : null };
}
