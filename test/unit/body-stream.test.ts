import { describe, expect, it } from 'vitest';
import { BodyStreamError, ChunkPipe, PulledBody } from '../../common/body-stream.js';
import { ActorStreams, UPLOAD_WINDOW_BYTES } from '../../node-agent/bindings/actor-streams.js';

// The pieces streamed stub.fetch() bodies are made of (common/body-stream.ts,
// bindings/actor-streams.ts): a bounded pipe whose writer waits for the reader, a pulled
// body that says when it is over, and a caller isolate's open bodies, cancelled when its
// request ends.

const bytes = (n: number, v = 1) => new Uint8Array(n).fill(v);
const settled = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return done;
};

describe('ChunkPipe', () => {
  it('a write past the window waits for the reader; reads come in order and end with null', async () => {
    const pipe = new ChunkPipe(100);
    expect(await settled(pipe.write(bytes(60)))).toBe(true);
    const second = pipe.write(bytes(60, 2));
    expect(await settled(second)).toBe(false);
    expect((await pipe.read())![0]).toBe(1);
    expect(await settled(second)).toBe(true);
    pipe.end();
    expect((await pipe.read())![0]).toBe(2);
    expect(await pipe.read()).toBeNull();
  });

  it('cancel rejects the waiting writer and tells the producer once', async () => {
    const told: string[] = [];
    const pipe = new ChunkPipe(10, (r) => told.push(r));
    const w = pipe.write(bytes(20));
    pipe.cancel('enough');
    pipe.cancel('again');
    await expect(w).rejects.toBeInstanceOf(BodyStreamError);
    await expect(pipe.write(bytes(1))).rejects.toThrow(/enough/);
    expect(told).toEqual(['enough']);
  });

  it('a producer failure reaches the reader after what came before it', async () => {
    const pipe = new ChunkPipe();
    await pipe.write(bytes(3));
    pipe.error(new Error('broke'));
    expect((await pipe.read())!.byteLength).toBe(3);
    await expect(pipe.read()).rejects.toThrow(/broke/);
  });
});

describe('PulledBody', () => {
  it('is over at its end, or at a cancel (which the producer hears), and reads are one at a time', async () => {
    let n = 0;
    const ended = new PulledBody(async () => (n++ < 2 ? bytes(1) : null), () => undefined);
    const [a, b, c] = await Promise.all([ended.read(), ended.read(), ended.read()]);
    expect([a?.byteLength, b?.byteLength, c]).toEqual([1, 1, null]);
    await ended.done;

    const told: string[] = [];
    const cancelled = new PulledBody(async () => bytes(1), (r) => told.push(r));
    await cancelled.read();
    cancelled.cancel('stop');
    await cancelled.done;
    await expect(cancelled.read()).rejects.toBeInstanceOf(BodyStreamError);
    expect(told).toEqual(['stop']);
  });
});

describe('ActorStreams (a caller isolate\'s open actor bodies)', () => {
  it('an upload waits on its window; the end of the request cancels every body still open', async () => {
    const s = new ActorStreams();
    const up = s.upload(1);
    expect(await settled(s.write(1, new ArrayBuffer(UPLOAD_WINDOW_BYTES - 1)))).toBe(true);
    const full = s.write(1, new ArrayBuffer(10));
    expect(await settled(full)).toBe(false);
    expect(s.heldBytes()).toBe(UPLOAD_WINDOW_BYTES + 9);
    const told: string[] = [];
    expect(s.download(2, new PulledBody(async () => bytes(1), (r) => told.push(r)))).toBe(true);
    const gen = s.generation;
    s.closeAll('the caller\'s request ended');
    await expect(full).rejects.toBeInstanceOf(BodyStreamError);
    await expect(up.read()).resolves.toBeInstanceOf(Uint8Array);
    expect(told).toEqual(['the caller\'s request ended']);
    await expect(s.read(2)).rejects.toThrow(/no response body open/);
    // An answer from the request that ended is not the next request's.
    expect(s.download(3, new PulledBody(async () => null, () => undefined), gen)).toBe(false);
    expect(s.size).toBe(0);
  });
});
