import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { EdgeError } from './errors.js';

// Secret values never sit in NATS in clear (docs/security-nats.md). The operator resolves a
// worker's secret bindings and seals each value with a key that only it and the agents hold
// (a Kubernetes Secret mounted into their pods; a file of `edge dev`); the agent opens them
// just before handing env to the isolate. Anyone who reads edge-workers sees ciphertext.
//
// AES-256-GCM with a synthetic IV (HMAC-SHA256 of the associated data and the plaintext):
// the same value for the same binding seals to the same bytes, so a config the operator
// rewrites is byte-identical to the one in KV (no new version on every reconcile, and the
// operator's repair of a changed entry is a plain comparison). What that reveals, that one
// binding kept its value, is already said by the version staying the same. The associated
// data names the namespace, worker and binding, so a sealed value copied to another
// worker's config does not open.

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** At least this much key material in the key file. */
export const MIN_KEY_BYTES = 32;

export class SealingKeyError extends EdgeError {}
/** A sealed value did not open: another key, another binding, or changed bytes. */
export class SealedValueError extends EdgeError {}

/** The associated data of one secret binding of one worker. */
export const secretAad = (namespace: string, worker: string, binding: string) => `edge-isolates/secret/${VERSION}/${namespace}/${worker}/${binding}`;

export class SecretSealer {
  private readonly encKey: Buffer;
  private readonly ivKey: Buffer;

  /** `material`: at least MIN_KEY_BYTES bytes (random, or a long random string); two keys are derived from it. */
  constructor(material: Uint8Array) {
    if (material.length < MIN_KEY_BYTES) throw new SealingKeyError(`the sealing key must hold at least ${MIN_KEY_BYTES} bytes, got ${material.length}`);
    this.encKey = Buffer.from(hkdfSync('sha256', material, 'edge-isolates', 'secret-sealing/enc', 32));
    this.ivKey = Buffer.from(hkdfSync('sha256', material, 'edge-isolates', 'secret-sealing/iv', 32));
  }

  /** The key from a file (a mounted Secret): its bytes, surrounding whitespace removed. */
  static fromFile(path: string): SecretSealer {
    let raw: string;
    try { raw = readFileSync(path, 'utf8'); } catch (err) {
      throw new SealingKeyError(`cannot read the sealing key file ${path}`, { cause: err });
    }
    return new SecretSealer(Buffer.from(raw.trim(), 'utf8'));
  }

  seal(plaintext: string, aad: string): string {
    const data = Buffer.from(plaintext, 'utf8');
    const iv = createHmac('sha256', this.ivKey).update(aad).update('\0').update(data).digest().subarray(0, IV_BYTES);
    const c = createCipheriv('aes-256-gcm', this.encKey, iv);
    c.setAAD(Buffer.from(aad, 'utf8'));
    const ct = Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
    return `${VERSION}.${iv.toString('base64url')}.${ct.toString('base64url')}`;
  }

  open(sealed: string, aad: string): string {
    const [v, ivText, ctText, ...rest] = sealed.split('.');
    if (v !== VERSION || ivText === undefined || ctText === undefined || rest.length > 0) throw new SealedValueError(`not a sealed value (${VERSION}.<iv>.<ciphertext>)`);
    const iv = Buffer.from(ivText, 'base64url');
    const ct = Buffer.from(ctText, 'base64url');
    if (iv.length !== IV_BYTES || ct.length < TAG_BYTES) throw new SealedValueError('sealed value too short');
    try {
      const d = createDecipheriv('aes-256-gcm', this.encKey, iv);
      d.setAAD(Buffer.from(aad, 'utf8'));
      d.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
      return Buffer.concat([d.update(ct.subarray(0, ct.length - TAG_BYTES)), d.final()]).toString('utf8');
    } catch (err) {
      throw new SealedValueError('sealed value does not open with this key for this binding', { cause: err });
    }
  }
}
