import { applyOps } from '../../../common/actor-log.js';
import { FencedError, type ActorAddress, type ActorState, type StorageOp } from '../../../common/actor-ops.js';
import type { ActorLogPort } from '../host.js';

// The durable actor log in memory, fenced the way JetStream fences common/actor-log.ts:
// every write names the sequence it expects the actor's log to end at, and is refused
// with FencedError when anything else was written since. Like the real log, the epoch is
// carried but not checked by the server: a superseded owner is stopped because the new
// owner's claim moved the log on, not because its epoch is lower.

export type FakeLogWrite = 'claim' | 'commit' | 'release' | 'snapshot';

export type FakeLogRecord =
  | { seq: number; kind: 'claim'; agent: string; epoch: number }
  | { seq: number; kind: 'commit'; epoch: number; ops: StorageOp[] }
  | { seq: number; kind: 'release'; agent: string; epoch: number }
  | { seq: number; kind: 'snapshot'; agent: string; epoch: number; state: ActorState };

/**
 * Runs before every write, before the fencing check: throw to fail the write (nothing is
 * stored, as when NATS is unreachable), or return a promise to hold it. Also runs before
 * every read barrier ('check', epoch 0).
 */
export type FakeLogHook = (write: FakeLogWrite | 'check', addr: ActorAddress, epoch: number) => void | Promise<void>;

const name = (a: ActorAddress) => `${a.namespace}/${a.actor}/${a.id}`;

export class FakeActorLog implements ActorLogPort {
  /** One sequence for every actor, as a JetStream stream has. */
  private seq = 0;
  private readonly logs = new Map<string, FakeLogRecord[]>();
  /** Writes refused by the fence, in order. */
  readonly fenced: { write: FakeLogWrite; addr: ActorAddress; epoch: number; expectedSeq: number }[] = [];
  hook: FakeLogHook | undefined;
  /** lastSequence() calls (read barriers), in order. */
  readonly checks: ActorAddress[] = [];

  /** The records of one actor, oldest first (a snapshot replaces those before it). */
  records(addr: ActorAddress): readonly FakeLogRecord[] {
    return this.logs.get(name(addr)) ?? [];
  }

  async load(addr: ActorAddress): Promise<Awaited<ReturnType<ActorLogPort['load']>>> {
    await Promise.resolve();
    const recs = this.records(addr);
    const state: ActorState = { values: new Map(), alarm: null };
    let owner: { agent: string; epoch: number } | null = null;
    for (const r of recs) {
      switch (r.kind) {
        case 'claim': case 'release': owner = { agent: r.agent, epoch: r.epoch }; break;
        case 'snapshot':
          owner = { agent: r.agent, epoch: r.epoch };
          state.values = new Map(r.state.values);
          state.alarm = r.state.alarm;
          break;
        case 'commit': applyOps(state, r.ops, 0); break;
      }
    }
    return { state, lastSeq: recs.at(-1)?.seq ?? 0, owner };
  }

  async claim(addr: ActorAddress, agent: string, lastSeq: number, prevEpoch: number): Promise<{ epoch: number; seq: number }> {
    const epoch = prevEpoch + 1;
    const seq = await this.append(addr, 'claim', epoch, lastSeq, (s) => ({ seq: s, kind: 'claim', agent, epoch }));
    return { epoch, seq };
  }

  commit(addr: ActorAddress, epoch: number, expectedSeq: number, ops: StorageOp[]): Promise<number> {
    return this.append(addr, 'commit', epoch, expectedSeq, (s) => ({ seq: s, kind: 'commit', epoch, ops: [...ops] }));
  }

  release(addr: ActorAddress, agent: string, epoch: number, expectedSeq: number): Promise<number> {
    return this.append(addr, 'release', epoch, expectedSeq, (s) => ({ seq: s, kind: 'release', agent, epoch }));
  }

  async compact(addr: ActorAddress, epoch: number, expectedSeq: number, state: ActorState, agent?: string): Promise<{ seq: number }> {
    const owner = agent ?? (await this.load(addr)).owner?.agent ?? '';
    const snap = { values: new Map(state.values), alarm: state.alarm };
    const seq = await this.append(addr, 'snapshot', epoch, expectedSeq, (s) => ({ seq: s, kind: 'snapshot', agent: owner, epoch, state: snap }));
    // The rollup: the snapshot is all that is left of the history.
    this.logs.set(name(addr), this.records(addr).filter((r) => r.seq >= seq));
    return { seq };
  }

  async lastSequence(addr: ActorAddress): Promise<number> {
    await this.hook?.('check', addr, 0);
    this.checks.push(addr);
    return this.records(addr).at(-1)?.seq ?? 0;
  }

  /** Another agent takes the actor over, as its claim would: the current owner's next write is fenced. */
  async steal(addr: ActorAddress, agent: string): Promise<{ epoch: number; seq: number }> {
    const { lastSeq, owner } = await this.load(addr);
    return this.claim(addr, agent, lastSeq, owner?.epoch ?? 0);
  }

  private async append(addr: ActorAddress, write: FakeLogWrite, epoch: number, expectedSeq: number, rec: (seq: number) => FakeLogRecord): Promise<number> {
    await this.hook?.(write, addr, epoch);
    const recs = this.logs.get(name(addr)) ?? [];
    const last = recs.at(-1)?.seq ?? 0;
    if (last !== expectedSeq) {
      this.fenced.push({ write, addr, epoch, expectedSeq });
      throw new FencedError(addr, `actor ${name(addr)}: ${write} at epoch ${epoch} refused: it expected the log to end at sequence ${expectedSeq} but it ends at ${last}`,
        { write, epoch, expectedSeq, actualSeq: last });
    }
    this.seq += 1;
    recs.push(rec(this.seq));
    this.logs.set(name(addr), recs);
    return this.seq;
  }
}
