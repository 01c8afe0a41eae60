import * as z from 'zod';

// What a cluster admin decides for tenants, shared by the operator (which resolves it per
// namespace and writes it into each worker's config) and the agent (which enforces it).
// The cluster-scoped policy object that carries these fields is built on top of this file.

/**
 * One egress allowance: a CIDR (`10.20.0.0/16`, `fd00::/8`), a single address, a host name
 * (`db.example.internal`) or a host pattern (`*.svc.cluster.local`), optionally with a port
 * (`db.example.internal:5432`, `10.0.0.5:443`).
 */
export const EgressRuleSchema = z.string().min(1).max(253)
  .regex(/^[A-Za-z0-9*.:/[\]-]+$/)
  .describe('A CIDR, an address, a host name or *.pattern, optionally with :port.');

/**
 * Where a worker's fetch(), connect() and WebSocket clients may go. Without an allowance a
 * worker reaches public unicast addresses only: never loopback, link-local, private,
 * carrier-grade NAT, multicast or cluster ranges, nor cluster DNS names. `allow` opens
 * exactly the listed destinations on top of that; `publicInternet: false` closes the
 * default so only `allow` remains. Enforced by the agent on the resolved address of every
 * connection and every redirect hop.
 */
export const EgressPolicySchema = z.object({
  publicInternet: z.boolean().default(true)
    .describe('Whether workers reach public unicast addresses; false leaves only allow. Default true.'),
  allow: z.array(EgressRuleSchema).max(256).default([])
    .describe('Destinations opened on top of the default (at most 256): private or cluster addresses and names the default refuses.'),
});
export type EgressPolicy = z.infer<typeof EgressPolicySchema>;
export type EgressRule = z.infer<typeof EgressRuleSchema>;

/** What a worker gets when no policy names its namespace. */
export const DEFAULT_EGRESS_POLICY: EgressPolicy = { publicInternet: true, allow: [] };
