import { z } from 'zod';
import { API_VERSION, ObjectMetaSchema, cel, conditionList, dnsLabel, jsIdentifier, regionName } from './meta.js';

// The DurableActor API: one actor class, like a Durable Object namespace.

export const DurableActorSpecSchema = z.object({
  workerRef: z.object({
    name: dnsLabel().describe('The EdgeWorker in this namespace whose bundle exports the class.'),
  }),
  className: jsIdentifier().describe('The exported class implementing the actor.'),
  locationHint: regionName().optional()
    .describe('Region the actors live in; omitted means the first region the worker is placed in.'),
  idleTimeoutSeconds: z.number().int().min(1).max(86_400).default(60)
    .describe('An actor idle this long is evicted from memory; its storage stays.'),
  storage: z.object({
    maxBytesPerActor: z.number().int().min(1024).max(1024 * 1024 * 1024).default(10 * 1024 * 1024),
    backend: z.enum(['kv', 'sqlite']).default('kv')
      .describe('kv: key-value storage; sqlite: a SQLite database per actor (ctx.storage.sql), as wrangler\'s new_sqlite_classes. Fixed at creation: the two keep different data.')
      .meta(cel({ rule: 'self == oldSelf', message: 'spec.storage.backend is immutable: an actor class keeps the storage backend it was created with' })),
  }).default({ maxBytesPerActor: 10 * 1024 * 1024, backend: 'kv' }),
});

export const DurableActorStatusSchema = z.object({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: conditionList().optional(),
  region: regionName().optional(),
  activeActors: z.number().int().min(0).optional(),
});

export const DurableActorSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('DurableActor'),
  metadata: ObjectMetaSchema,
  spec: DurableActorSpecSchema,
  status: DurableActorStatusSchema.optional(),
});

export type DurableActorSpec = z.infer<typeof DurableActorSpecSchema>;
export type DurableActorStatus = z.infer<typeof DurableActorStatusSchema>;
export type DurableActor = z.infer<typeof DurableActorSchema>;
