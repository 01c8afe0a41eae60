import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { EdgeError } from '../../common/errors.js';
import { createLogger, errorMessage, type LogFields } from '../../common/log.js';

class StoreError extends EdgeError {}

function capture(level: 'debug' | 'info' = 'debug') {
  const lines: string[] = [];
  const log = createLogger({ component: 'test' }, (l) => lines.push(l), level);
  const last = (): LogFields => {
    const line = lines.at(-1)!;
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1)).not.toContain('\n'); // one object per line
    return JSON.parse(line) as LogFields;
  };
  return { log, lines, last };
}

describe('logger: an error in the fields', () => {
  it('writes its class, message, cause chain and stack, and keeps the message under its key', () => {
    const { log, last } = capture();
    const root = new TypeError('socket closed');
    const mid = new Error('commit not acknowledged', { cause: root });
    const err = new StoreError('storage write failed', { cause: mid });
    log.warn('x failed', { error: err, attempt: 2 });
    const rec = last();
    expect(rec).toMatchObject({ level: 'warn', msg: 'x failed', component: 'test', attempt: 2 });
    expect(rec.error).toBe('storage write failed');
    expect(rec.errorClass).toBe('StoreError');
    expect(rec.errorCauses).toEqual([
      { class: 'Error', message: 'commit not acknowledged' },
      { class: 'TypeError', message: 'socket closed' },
    ]);
    expect(rec.errorStack).toMatch(/^StoreError: storage write failed\n\s+at /);
    expect(rec.errorStack).toContain('log.test.ts');
  });

  it('writes no cause list for an error without one, and any field name works', () => {
    const { log, last } = capture();
    log.error('y', { reason: new RangeError('too big') });
    const rec = last();
    expect(rec.reason).toBe('too big');
    expect(rec.reasonClass).toBe('RangeError');
    expect(rec).not.toHaveProperty('reasonCauses');
    expect(rec.reasonStack).toMatch(/^RangeError: too big\n/);
  });

  it('an EdgeError’s context fills the fields the call left unset, never overrides them', () => {
    const { log, last } = capture();
    const err = new StoreError('full', { context: { actor: 'default/counters/1', worker: 'default/inner', region: 'eu-west' } });
    log.warn('z', { worker: 'default/outer', error: err });
    expect(last()).toMatchObject({ worker: 'default/outer', actor: 'default/counters/1', region: 'eu-west', error: 'full' });
  });

  it('a cause that is not an Error, a cycle and a foreign realm’s error end the chain cleanly', () => {
    const { log, last } = capture();
    log.info('a', { error: new Error('outer', { cause: 'a string' }) });
    expect(last().errorCauses).toEqual([{ class: 'string', message: 'a string' }]);

    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    log.info('cycle', { error: a });
    expect(last().errorCauses).toEqual([{ class: 'Error', message: 'b' }]);

    const foreign = runInNewContext('new TypeError("from a vm context", { cause: new Error("deeper") })') as unknown;
    expect(foreign instanceof Error).toBe(false);
    log.info('vm', { error: foreign });
    expect(last()).toMatchObject({ error: 'from a vm context', errorClass: 'TypeError', errorCauses: [{ class: 'Error', message: 'deeper' }] });
  });

  it('a thrown value that is not an Error is written as it is, and one JSON cannot hold does not throw', () => {
    const { log, last } = capture();
    log.warn('s', { error: 'plain string' });
    expect(last()).toMatchObject({ error: 'plain string' });
    expect(last()).not.toHaveProperty('errorClass');
    log.warn('big', { error: 10n, ok: 1 });
    expect(last()).toMatchObject({ error: '10', ok: 1 });
  });

  it('below the level nothing is written', () => {
    const { log, lines } = capture('info');
    log.debug('quiet', { error: new Error('x') });
    expect(lines).toEqual([]);
  });

  it('errorMessage stays one line of text for bodies and conditions', () => {
    expect(errorMessage(new StoreError('full', { cause: new Error('inner') }))).toBe('full');
    expect(errorMessage('text')).toBe('text');
  });
});
