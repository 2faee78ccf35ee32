/**
 * Waits on work that a long-lived condition (a cancel, a failed upload) must be able to
 * interrupt, without `Promise.race([work, condition])`: every race leaves a reaction on the
 * condition's promise, and that reaction keeps the race's result (a stream chunk, say)
 * alive for as long as the condition is pending: for a whole upload, or a whole backup.
 * A tripwire subscribes to the condition once and holds one waiter at a time, released as
 * soon as its work settles. Not for concurrent waits.
 */
export class Tripwire {
  #tripped = false;
  #error: Error | undefined;
  #waiter: ((err: Error) => void) | undefined;

  /** `arm` is called once with the function that trips the wire with an error. */
  constructor(arm: (trip: (err: unknown) => void) => void) {
    arm((err) => {
      if (this.#tripped) return;
      const error = asError(err);
      this.#tripped = true;
      this.#error = error;
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter?.(error);
    });
  }

  get tripped(): boolean {
    return this.#tripped;
  }

  /** `work`'s result, or the trip's error as soon as the wire trips (work is then left to settle). */
  wait<T>(work: Promise<T>): Promise<T> {
    if (this.#tripped) {
      work.catch(() => undefined);
      return Promise.reject(asError(this.#error));
    }
    return new Promise<T>((resolve, reject) => {
      this.#waiter = reject;
      work.then(
        (value) => {
          this.#waiter = undefined;
          resolve(value);
        },
        (err: unknown) => {
          this.#waiter = undefined;
          reject(asError(err));
        },
      );
    });
  }
}

/** A tripwire that trips when `promise` rejects (its fulfilment is ignored). */
export function tripOnRejection(promise: Promise<unknown>): Tripwire {
  return new Tripwire((trip) => {
    promise.catch(trip);
  });
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
