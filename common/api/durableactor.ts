import * as z from 'zod';
import { API_VERSION, ObjectMetaSchema, cel, conditionList, dnsLabel, jsIdentifier, observedGeneration, regionName } from './meta.js';

// The DurableActor API: one actor class, like a Durable Object namespace.

export const DurableActorSpecSchema = z.object({
  workerRef: z.object({
    name: dnsLabel().describe('The EdgeWorker in this namespace whose bundle exports the class.'),
  }).describe('The EdgeWorker whose code holds the class; its actors run where it runs.'),
  className: jsIdentifier().describe('The exported class implementing the actor.'),
  locationHint: regionName().optional()
    .describe('Region the actors live in; omitted means the first region the worker is placed in.'),
  idleTimeoutSeconds: z.number().int().min(1).max(86_400).default(60)
    .describe('Seconds (1-86400) an actor may sit without requests, alarms or open WebSockets before it is evicted from memory; its storage stays. Default 60.'),
  storage: z.object({
    maxBytesPerActor: z.number().int().min(1024).max(1024 * 1024 * 1024).default(10 * 1024 * 1024)
      .describe('Storage one actor may hold, in bytes (1 KiB-1 GiB), keys and values together; a write past it throws in the actor. Default 10485760 (10 MiB).'),
    backend: z.enum(['kv', 'sqlite']).default('kv')
      .describe('kv: key-value storage; sqlite: a SQLite database per actor (ctx.storage.sql), as wrangler\'s new_sqlite_classes. Fixed at creation: the two keep different data.')
      .meta(cel({ rule: 'self == oldSelf', message: 'spec.storage.backend is immutable: an actor class keeps the storage backend it was created with' })),
  }).default({ maxBytesPerActor: 10 * 1024 * 1024, backend: 'kv' })
    .describe('Each actor\'s durable storage (ctx.storage): its backend and its size cap.'),
}).describe('One actor class, like a Durable Object namespace: the worker that exports it, where its actors live, eviction and storage.');

export const DurableActorStatusSchema = z.object({
  observedGeneration: observedGeneration(),
  conditions: conditionList().optional(),
  region: regionName().optional()
    .describe('The region the actors live in (locationHint, or the worker\'s first region).'),
  activeActors: z.number().int().min(0).optional()
    .describe('Actors in memory now across the region\'s agents, a count.'),
}).describe('What the operator observed; written by the operator only.');

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
