import { killAfterBytesBudget, killNow } from '../util/failpoint.ts';
import type { ObjectStore } from './types.ts';

/**
 * The kill sweep's "by bytes written" hook (see killAfterBytesBudget in src/util/failpoint.ts):
 * with LETHE_KILL_AFTER_BYTES=N set, returns `store` wrapped so that the process SIGKILLs
 * itself once the bodies handed to `put` have yielded N bytes in all: the store has been
 * given the bytes up to the budget and asks for more, in the middle of the upload that
 * crosses it. Without the variable, returns `store` itself, untouched.
 */
export function withKillAfterBytes(store: ObjectStore): ObjectStore {
  const budget = killAfterBytesBudget();
  if (budget === null) return store;
  const limit = budget;
  let written = 0;
  async function* counted(body: AsyncIterable<Uint8Array> | Uint8Array): AsyncIterable<Uint8Array> {
    for await (const chunk of body instanceof Uint8Array ? [body] : body) {
      const room = limit - written;
      if (chunk.length >= room) {
        if (room > 0) yield chunk.subarray(0, room);
        killNow();
      }
      written += chunk.length;
      yield chunk;
    }
  }
  return {
    kind: store.kind,
    description: store.description,
    put: (key, body, options) => store.put(key, counted(body), options),
    get: (key, options) => store.get(key, options),
    getBytes: (key, options) => store.getBytes(key, options),
    getRange: (key, offset, length, options) => store.getRange(key, offset, length, options),
    head: (key) => store.head(key),
    list: (prefix) => store.list(prefix),
    retention: (key) => store.retention(key),
    extendRetention: (key, lock) => store.extendRetention(key, lock),
    delete: (key) => store.delete(key),
    cleanupIncomplete: (prefix) => store.cleanupIncomplete(prefix),
    close: () => store.close(),
  };
}
