import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isActorId } from '../../common/keys.js';

// Actor ids: 64 lowercase hex characters, namespaced to one DurableActor by its
// metadata.uid (the per-CR key; it never enters an isolate).
//
//   id   = body (48 hex: 24 bytes) + tag (16 hex: 8 bytes)
//   tag  = HMAC-SHA256(key = uid, "edge-isolates/actor-id\0" + body hex)[0..8]
//   body = HMAC-SHA256(key = uid, "edge-isolates/actor-name\0" + name)[0..24]   idFromName
//        | 24 random bytes                                                   newUniqueId
//
// So idFromName is a pure function of (uid, name): every agent computes the same id, and
// the hash ring can place it without asking anyone. idFromString accepts exactly the ids
// this namespace can make (the tag is checked), so an id of another DurableActor (another
// uid) is refused, and a made-up string is refused with overwhelming probability.

export const ACTOR_ID_HEX_LENGTH = 64;
const BODY_BYTES = 24;
const TAG_BYTES = 8;
/** idFromName refuses names longer than this many UTF-8 bytes. */
export const MAX_ACTOR_NAME_BYTES = 4096;

/** One actor's id; `name` is set for ids made by idFromName. */
export class ActorId {
  constructor(readonly hex: string, readonly name?: string) {}
  toString(): string { return this.hex; }
  equals(other: ActorId | string): boolean {
    return this.hex === (typeof other === 'string' ? other : other.hex);
  }
}

/** The ids of one DurableActor (one actor namespace). Pure apart from newUniqueId's randomness. */
/** Ids computed or checked recently, per namespace: a hot actor costs no HMAC per call. */
const CACHE_ENTRIES = 4096;

function remember<K, V>(m: Map<K, V>, k: K, v: V): V {
  if (m.size >= CACHE_ENTRIES) m.delete(m.keys().next().value as K);
  m.set(k, v);
  return v;
}

export class ActorIds {
  private readonly uid: string;
  private readonly byName = new Map<string, string>();
  private readonly valid = new Map<string, true>();

  constructor(uid: string) {
    if (typeof uid !== 'string' || uid.length === 0) throw new TypeError('ActorIds: the DurableActor uid must be a non-empty string');
    this.uid = uid;
  }

  private tag(body: string): string {
    return createHmac('sha256', this.uid).update(`edge-isolates/actor-id\0${body}`).digest().subarray(0, TAG_BYTES).toString('hex');
  }

  private withTag(body: string, name?: string): ActorId {
    return new ActorId(body + this.tag(body), name);
  }

  /** The same id for the same name on every agent. Throws TypeError for a name over MAX_ACTOR_NAME_BYTES. */
  idFromName(name: string): ActorId {
    if (typeof name !== 'string') throw new TypeError('an actor name must be a string');
    const size = Buffer.byteLength(name, 'utf8');
    if (size > MAX_ACTOR_NAME_BYTES) throw new TypeError(`the name is ${size} bytes long; the limit is ${MAX_ACTOR_NAME_BYTES} bytes (UTF-8)`);
    const known = this.byName.get(name);
    if (known !== undefined) return new ActorId(known, name);
    const body = createHmac('sha256', this.uid).update(`edge-isolates/actor-name\0${name}`).digest().subarray(0, BODY_BYTES).toString('hex');
    const id = this.withTag(body, name);
    remember(this.byName, name, id.hex);
    remember(this.valid, id.hex, true);
    return id;
  }

  newUniqueId(): ActorId {
    return this.withTag(randomBytes(BODY_BYTES).toString('hex'));
  }

  /** True when `hex` (64 hex, any case) is an id of this namespace. */
  owns(hex: string): boolean {
    if (typeof hex !== 'string' || hex.length !== ACTOR_ID_HEX_LENGTH) return false;
    const id = hex.toLowerCase();
    if (this.valid.has(id)) return true;
    if (!isActorId(id)) return false;
    const body = id.slice(0, BODY_BYTES * 2);
    const expected = Buffer.from(this.tag(body), 'hex');
    const ok = timingSafeEqual(expected, Buffer.from(id.slice(BODY_BYTES * 2), 'hex'));
    if (ok) remember(this.valid, id, true);
    return ok;
  }

  /**
   * Parses an id's string form (normalized to lowercase). Throws a TypeError saying why
   * when it is not 64 hex characters or not an id of this namespace (the message never
   * names the uid).
   */
  idFromString(hex: string): ActorId {
    if (typeof hex !== 'string') throw new TypeError('an actor id must be a string');
    const id = hex.toLowerCase();
    if (!isActorId(id)) {
      const shown = hex.length > 80 ? `${JSON.stringify(hex.slice(0, 80))}...` : JSON.stringify(hex);
      throw new TypeError(`${shown} is not an actor id (an id is ${ACTOR_ID_HEX_LENGTH} hexadecimal characters)`);
    }
    if (!this.owns(id)) throw new TypeError(`"${id}" is not an id of this actor namespace (it was made for another DurableActor, or altered)`);
    return new ActorId(id);
  }
}
