import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { abortable } from '../../../src/storage/streams.ts';
import { tripOnRejection, Tripwire } from '../../../src/util/tripwire.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('Tripwire', () => {
  it('passes work through, and interrupts a pending wait when it trips', async () => {
    let trip: (err: unknown) => void = () => undefined;
    const wire = new Tripwire((t) => (trip = t));
    await expect(wire.wait(Promise.resolve(7))).resolves.toBe(7);
    await expect(wire.wait(Promise.reject(new Error('work failed')))).rejects.toThrow('work failed');
    const pending = wire.wait(new Promise<never>(() => undefined));
    trip(new Error('upload failed'));
    await expect(pending).rejects.toThrow('upload failed');
    expect(wire.tripped).toBe(true);
    await expect(wire.wait(Promise.resolve(1))).rejects.toThrow('upload failed');
  });

  it('trips on the rejection of a promise, not on its fulfilment', async () => {
    let fail: (err: Error) => void = () => undefined;
    const wire = tripOnRejection(new Promise((_r, reject) => (fail = reject)));
    await expect(wire.wait(Promise.resolve('ok'))).resolves.toBe('ok');
    const pending = wire.wait(new Promise<never>(() => undefined));
    fail(new Error('gone'));
    await expect(pending).rejects.toThrow('gone');
    const done = tripOnRejection(Promise.resolve());
    await expect(done.wait(Promise.resolve(2))).resolves.toBe(2);
  });
});

describe('abortable', () => {
  it('keeps no chunk alive once it has been consumed (a long upload is not held in memory)', async () => {
    const CHUNK = 1 << 20;
    const CHUNKS = 150;
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < CHUNKS; i++) {
        await new Promise((r) => setImmediate(r));
        yield Buffer.alloc(CHUNK, i);
      }
    }
    gc();
    const before = process.memoryUsage().arrayBuffers;
    let peak = 0;
    let seen = 0;
    for await (const chunk of abortable(source(), new AbortController().signal, 'test')) {
      seen += chunk.length;
      if (seen % (25 * CHUNK) === 0) {
        gc();
        peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
      }
    }
    expect(seen).toBe(CHUNK * CHUNKS);
    // Racing each chunk against one long-lived abort promise kept every chunk: 150 MiB.
    expect(peak, `${peak}`).toBeLessThan(48 * CHUNK);
  });

  it('still cancels a source blocked in next()', async () => {
    const controller = new AbortController();
    async function* stuck(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(1);
      await new Promise(() => undefined);
    }
    const it = abortable(stuck(), controller.signal, 'reading');
    await it.next();
    const blocked = it.next();
    controller.abort();
    await expect(blocked).rejects.toMatchObject({ code: 'ABORTED' });
  });
});
