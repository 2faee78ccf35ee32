/**
 * A map that keeps at most about `2 × limit` entries, for caches that must not grow with the
 * store: entries live in a young and an old generation; when the young one reaches `limit`
 * it becomes the old one and the previous old one is dropped whole. A hit in the old
 * generation moves the entry to the young one, so what recurs stays.
 *
 * O(1) per operation. (Evicting one entry at a time from the front of a JS Map is not:
 * deleted slots stay in the table until it is rebuilt, and finding the first live entry
 * walks past them, which made a backup's key caches quadratic.)
 */
export class BoundedMap<K, V> {
  #young = new Map<K, V>();
  #old = new Map<K, V>();

  /** Values dropped with an old generation are not wiped here: a caller may still hold them. */
  constructor(private readonly limit: number) {}

  get(key: K): V | undefined {
    const young = this.#young.get(key);
    if (young !== undefined) return young;
    const old = this.#old.get(key);
    if (old !== undefined) {
      this.#old.delete(key);
      this.set(key, old);
    }
    return old;
  }

  has(key: K): boolean {
    return this.#young.has(key) || this.#old.has(key);
  }

  set(key: K, value: V): void {
    this.#old.delete(key);
    this.#young.set(key, value);
    if (this.#young.size >= this.limit) {
      this.#old = this.#young;
      this.#young = new Map();
    }
  }

  delete(key: K): void {
    this.#young.delete(key);
    this.#old.delete(key);
  }

  get size(): number {
    return this.#young.size + this.#old.size;
  }

  values(): IterableIterator<V> {
    return [...this.#old.values(), ...this.#young.values()][Symbol.iterator]();
  }

  clear(): void {
    this.#young = new Map();
    this.#old = new Map();
  }
}
