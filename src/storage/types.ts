/**
 * The object store lethe writes snapshots, manifests, audit entries and vault backups to.
 * One interface, two backends (S3 and a plain directory); both pass the same conformance
 * suite (test/integration/storage/conformance.ts).
 *
 * Keys are `/`-separated paths checked by {@link assertValidKey}; a bad key is a STORAGE
 * error on every backend, so a key that works on one works on all.
 */

/**
 * WORM retention for one object. On S3 the server enforces it (Object Lock). The
 * filesystem backend records it beside the object and refuses to delete or overwrite the
 * object until `retainUntil` has passed; see createFilesystemStore for what that cannot
 * protect against. Neither backend offers a GOVERNANCE bypass, so both modes behave alike
 * for lethe.
 */
export interface ObjectLock {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  /** Must lie in the future when the object is put. */
  retainUntil: Date;
}

export interface PutOptions {
  lock?: ObjectLock;
  signal?: AbortSignal;
}

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

export interface ReadOptions {
  signal?: AbortSignal;
}

export interface ObjectStore {
  readonly kind: 's3' | 'filesystem';
  /** Where the store points, e.g. `s3://bucket/prefix` or `file:///path`; never credentials. */
  readonly description: string;

  /**
   * Streams `body` into `key`. The object becomes visible only complete (S3: one PUT or a
   * multipart upload; filesystem: temp file, fsync, rename, fsync of the directory).
   * Resolves with the byte count and sha256 (hex) of the bytes read from `body`, computed
   * in flight.
   *
   * On error or abort it rejects and nothing is visible at `key` (the multipart upload is
   * aborted, the temp file removed). The signal is honoured until the final commit request
   * (the single PUT or CompleteMultipartUpload, or the rename) starts; after that the put
   * finishes and resolves. An error thrown by `body` itself is rethrown when it is already
   * a LetheError.
   */
  put(
    key: string,
    body: AsyncIterable<Uint8Array> | Uint8Array,
    options?: PutOptions,
  ): Promise<{ size: number; sha256: string }>;

  /**
   * The object's bytes as a stream. Throws NOT_FOUND when absent (checked before the first
   * byte). Stopping iteration early releases the connection or file.
   */
  get(key: string, options?: ReadOptions): Promise<AsyncIterable<Uint8Array>>;

  /** The whole object in memory. Throws NOT_FOUND when absent. */
  getBytes(key: string, options?: ReadOptions): Promise<Uint8Array>;

  /**
   * Exactly `length` bytes from `offset`. Throws INTEGRITY if the object is shorter than
   * `offset + length`, NOT_FOUND if absent, INTERNAL if offset or length is not a
   * non-negative safe integer.
   */
  getRange(key: string, offset: number, length: number, options?: ReadOptions): Promise<Uint8Array>;

  /** Size and modification time, or null when there is no object at `key`. */
  head(key: string): Promise<ObjectInfo | null>;

  /**
   * Every object whose key starts with `prefix` ('' for all), in ascending UTF-8 byte order
   * of the key (S3's order), fetched page by page. Throws STORAGE if a server returns keys
   * out of that order rather than hand back a misordered listing.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /**
   * The object's current lock as the backend records it (a lock whose date has passed is
   * still returned; compare its date yourself), or null when it has none or the backend has
   * no object lock at all (a bucket without Object Lock, a server that does not implement
   * it). Throws NOT_FOUND when there is no object at `key`.
   */
  retention(key: string): Promise<ObjectLock | null>;

  /**
   * Moves the object's retain-until date later, keeping its mode; an object without a lock
   * gets `lock`. The same date again is a no-op. Throws STORAGE, changing nothing, when
   * `lock` would shorten the current lock, change its mode, or lies in the past, and when the
   * backend cannot lock objects; NOT_FOUND when there is no object at `key`.
   */
  extendRetention(key: string, lock: ObjectLock): Promise<void>;

  /**
   * Removes the object; succeeds when it is already absent. Throws STORAGE naming the date
   * when the object is still under an {@link ObjectLock}.
   */
  delete(key: string): Promise<void>;

  /**
   * Removes the leftovers of interrupted puts whose key starts with `prefix` (S3: aborts
   * incomplete multipart uploads; filesystem: removes temp files). Returns how many it
   * removed. It cannot tell a leftover from a put still running, so call it only when no
   * put under `prefix` is in progress (such a put then fails; it never commits half an
   * object).
   */
  cleanupIncomplete(prefix: string): Promise<number>;

  /** Releases connections. The store must not be used afterwards. */
  close(): Promise<void>;
}
