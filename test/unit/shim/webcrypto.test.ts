import { createHash, createPublicKey, generateKeyPairSync, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bundleWorker } from '../../../cli/deploy.js';
import { cryptoInFlight, GLOBAL_SLOTS, HostCrypto, MAX_IN_FLIGHT_PER_ISOLATE, MAX_KEYS_PER_ISOLATE, resetCryptoPeak } from '../../../node-agent/bindings/host-crypto.js';
import { evaluate, TestWorker } from './run-worker.js';

// crypto.subtle in a real isolate against published test vectors, keys made and checked by
// Node's own crypto on the host, and the limits one tenant's crypto runs under.

/** Helpers the worker snippets share: hex in and out, UTF-8, base64url. */
const H = `
  const hex = (s) => new Uint8Array(s.match(/../g)?.map((b) => parseInt(b, 16)) ?? []);
  const toHex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, '0')).join('');
  const utf8 = (s) => new TextEncoder().encode(s);
  const b64u = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const subtle = crypto.subtle;
`;
const run = <T = unknown>(body: string, limits = {}): Promise<T> => evaluate<T>(H + body, {}, { limits });
const b64 = (b: Uint8Array | Buffer | ArrayBuffer): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('base64');

describe('published test vectors', () => {
  it('HMAC-SHA-256: RFC 4231 test cases 1, 2 and 6', async () => {
    expect(await run(`
      const mac = async (key, data) => {
        const k = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
        const sig = await subtle.sign('HMAC', k, data);
        return [toHex(sig), await subtle.verify('HMAC', k, sig, data), await subtle.verify('HMAC', k, sig, utf8('other'))];
      };
      return [
        await mac(new Uint8Array(20).fill(0x0b), utf8('Hi There')),
        await mac(utf8('Jefe'), utf8('what do ya want for nothing?')),
        await mac(new Uint8Array(131).fill(0xaa), utf8('Test Using Larger Than Block-Size Key - Hash Key First')),
      ];
    `)).toEqual([
      ['b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7', true, false],
      ['5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843', true, false],
      ['60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54', true, false],
    ]);
  });

  it('PBKDF2: RFC 6070 (HMAC-SHA-1) and RFC 7914 section 11 (HMAC-SHA-256)', async () => {
    expect(await run(`
      const pbkdf2 = async (p, s, iterations, bytes, hash) => {
        const k = await subtle.importKey('raw', utf8(p), 'PBKDF2', false, ['deriveBits']);
        return toHex(await subtle.deriveBits({ name: 'PBKDF2', salt: utf8(s), iterations, hash }, k, bytes * 8));
      };
      return [
        await pbkdf2('password', 'salt', 1, 20, 'SHA-1'),
        await pbkdf2('password', 'salt', 2, 20, 'SHA-1'),
        await pbkdf2('password', 'salt', 4096, 20, 'SHA-1'),
        await pbkdf2('passwordPASSWORDpassword', 'saltSALTsaltSALTsaltSALTsaltSALTsalt', 4096, 25, 'SHA-1'),
        await pbkdf2('passwd', 'salt', 1, 64, 'SHA-256'),
      ];
    `)).toEqual([
      '0c60c80f961f0e71f3a9b524af6012062fe037a6',
      'ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957',
      '4b007901b765489abead49d926f721d065a429c1',
      '3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038',
      '55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783',
    ]);
  });

  it('HKDF-SHA-256: RFC 5869 test cases 1 and 3, and deriveKey to an HMAC key', async () => {
    expect(await run(`
      const ikm = await subtle.importKey('raw', new Uint8Array(22).fill(0x0b), 'HKDF', false, ['deriveBits', 'deriveKey']);
      const one = await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: hex('000102030405060708090a0b0c'), info: hex('f0f1f2f3f4f5f6f7f8f9') }, ikm, 42 * 8);
      const three = await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: new Uint8Array(0) }, ikm, 42 * 8);
      const k = await subtle.deriveKey({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: new Uint8Array(0) }, ikm, { name: 'HMAC', hash: 'SHA-256', length: 256 }, true, ['sign']);
      return [toHex(one), toHex(three), toHex(await subtle.exportKey('raw', k)), k.algorithm];
    `)).toEqual([
      '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
      '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
      '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d',
      { name: 'HMAC', hash: { name: 'SHA-256' }, length: 256 },
    ]);
  });

  it('AES-GCM (GCM spec test cases 2 and 3), AES-CBC and AES-CTR (NIST SP 800-38A F.2.1, F.5.1), AES-KW (RFC 3394 4.1)', async () => {
    expect(await run(`
      const gcm = async (k, iv, p) => {
        const key = await subtle.importKey('raw', hex(k), 'AES-GCM', false, ['encrypt', 'decrypt']);
        const c = await subtle.encrypt({ name: 'AES-GCM', iv: hex(iv) }, key, hex(p));
        return [toHex(c), toHex(await subtle.decrypt({ name: 'AES-GCM', iv: hex(iv) }, key, c)) === p];
      };
      const nist = '2b7e151628aed2a6abf7158809cf4f3c';
      const cbcKey = await subtle.importKey('raw', hex(nist), { name: 'AES-CBC' }, false, ['encrypt', 'decrypt']);
      const cbc = await subtle.encrypt({ name: 'AES-CBC', iv: hex('000102030405060708090a0b0c0d0e0f') }, cbcKey, hex('6bc1bee22e409f96e93d7e117393172a'));
      const ctrKey = await subtle.importKey('raw', hex(nist), 'AES-CTR', false, ['encrypt']);
      const ctr = await subtle.encrypt({ name: 'AES-CTR', counter: hex('f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff'), length: 64 }, ctrKey, hex('6bc1bee22e409f96e93d7e117393172a'));
      const kek = await subtle.importKey('raw', hex('000102030405060708090a0b0c0d0e0f'), 'AES-KW', false, ['wrapKey', 'unwrapKey']);
      const data = await subtle.importKey('raw', hex('00112233445566778899aabbccddeeff'), 'AES-CBC', true, ['encrypt']);
      const wrapped = await subtle.wrapKey('raw', data, kek, 'AES-KW');
      const back = await subtle.unwrapKey('raw', wrapped, kek, 'AES-KW', 'AES-CBC', true, ['encrypt']);
      return [
        await gcm('00000000000000000000000000000000', '000000000000000000000000', '00000000000000000000000000000000'),
        await gcm('feffe9928665731c6d6a8f9467308308', 'cafebabefacedbaddecaf888', 'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255'),
        toHex(cbc).slice(0, 32), toHex(ctr), toHex(wrapped), toHex(await subtle.exportKey('raw', back)),
      ];
    `)).toEqual([
      ['0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf', true],
      ['42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985' + '4d5c2af327cd64a62cf35abd2ba6fab4', true],
      '7649abac8119b246cee98e9b12e9197d', '874d6191b620e3261bef6864990db6ce',
      '1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5', '00112233445566778899aabbccddeeff',
    ]);
  });

  it('Ed25519: RFC 8032 tests 1 and 2 (also under the NODE-ED25519 name Workers accepts)', async () => {
    expect(await run(`
      const ed = async (sk, pk, msg, name) => {
        const priv = await subtle.importKey('jwk', { kty: 'OKP', crv: 'Ed25519', d: b64u(hex(sk)), x: b64u(hex(pk)) }, name === 'Ed25519' ? 'Ed25519' : { name, namedCurve: name }, false, ['sign']);
        const pub = await subtle.importKey('raw', hex(pk), name, true, ['verify']);
        const sig = await subtle.sign(name, priv, hex(msg));
        return [toHex(sig), await subtle.verify(name, pub, sig, hex(msg)), pub.algorithm];
      };
      return [
        await ed('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', '', 'Ed25519'),
        await ed('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', '72', 'NODE-ED25519'),
      ];
    `)).toEqual([
      ['e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b', true, { name: 'Ed25519' }],
      ['92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00', true, { name: 'NODE-ED25519', namedCurve: 'NODE-ED25519' }],
    ]);
  });

  it('digest: SHA-1/256/384/512 and MD5 of "abc" (FIPS 180-2 appendix, RFC 1321), and DigestStream', async () => {
    const out = await run<string[]>(`
      const r = [];
      for (const a of ['SHA-1', 'SHA-256', 'SHA-384', 'SHA-512', 'MD5']) r.push(toHex(await subtle.digest(a, utf8('abc'))));
      const ds = new crypto.DigestStream('SHA-256');
      const w = ds.getWriter();
      for (let i = 0; i < 8; i++) await w.write(new Uint8Array(1 << 20).fill(i));
      await w.close();
      r.push(toHex(await ds.digest), String(ds.bytesWritten), String(ds instanceof WritableStream), String(typeof DigestStream));
      return r;
    `);
    const h = createHash('sha256');
    for (let i = 0; i < 8; i++) h.update(Buffer.alloc(1 << 20, i));
    expect(out).toEqual([
      'a9993e364706816aba3e25717850c26c9cd0d89d',
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
      'cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7',
      'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
      '900150983cd24fb0d6963f7d28e17f72',
      h.digest('hex'), String(8 << 20), 'true', 'function',
    ]);
  });
});

