import type { KV } from 'nats';
import { followBucket, type BucketFollower } from '../../common/kv-follower.js';
import type { Logger } from '../../common/log.js';
import { encodeJson, type ActorAlarm, type ActorConfig } from '../../common/nats.js';
import { ActorAlarmSchema, decodeJson } from '../../common/nats-messages.js';
import type { ActorRunner } from './host.js';
import { actorInstanceKey, alarmKey } from '../../common/keys.js';
import type { ActorRingPort } from './ring.js';

// Alarms of actors, fired by whichever agent owns the actor when the time comes, whether
// or not the actor is in memory: the owner writes the alarm into the actor's log (the
// truth) and into KV `edge-actor-alarms` (the index every agent watches). Each agent
// keeps timers for the alarms of the actors the ring gives it, and re-plans when the ring
// changes, so an alarm survives its owner draining or dying: at least once.
// A failing alarm() is retried with exponential backoff from 2 s, up to 6 retries.

export const ALARM_FIRST_RETRY_MS = 2_000;
export const ALARM_MAX_RETRIES = 6;

/** What the alarms use of KV `edge-actor-alarms` (EdgeBuckets.alarms). */
export type AlarmIndexPort = Pick<KV, 'watch' | 'put' | 'purge'>;

export interface ActorAlarmsOptions {
  agent: string;
  index: AlarmIndexPort;
  ring: ActorRingPort;
  host: ActorRunner;
  log: Logger;
  config(namespace: string, actor: string): ActorConfig | undefined;
}

export class ActorAlarms {
  private readonly alarms = new Map<string, ActorAlarm>();
  private readonly timers = new Map<string, { time: number; timer: NodeJS.Timeout }>();
  private readonly retries = new Map<string, number>();
  private follower: BucketFollower | undefined;
  private stopped = false;

  constructor(private readonly opts: ActorAlarmsOptions) {
    opts.ring.onChange(() => this.replanAll());
  }

  async start(): Promise<void> {
    this.follower = followBucket(this.opts.index, {
      put: (key, value) => {
        try {
          this.alarms.set(key, decodeJson(ActorAlarmSchema, value, `actor alarm ${key}`));
        } catch (err) {
          this.opts.log.warn('ignoring unreadable actor alarm', { key, error: err });
          return;
        }
        this.plan(key);
      },
      delete: (key) => { this.alarms.delete(key); this.plan(key); },
    }, { log: this.opts.log, name: 'actor-alarms' });
    await this.follower.initial;
  }

  /** Called by the actor host after a commit that set or cleared an alarm. */
  record(config: ActorConfig, id: string, time: number | null, name?: string): void {
    const key = alarmKey(config.namespace, config.name, id);
    const current = this.alarms.get(key);
    // An activation that does not know the name (one an alarm started without it) keeps the indexed one.
    const keptName = name ?? current?.name;
    if (time === null ? !current : current?.time === time && current.name === keptName) return;
    const write = time === null
      ? this.opts.index.purge(key)
      : this.opts.index.put(key, encodeJson({
        namespace: config.namespace, actor: config.name, id, region: config.region, time,
        ...(keptName !== undefined ? { name: keptName } : {}),
      } satisfies ActorAlarm)).then(() => undefined);
    write.catch((err: unknown) => this.opts.log.warn('could not index actor alarm', { actor: key, error: err }));
  }

  /** The id's name the alarm index holds for an actor (set with its alarm), if any. */
  nameOf(config: ActorConfig, id: string): string | undefined {
    return this.alarms.get(alarmKey(config.namespace, config.name, id))?.name;
  }

  private replanAll(): void {
    for (const key of new Set([...this.alarms.keys(), ...this.timers.keys()])) this.plan(key);
  }

  private mine(a: ActorAlarm): boolean {
    return this.opts.ring.owner(a.region, actorInstanceKey(a.namespace, a.actor, a.id))?.agent === this.opts.agent;
  }

  private plan(key: string): void {
    const a = this.alarms.get(key);
    const t = this.timers.get(key);
    if (!a || !this.mine(a) || this.stopped) {
      if (t) { clearTimeout(t.timer); this.timers.delete(key); }
      return;
    }
    if (t && t.time === a.time) return;
    if (t) clearTimeout(t.timer);
    const retry = this.retries.get(key) ?? 0;
    const delay = Math.max(0, a.time - Date.now()) + (retry > 0 ? ALARM_FIRST_RETRY_MS * 2 ** (retry - 1) : 0);
    const timer = setTimeout(() => { void this.fire(key, a); }, Math.min(delay, 2 ** 31 - 1));
    this.timers.set(key, { time: a.time, timer });
  }

  private async fire(key: string, a: ActorAlarm): Promise<void> {
    this.timers.delete(key);
    const cfg = this.opts.config(a.namespace, a.actor);
    if (!cfg || this.stopped) return;
    const retry = this.retries.get(key) ?? 0;
    try {
      await this.opts.host.alarm(cfg, a.id, a.time, retry, a.name);
      this.retries.delete(key);
    } catch (err) {
      if (retry >= ALARM_MAX_RETRIES) {
        this.opts.log.error('actor alarm failed after every retry; giving up', { actor: key, retries: retry, error: err });
        this.retries.delete(key);
        return;
      }
      this.retries.set(key, retry + 1);
      this.opts.log.warn('actor alarm failed; retrying', { actor: key, retry: retry + 1, error: err });
      // Force a re-plan with the backoff even though the time is unchanged.
      this.plan(key);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.follower?.stop();
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
  }
}
