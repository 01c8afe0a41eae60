import type { ActorState, StorageOp } from '../../../common/actor-ops.js';
import type { ActorConfig } from '../../../common/nats.js';
import type { PeerRequest, PeerResponse } from '../../peer/protocol.js';
import type { ActorFactory, ActorInstancePort, ActorStoragePort } from '../host.js';

// An actor without an isolate: its code is a few test functions, its storage a map of
// strings. What ActorHost relies on is kept: writes pile up as ops until the host takes
// them, and discardPending() puts the state back to the last take.

const enc = new TextEncoder();
const dec = new TextDecoder();

export class FakeActorStorage implements ActorStoragePort {
  private values: Map<string, Uint8Array>;
  private alarmTime: number | null;
  private pending: StorageOp[] = [];
  /** The state at the last take, for discardPending. */
  private taken: ActorState;

  constructor(initial: ActorState) {
    this.values = new Map(initial.values);
    this.alarmTime = initial.alarm;
    this.taken = this.snapshot();
  }

  get alarm(): number | null { return this.alarmTime; }

  get(key: string): string | undefined {
    const v = this.values.get(key);
    return v === undefined ? undefined : dec.decode(v);
  }

  put(key: string, value: string): void {
    const v = enc.encode(value);
    this.values.set(key, v);
    this.pending.push({ op: 'put', key, value: v });
  }

  delete(key: string): void {
    this.values.delete(key);
    this.pending.push({ op: 'delete', key });
  }

  setAlarm(time: number | null): void {
    this.alarmTime = time;
    this.pending.push({ op: 'alarm', time });
  }

  clearAlarmIf(time: number): void {
    if (this.alarmTime === time) this.setAlarm(null);
  }

  takePending(): StorageOp[] {
    const ops = this.pending;
    this.pending = [];
    this.taken = this.snapshot();
    return ops;
  }

  discardPending(): void {
    this.values = new Map(this.taken.values);
    this.alarmTime = this.taken.alarm;
    this.pending = [];
  }

  snapshot(): ActorState {
    return { values: new Map(this.values), alarm: this.alarmTime };
  }
}

/** What a fake actor does; each handler gets the instance (its storage, id, config). */
export interface FakeActorCode {
  /** Runs at activation, like a constructor (its writes are committed before any request). */
  construct?(actor: FakeActorInstance): void | Promise<void>;
  fetch?(req: PeerRequest, actor: FakeActorInstance): PeerResponse | Promise<PeerResponse>;
  alarm?(retryCount: number, actor: FakeActorInstance): void | Promise<void>;
}

export class FakeActorInstance implements ActorInstancePort {
  dead = false;
  disposedAs: string | undefined;
  openSockets = 0;
  /** Requests that reached the actor's code, in order. */
  readonly requests: PeerRequest[] = [];
  readonly alarms: number[] = [];

  constructor(
    readonly config: ActorConfig, readonly id: string, readonly storage: FakeActorStorage, private readonly code: FakeActorCode,
    /** The id's name the activation was given (ctx.id.name), if any. */
    readonly name?: string,
  ) {}

  async fetch(req: PeerRequest): Promise<PeerResponse> {
    this.requests.push(req);
    return this.code.fetch ? this.code.fetch(req, this) : textResponse(200, 'ok');
  }

  async alarm(retryCount: number): Promise<void> {
    this.alarms.push(retryCount);
    await this.code.alarm?.(retryCount, this);
  }

  dispose(reason: string): void {
    this.dead = true;
    this.disposedAs ??= reason;
  }
}

export class FakeActorFactory implements ActorFactory {
  /** Every instance made, in order: more than one per id means the actor was activated again. */
  readonly instances: FakeActorInstance[] = [];

  constructor(public code: FakeActorCode = {}) {}

  storage(state: ActorState): FakeActorStorage {
    return new FakeActorStorage(state);
  }

  async instance(config: ActorConfig, id: string, storage: ActorStoragePort, name?: string): Promise<FakeActorInstance> {
    if (!(storage instanceof FakeActorStorage)) throw new TypeError('FakeActorFactory instances need its own storage');
    const inst = new FakeActorInstance(config, id, storage, this.code, name);
    this.instances.push(inst);
    await this.code.construct?.(inst);
    return inst;
  }

  of(id: string): FakeActorInstance[] {
    return this.instances.filter((i) => i.id === id);
  }
}

export function textResponse(status: number, text: string): PeerResponse {
  return { status, statusText: '', headers: [['content-type', 'text/plain']], body: enc.encode(text) };
}

export function textOf(res: PeerResponse): string {
  return dec.decode(res.body);
}

export function textRequest(path: string, method = 'GET'): PeerRequest {
  return { url: `http://actor.test${path}`, method, headers: [], body: null };
}