describe('keys shared with Node on the host', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = (k: KeyObject, type: 'spki' | 'pkcs8') => b64(k.export({ format: 'der', type }));
  const msg = 'signed across the bridge';

  it('ECDSA P-256/P-384, RSASSA-PKCS1-v1_5 and RSA-PSS: the isolate signs (PKCS8), Node verifies; Node signs, the isolate verifies (SPKI and JWK)', async () => {
    const nodeSigs = {
      es256: b64(nodeSign('sha256', Buffer.from(msg), { key: ec.privateKey, dsaEncoding: 'ieee-p1363' })),
      rs256: b64(nodeSign('sha256', Buffer.from(msg), rsa.privateKey)),
    };
    const out = await run<Record<string, string | boolean>>(`
      const msg = utf8(${JSON.stringify(msg)});
      const ecAlg = { name: 'ECDSA', namedCurve: 'P-256' };
      const ecPriv = await subtle.importKey('pkcs8', unb64('${der(ec.privateKey, 'pkcs8')}'), ecAlg, false, ['sign']);
      const ecPub = await subtle.importKey('spki', unb64('${der(ec.publicKey, 'spki')}'), ecAlg, true, ['verify']);
      const ecJwk = await subtle.importKey('jwk', ${JSON.stringify(ec.publicKey.export({ format: 'jwk' }))}, ecAlg, true, ['verify']);
      const p384 = await subtle.importKey('pkcs8', unb64('${der(ec384.privateKey, 'pkcs8')}'), { name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign']);
      const rsaAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
      const rsaPriv = await subtle.importKey('pkcs8', unb64('${der(rsa.privateKey, 'pkcs8')}'), rsaAlg, false, ['sign']);
      const rsaPub = await subtle.importKey('spki', unb64('${der(rsa.publicKey, 'spki')}'), rsaAlg, true, ['verify']);
      const pssPriv = await subtle.importKey('pkcs8', unb64('${der(rsa.privateKey, 'pkcs8')}'), { name: 'RSA-PSS', hash: 'SHA-256' }, false, ['sign']);
      return {
        es256: b64u(await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, ecPriv, msg)),
        es384: b64u(await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, p384, msg)),
        rs256: b64u(await subtle.sign('RSASSA-PKCS1-v1_5', rsaPriv, msg)),
        ps256: b64u(await subtle.sign({ name: 'RSA-PSS', saltLength: 32 }, pssPriv, msg)),
        nodeEs256: await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, ecPub, unb64('${nodeSigs.es256}'), msg),
        nodeEs256Jwk: await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, ecJwk, unb64('${nodeSigs.es256}'), msg),
        nodeRs256: await subtle.verify('RSASSA-PKCS1-v1_5', rsaPub, unb64('${nodeSigs.rs256}'), msg),
        tampered: await subtle.verify('RSASSA-PKCS1-v1_5', rsaPub, unb64('${nodeSigs.rs256}'), utf8('other')),
        jwk: (await subtle.exportKey('jwk', ecPub)).x,
        rsaAlg: JSON.stringify(rsaPub.algorithm),
      };
    `);
    const sig = (k: string) => Buffer.from(out[k] as string, 'base64url');
    expect(nodeVerify('sha256', Buffer.from(msg), { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, sig('es256'))).toBe(true);
    expect(nodeVerify('sha384', Buffer.from(msg), { key: ec384.publicKey, dsaEncoding: 'ieee-p1363' }, sig('es384'))).toBe(true);
    expect(nodeVerify('sha256', Buffer.from(msg), rsa.publicKey, sig('rs256'))).toBe(true);
    expect(nodeVerify('sha256', Buffer.from(msg), { key: rsa.publicKey, padding: 6, saltLength: 32 }, sig('ps256'))).toBe(true);
    expect(out).toMatchObject({ nodeEs256: true, nodeEs256Jwk: true, nodeRs256: true, tampered: false, jwk: ec.publicKey.export({ format: 'jwk' }).x });
    expect(JSON.parse(out.rsaAlg as string)).toMatchObject({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, hash: { name: 'SHA-256' } });
  });

  it('generateKey, ECDH and X25519 agreement, RSA-OAEP, and the exported public keys Node reads', async () => {
    const out = await run<Record<string, unknown>>(`
      const a = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
      const b = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
      const ab = await subtle.deriveBits({ name: 'ECDH', public: b.publicKey }, a.privateKey, 256);
      const ba = await subtle.deriveBits({ name: 'ECDH', public: a.publicKey }, b.privateKey, 256);
      const x = await subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
      const y = await subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
      const xy = await subtle.deriveBits({ name: 'X25519', public: y.publicKey }, x.privateKey, 256);
      const yx = await subtle.deriveBits({ name: 'X25519', public: x.publicKey }, y.privateKey, 256);
      const oaep = await subtle.generateKey({ name: 'RSA-OAEP', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['encrypt', 'decrypt']);
      const ct = await subtle.encrypt({ name: 'RSA-OAEP', label: utf8('l') }, oaep.publicKey, utf8('secret'));
      const pt = new TextDecoder().decode(await subtle.decrypt({ name: 'RSA-OAEP', label: utf8('l') }, oaep.privateKey, ct));
      const k = a.privateKey;
      const p521 = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-521' }, false, ['sign', 'verify']);
      const p521sig = await subtle.sign({ name: 'ECDSA', hash: 'SHA-512' }, p521.privateKey, utf8('m'));
      return {
        p521: [p521sig.byteLength, await subtle.verify({ name: 'ECDSA', hash: 'SHA-512' }, p521.publicKey, p521sig, utf8('m'))],
        agree: toHex(ab) === toHex(ba), agreeX: toHex(xy) === toHex(yx), pt,
        spki: b64u(await subtle.exportKey('spki', oaep.publicKey)),
        pkcs8: (await subtle.exportKey('pkcs8', a.privateKey)).byteLength > 100,
        shape: [k.type, k.extractable, k.algorithm, k.usages, Object.isFrozen(k.usages), Object.isFrozen(k.algorithm), x.publicKey.type, x.privateKey.extractable, oaep.publicKey.algorithm.publicExponent instanceof Uint8Array],
        props: Object.keys(k).length,
      };
    `);
    expect(out).toMatchObject({ agree: true, agreeX: true, pt: 'secret', pkcs8: true, props: 0, p521: [132, true] });
    expect(out.shape).toEqual(['private', true, { name: 'ECDH', namedCurve: 'P-256' }, ['deriveBits'], true, true, 'public', false, true]);
    expect(createPublicKey({ key: Buffer.from(out.spki as string, 'base64url'), format: 'der', type: 'spki' }).asymmetricKeyDetails).toMatchObject({ modulusLength: 2048 });
  });

  it('a key imported when the module loads serves every request of the isolate', async () => {
    const w = await TestWorker.load(`
      const keyP = crypto.subtle.importKey('raw', new TextEncoder().encode('Jefe'), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      export default { async fetch() {
        const mac = await crypto.subtle.sign('HMAC', await keyP, new TextEncoder().encode('what do ya want for nothing?'));
        return new Response([...new Uint8Array(mac)].map((x) => x.toString(16).padStart(2, '0')).join(''));
      } };`, { name: 'module-key' });
    try {
      for (let i = 0; i < 3; i++) expect((await w.fetch()).text).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
    } finally {
      w.dispose();
    }
  });

  it('errors are the DOMExceptions WebCrypto names', async () => {
    expect(await run(`
      const name = async (p) => { try { await p; return 'resolved'; } catch (e) { return [e.name, e instanceof DOMException || e instanceof TypeError]; } };
      const hmac = await subtle.importKey('raw', utf8('k'), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
      const gcm = await subtle.importKey('raw', new Uint8Array(16), 'AES-GCM', false, ['decrypt']);
      return {
        badLength: await name(subtle.importKey('raw', new Uint8Array(3), 'AES-GCM', false, ['encrypt'])),
        usage: await name(subtle.sign('HMAC', hmac, utf8('x'))),
        export: await name(subtle.exportKey('raw', hmac)),
        unknown: await name(subtle.generateKey({ name: 'ROT13' }, true, ['encrypt'])),
        noUsages: await name(subtle.generateKey({ name: 'AES-GCM', length: 128 }, true, [])),
        tag: await name(subtle.decrypt({ name: 'AES-GCM', iv: new Uint8Array(12) }, gcm, new Uint8Array(32))),
        digest: await name(subtle.digest('SHA-3', utf8('x'))),
        notKey: await name(subtle.sign('HMAC', 1, utf8('x'))),
        hugeRsa: await name(subtle.generateKey({ name: 'RSA-PSS', modulusLength: 16384, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, false, ['sign'])),
      };
    `)).toEqual({
      badLength: ['DataError', true], usage: ['InvalidAccessError', true], export: ['InvalidAccessError', true],
      unknown: ['NotSupportedError', true], noUsages: ['SyntaxError', true], tag: ['OperationError', true],
      digest: ['NotSupportedError', true], notKey: ['TypeError', true], hugeRsa: ['NotSupportedError', true],
    });
  });
});

