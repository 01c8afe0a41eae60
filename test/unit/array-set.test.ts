import { describe, expect, it } from 'vitest';
import { ArraySet } from '../../common/array-set.js';

describe('ArraySet', () => {
  it('holds each member once, and forgets what is deleted', () => {
    const s = new ArraySet<string>();
    s.add('a').add('b').add('a');
    expect(s.size).toBe(2);
    expect(s.has('a')).toBe(true);
    expect(s.delete('a')).toBe(true);
    expect(s.delete('a')).toBe(false);
    expect([...s]).toEqual(['b']);
    s.add('c').add('d');
    expect(s.delete('c')).toBe(true);
    expect([...s].sort()).toEqual(['b', 'd']);
    s.clear();
    expect(s.size).toBe(0);
  });

  it('visits every member once while members delete themselves, as a Set iteration does', () => {
    const s = new ArraySet<() => void>();
    const seen: number[] = [];
    const fns = [0, 1, 2, 3].map((i) => { const f = () => { seen.push(i); s.delete(f); }; return f; });
    for (const f of fns) s.add(f);
    for (const f of s) f();
    expect(seen).toEqual([0, 1, 2, 3]);
    expect(s.size).toBe(0);
  });
});
