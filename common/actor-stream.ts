import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig, type StreamInfo } from 'nats';
import type { Logger } from './log.js';
import { ACTOR_SUBJECTS, ACTORS_STREAM } from './nats.js';

// The actor log's stream (common/actor-log.ts writes and reads it): its settings, and
// creating or fixing it. Apart from the log so that what provisions the streams (the
// operator, and an agent's front waiting for them) does not build the log's record schemas.

/** JetStream API error codes (nats-server errors.json). */
const JS_STREAM_NOT_FOUND = 10059;
const JS_STREAM_NAME_IN_USE = 10058;

interface ApiError { code: number; err_code?: number; description?: string }
/** A JetStream API error's body (`err_code` says which), when `err` is one. */
export const apiErrorOf = (err: unknown): ApiError | undefined => (err as { api_error?: ApiError } | null)?.api_error;

/** The stream settings this module relies on. */
export function actorStreamConfig(replicas: number): Partial<StreamConfig> {
  return {
    name: ACTORS_STREAM,
    subjects: [...ACTOR_SUBJECTS.stream],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    num_replicas: replicas,
    max_age: 0,
    max_msgs: -1,
    max_bytes: -1,
    max_msgs_per_subject: -1,
    allow_rollup_hdrs: true,
    allow_direct: true,
    deny_delete: false,
    deny_purge: false,
  };
}

/** Creates the actor stream, or binds to it fixing the settings this module relies on (common/nats-provision.ts runs it first). */
export async function ensureActorStream(jsm: JetStreamManager, replicas: number, log: Logger): Promise<StreamInfo> {
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(ACTORS_STREAM);
  } catch (err) {
    if (apiErrorOf(err)?.err_code !== JS_STREAM_NOT_FOUND) throw err;
    try {
      const created = await jsm.streams.add(actorStreamConfig(replicas));
      log.info('created the actor stream', { stream: ACTORS_STREAM, replicas });
      return created;
    } catch (e) {
      // Another agent created it at the same moment (with other settings, or we would have bound).
      if (apiErrorOf(e)?.err_code !== JS_STREAM_NAME_IN_USE) throw e;
      info = await jsm.streams.info(ACTORS_STREAM);
    }
  }
  const c = info.config;
  if (c.num_replicas !== replicas) log.info('the actor stream exists with another replica count; keeping it', { stream: ACTORS_STREAM, replicas: c.num_replicas, asked: replicas });
  if (c.storage !== StorageType.File) log.warn('the actor stream is not on file storage: actor state does not survive a NATS restart', { stream: ACTORS_STREAM, storage: c.storage });
  const missing = ACTOR_SUBJECTS.stream.filter((s) => !c.subjects?.includes(s));
  if (!c.allow_rollup_hdrs || !c.allow_direct || c.deny_purge || missing.length > 0) {
    log.info('updating the actor stream settings', { stream: ACTORS_STREAM, missingSubjects: missing });
    info = await jsm.streams.update(ACTORS_STREAM, {
      ...c, subjects: [...(c.subjects ?? []), ...missing], allow_rollup_hdrs: true, allow_direct: true, deny_purge: false,
    });
  }
  return info;
}