describe('limits and isolation (hostile)', () => {
  it(`an isolate holds at most ${MAX_KEYS_PER_ISOLATE} keys: the 20,000-key loop gets a QuotaExceededError it can catch, and keeps working`, async () => {
    const out = await run<{ made: number; errors: string[]; after: string }>(`
      const keys = [];
      const errors = new Set();
      for (let i = 0; i < 20000; i++) {
        try { keys.push(await subtle.importKey('raw', new Uint8Array([i & 255, i >> 8]), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])); }
        catch (e) { errors.add(e.name + ': ' + e.message.slice(0, 60)); }
      }
      const after = toHex(await subtle.digest('SHA-1', utf8('abc')));
      return { made: keys.length, errors: [...errors], after };
    `, { cpuMsPerRequest: 60_000 });
    expect(out.made).toBeGreaterThanOrEqual(MAX_KEYS_PER_ISOLATE - 1);
    expect(out.made).toBeLessThanOrEqual(MAX_KEYS_PER_ISOLATE);
    expect(out.errors).toEqual([expect.stringMatching(/^QuotaExceededError: crypto\.subtle\.importKey: worker test-worker already holds/)]);
    expect(out.after).toBe('a9993e364706816aba3e25717850c26c9cd0d89d');
  }, 120_000);

  it('keys the worker drops are released on the host: 15,000 made and dropped (the garbage collector running between) never reach the limit', async () => {
    expect(await run(`
      let made = 0;
      let err = null;
      for (let i = 0; i < 15000; i++) {
        try { await subtle.importKey('raw', new Uint8Array([1]), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']); made++; } catch (e) { err = e.name; break; }
        if (i % 1000 === 0) {
          let junk = [];
          for (let j = 0; j < 200; j++) junk.push(new Array(10000).fill(j));
          junk = null;
          await new Promise((r) => setTimeout(r, 1));
        }
      }
      return [made, err];
    `, { cpuMsPerRequest: 60_000 })).toEqual([15000, null]);
  }, 120_000);

  it('a key cannot be forged from a number, an object, the CryptoKey prototype or the host\'s wire form', async () => {
    // A key's own algorithm and usages are frozen; CryptoKey.prototype is open, as on workerd: the key's state is in private fields.
    expect(await run(`
      const name = async (f) => { try { await f(); return 'resolved'; } catch (e) { return e.name; } };
      const real = await subtle.importKey('raw', utf8('k'), { name: 'HMAC', hash: 'SHA-256' }, true, ['sign']);
      const ecdh = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
      const data = utf8('x');
      return {
        number: await name(() => subtle.sign('HMAC', 1, data)),
        object: await name(() => subtle.sign('HMAC', { type: 'secret', algorithm: real.algorithm, usages: ['sign'] }, data)),
        proto: await name(() => subtle.sign('HMAC', Object.create(CryptoKey.prototype), data)),
        wire: await name(() => subtle.exportKey('raw', { $edgeKey: 1 })),
        wireInAlgorithm: await name(() => subtle.deriveBits({ name: 'ECDH', public: { $edgeKey: 1 } }, ecdh.privateKey, 256)),
        construct: await name(() => new CryptoKey()),
        getter: await name(() => Object.getOwnPropertyDescriptor(CryptoKey.prototype, 'type').get.call({})),
        frozen: (() => { try { real.algorithm.name = 'x'; } catch {} return [real.algorithm.name, Object.isFrozen(real.usages), Object.isFrozen(CryptoKey.prototype)]; })(),
        stillWorks: (await subtle.sign('HMAC', real, data)).byteLength,
      };
    `)).toEqual({
      number: 'TypeError', object: 'TypeError', proto: 'TypeError', wire: 'TypeError', wireInAlgorithm: 'TypeError',
      construct: 'TypeError', getter: 'TypeError', frozen: ['HMAC', true, false], stillWorks: 32,
    });
  });

  it('a key id names nothing in another isolate\'s table, nor after its isolate is gone; waiting work fails when it goes', async () => {
    const a = new HostCrypto('a');
    const b = new HostCrypto('b');
    const made = await a.call('importKey', ['raw', new Uint8Array(16), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']]);
    const id = ((made as { v: { key: { id: number } } }).v.key).id;
    const sign = (h: HostCrypto) => h.call('sign', ['HMAC', { $edgeKey: id }, new Uint8Array(1)]);
    expect(await sign(a)).toMatchObject({ v: expect.any(ArrayBuffer) });
    expect(await sign(b)).toEqual({ e: ['InvalidAccessError', expect.stringMatching(/not one of this worker's keys/)] });
    // Work queued behind a full gate fails once the isolate is gone.
    const pbkdf = await a.call('importKey', ['raw', new Uint8Array(8), 'PBKDF2', false, ['deriveBits']]);
    const pid = (pbkdf as { v: { key: { id: number } } }).v.key.id;
    const flood = Array.from({ length: 10 }, () => a.call('deriveBits', [{ name: 'PBKDF2', hash: 'SHA-256', salt: new Uint8Array(8), iterations: 100_000 }, { $edgeKey: pid }, 256]));
    a.close();
    const outcomes = await Promise.all(flood);
    // Only the isolate's first MAX_IN_FLIGHT_PER_ISOLATE had started: the rest were waiting.
    expect(MAX_IN_FLIGHT_PER_ISOLATE).toBeLessThan(10);
    expect(outcomes.filter((o) => 'e' in o && o.e[1] === 'the isolate is gone')).toHaveLength(10 - MAX_IN_FLIGHT_PER_ISOLATE);
    expect(await sign(a)).toMatchObject({ e: ['InvalidAccessError', expect.any(String)] });
    expect(a.keyCount).toBe(0);
  });

  it('inputs are bounded: a 40 MiB digest is a QuotaExceededError the worker catches, as are calls past 64 MiB of unsettled input; DigestStream hashes more in pieces', async () => {
    expect(await run(`
      let err;
      try { await subtle.digest('SHA-256', new Uint8Array(40 << 20)); } catch (e) { err = [e.name, e instanceof DOMException]; }
      let enc;
      const k = await subtle.importKey('raw', new Uint8Array(16), 'AES-GCM', false, ['encrypt']);
      try { await subtle.encrypt({ name: 'AES-GCM', iv: new Uint8Array(12) }, k, new Uint8Array(33 << 20)); } catch (e) { enc = e.name; }
      const ds = new DigestStream('SHA-1');
      const w = ds.getWriter();
      for (let i = 0; i < 40; i++) await w.write(new Uint8Array(1 << 20));
      await w.close();
      // One 30 MiB buffer handed to many calls at once: each would be a copy on the host.
      const big = new Uint8Array(30 << 20);
      const many = await Promise.all(Array.from({ length: 50 }, () => subtle.digest('SHA-256', big).then(() => 'ok', (e) => e.name)));
      return [err, enc, (await ds.digest).byteLength, ds.bytesWritten, many.filter((x) => x === 'ok').length, [...new Set(many.filter((x) => x !== 'ok'))]];
    `, { memoryMiB: 256 })).toEqual([['QuotaExceededError', true], 'QuotaExceededError', 20, 40 << 20, 2, ['QuotaExceededError']]);
  });

  it('a thousand PBKDF2 calls with 10M iterations are refused as Workers refuses them; a flood of allowed ones runs a few at a time while a neighbour keeps answering', async () => {
    const flood = await TestWorker.load(`${H}
      export default { async fetch(req) {
        const k = await subtle.importKey('raw', utf8('pw'), 'PBKDF2', false, ['deriveBits']);
        const bits = (iterations) => subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: utf8('salt'), iterations }, k, 256).then(() => 'ok', (e) => e.name);
        const huge = await Promise.all(Array.from({ length: 1000 }, () => bits(10_000_000)));
        const allowed = await Promise.all(Array.from({ length: 60 }, () => bits(100_000)));
        return Response.json({ huge: [...new Set(huge)], allowed: [...new Set(allowed)] });
      } };`, { name: 'flood', limits: { cpuMsPerRequest: 20_000 } });
    const neighbour = await TestWorker.load(`export default { async fetch() { return new Response(new Uint8Array(await crypto.subtle.digest('SHA-256', new Uint8Array(1))).length + ''); } };`, { name: 'neighbour' });
    try {
      resetCryptoPeak();
      let floodDone = false;
      const reply = flood.fetch().then((r) => { floodDone = true; return r; });
      // Answers come while the flood is still running (ordering, not timing).
      let answered = 0;
      while (!floodDone && answered < 3) {
        expect((await neighbour.fetch()).text).toBe('32');
        if (!floodDone) answered += 1;
      }
      expect(JSON.parse((await reply).text)).toEqual({ huge: ['NotSupportedError'], allowed: ['ok'] });
      expect(answered).toBeGreaterThan(0);
      // One libuv thread stays free for dns, fs and zlib whatever the tenants do.
      expect(cryptoInFlight().peak).toBeLessThanOrEqual((Number(process.env.UV_THREADPOOL_SIZE) || 4) - 1);
      expect(GLOBAL_SLOTS).toBe((Number(process.env.UV_THREADPOOL_SIZE) || 4) - 1);
    } finally {
      flood.dispose();
      neighbour.dispose();
    }
  }, 120_000);
});

describe('jose (the public npm JWT library), bundled as edge deploy bundles it and run unmodified', () => {
  it('verifies an ES256 and an RS256 token Node signed on the host, refuses a wrong key and a tampered payload, and signs an ES256 token Node verifies', async () => {
    const out = await bundleWorker(join(import.meta.dirname, 'fixtures/jose-worker.js'));
    if ('errors' in out) throw new Error(out.errors);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const signer = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Math.floor(Date.now() / 1000);
    const jwt = (alg: string, claims: object, key: KeyObject): string => {
      const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const input = `${enc({ alg, typ: 'JWT' })}.${enc(claims)}`;
      const sig = nodeSign('sha256', Buffer.from(input), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
      return `${input}.${sig.toString('base64url')}`;
    };
    const body = JSON.stringify({
      es256Pub: ec.publicKey.export({ type: 'spki', format: 'pem' }),
      otherPub: signer.publicKey.export({ type: 'spki', format: 'pem' }),
      rs256Jwk: rsa.publicKey.export({ format: 'jwk' }),
      es256Token: jwt('ES256', { iss: 'urn:host', aud: 'urn:isolate', sub: 'alice', exp: now + 300 }, ec.privateKey),
      rs256Token: jwt('RS256', { iss: 'urn:host', sub: 'bob', exp: now + 300 }, rsa.privateKey),
      signingKey: signer.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    });
    const w = await TestWorker.load(out.code, { name: 'jose' });
    try {
      const reply = await w.fetch({ method: 'POST', body });
      expect(reply.status, reply.text).toBe(200);
      const r = JSON.parse(reply.text) as { es: object; esHeader: object; rs: object; wrongKey: string; tampered: string; token: string };
      expect(r).toMatchObject({ es: { sub: 'alice', iss: 'urn:host' }, esHeader: { alg: 'ES256' }, rs: { sub: 'bob' }, wrongKey: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', tampered: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
      const [h, p, s] = r.token.split('.') as [string, string, string];
      expect(nodeVerify('sha256', Buffer.from(`${h}.${p}`), { key: signer.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'))).toBe(true);
      expect(JSON.parse(Buffer.from(p, 'base64url').toString())).toMatchObject({ sub: 'isolate', iss: 'urn:isolate', scope: 'read' });
    } finally {
      w.dispose();
    }
  });
});
