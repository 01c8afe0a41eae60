import { describe, expect, it } from 'vitest';
import { openEnv, sealEnv, type ResolvedEnv } from '../../common/resolve-bindings.js';
import { SealedValueError, SealingKeyError, SecretSealer, secretAad } from '../../common/sealing.js';

// Secret values in NATS (common/sealing.ts): sealed by the operator, opened by the agents.

const key = (b: number) => new SecretSealer(Buffer.alloc(32, b));

describe('SecretSealer', () => {
  const aad = secretAad('shop', 'api', 'TOKEN');

  it('round-trips, hides the value, and seals the same value for the same binding to the same bytes', () => {
    const s = key(1);
    const sealed = s.seal('s3cret', aad);
    expect(sealed).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain('s3cret');
    expect(s.open(sealed, aad)).toBe('s3cret');
    expect(s.seal('s3cret', aad)).toBe(sealed);
    expect(s.seal('s3cret!', aad)).not.toBe(sealed);
    expect(s.seal('s3cret', secretAad('shop', 'web', 'TOKEN'))).not.toBe(sealed);
  });

  it('does not open under another key, for another binding or worker, or with a changed byte', () => {
    const sealed = key(1).seal('s3cret', aad);
    expect(() => key(2).open(sealed, aad)).toThrow(SealedValueError);
    expect(() => key(1).open(sealed, secretAad('other', 'api', 'TOKEN'))).toThrow(SealedValueError);
    expect(() => key(1).open(sealed, secretAad('shop', 'api', 'OTHER'))).toThrow(SealedValueError);
    const flipped = sealed.slice(0, -2) + (sealed.at(-2) === 'A' ? 'B' : 'A') + sealed.at(-1);
    expect(() => key(1).open(flipped, aad)).toThrow(SealedValueError);
    expect(() => key(1).open('s3cret', aad)).toThrow(/not a sealed value/);
  });

  it('refuses a key shorter than 32 bytes', () => {
    expect(() => new SecretSealer(Buffer.alloc(16))).toThrow(SealingKeyError);
  });
});

describe('sealEnv / openEnv', () => {
  const env: ResolvedEnv = { text: { MODE: 'prod' }, secrets: { TOKEN: 's3cret', B: 'b' }, actors: {}, ai: {} };

  it('publishes secrets sealed (vars in clear) and gives them back to an agent with the key', () => {
    const published = sealEnv(env, 'shop', 'api', key(1));
    expect(published.text).toEqual({ MODE: 'prod' });
    expect(Object.keys(published.sealed)).toEqual(['B', 'TOKEN']);
    expect(JSON.stringify(published)).not.toContain('s3cret');
    expect(openEnv(published, 'shop', 'api', key(1))).toEqual(env);
  });

  it('refuses a sealed value moved into another worker\'s config, and an agent without the key', () => {
    const published = sealEnv(env, 'shop', 'api', key(1));
    expect(() => openEnv(published, 'attacker', 'api', key(1))).toThrow(/secret binding B/);
    expect(() => openEnv(published, 'shop', 'api', undefined)).toThrow(/no sealing key/);
    expect(openEnv({ ...published, sealed: {} }, 'shop', 'api', undefined).secrets).toEqual({});
  });
});
