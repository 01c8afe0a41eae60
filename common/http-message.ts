import type { IncomingMessage } from 'node:http';

/**
 * A request's body follows its head (node's own test for IncomingMessage): what the agent's
 * two relays, the front to an isolate host and a host to a shard member, decide on before
 * they send it on.
 */
export const hasRequestBody = (req: IncomingMessage): boolean =>
  req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
