import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { request as httpRequest, type ClientRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AlertEvent, AlertsConfig, SecretSource, WebhookConfig } from '../config/index.ts';
import { ErrorCode, isAbortError, LetheError, scrubSecrets } from '../errors/index.ts';
import { readSecretFile } from '../jobs/runtime.ts';
import type { EraseRequest } from '../lifecycle/types.ts';
import type { Logger } from '../log/index.ts';

/*
 * Alerts: signed JSON webhooks, delivered in the background so that a slow or dead
 * receiver never holds up a job. Each webhook has its own bounded queue and one delivery
 * in flight at a time, so alerts reach a receiver in the order they were raised and a
 * receiver that is down costs at most `maxQueue` bodies of memory.
 *
 * The wire format (body, headers, signature) and each event's details are documented in
 * docs/operations.md, section "Alerts"; receivers depend on them, so change them only
 * together with that section.
 */

export type { AlertEvent } from '../config/index.ts';

export interface Alert {
  readonly event: AlertEvent;
  /** One line for a person: what happened and, where there is one, the fix. */
  readonly summary: string;
  /** The event's fields, as docs/operations.md lists them. JSON-serialisable. */
  readonly details: Readonly<Record<string, unknown>>;
  /** When the condition was seen. */
  readonly at: Date;
  /** Stable id of the condition, so a receiver can dedupe retries and repeats */
  readonly key: string;
}

export interface AlertStats {
  /** Deliveries (alert × webhook) the receiver accepted with a 2xx. */
  readonly sent: number;
  /** Deliveries given up: refused with a 4xx, out of attempts, or no secret to sign with. */
  readonly failed: number;
  /** Attempts repeated after a network error, timeout, 408, 429 or 5xx. */
  readonly retries: number;
  /** Deliveries queued or in flight. */
  readonly pending: number;
  /** Deliveries dropped unsent: the oldest of a full queue, or left over at shutdown. */
  readonly dropped: number;
}

export interface AlertSenderOptions {
  readonly log: Logger;
  /**
   * Retry delays: attempt n waits a random time in [0, min(capMs, baseMs·2^(n-1))) ("full
   * jitter"), or what a Retry-After asks, up to capMs. Default 1 s and 5 min; tests
   * shorten them.
   */
  readonly backoff?: { readonly baseMs: number; readonly capMs: number };
  /** Deliveries waiting per webhook before the oldest is dropped. Default 1,000. */
  readonly maxQueue?: number;
  /** `source.instance` in every body. Default: the host name. */
  readonly instance?: string;
}

const DEFAULT_BACKOFF = { baseMs: 1_000, capMs: 300_000 } as const;
const DEFAULT_MAX_QUEUE = 1_000;
/** Above this the details are replaced by a note, so one huge alert cannot fill memory. */
export const MAX_BODY_BYTES = 64 * 1024;
const MAX_SUMMARY_CHARS = 1_000;

/** One alert on its way to one webhook. */
interface Delivery {
  /** Body `id` and `X-Lethe-Delivery`; the same on every attempt. */
  readonly id: string;
  readonly event: AlertEvent;
  readonly key: string;
  /** Exactly the bytes that are signed and sent, on every attempt. */
  readonly body: Buffer;
}

interface Hook {
  readonly config: WebhookConfig;
  readonly url: URL;
  /** The URL as logs may show it: no credentials, no query. */
  readonly label: string;
  readonly field: string;
  readonly events: ReadonlySet<AlertEvent>;
  readonly queue: Delivery[];
  /** The delivery being attempted or waiting to retry. */
  current: Delivery | undefined;
  worker: Promise<void> | undefined;
  secret: Promise<string> | undefined;
}

type AttemptOutcome =
  | { readonly kind: 'accepted'; readonly status: number }
  | { readonly kind: 'retry'; readonly reason: string; readonly retryAfterMs?: number }
  | { readonly kind: 'refused'; readonly reason: string; readonly status: number }
  | { readonly kind: 'aborted' };

/**
 * Delivers alerts to the webhooks of the config's `alerts` section. {@link send} never
 * blocks and never throws; delivery happens in the background with retries (see
 * docs/operations.md). Call {@link flush} once at shutdown.
 */
export class AlertSender {
  readonly #log: Logger;
  readonly #hooks: Hook[];
  readonly #backoff: { readonly baseMs: number; readonly capMs: number };
  readonly #maxQueue: number;
  readonly #instance: string;
  /** Fires at the flush deadline: cuts backoff waits short and aborts requests. */
  readonly #stop = new AbortController();
  #closed = false;
  #sent = 0;
  #failed = 0;
  #retries = 0;
  #dropped = 0;

  /**
   * Secrets are read on first use; use {@link AlertSender.open} to read them at once, so a
   * missing or unprotected secret file stops the daemon at start. Throws CONFIG_INVALID
   * when an option is out of range.
   */
  constructor(config: AlertsConfig | undefined, options: AlertSenderOptions) {
    this.#log = options.log.child({ component: 'alerts' });
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.#maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE;
    this.#instance = options.instance ?? hostname();
    // Each webhook listens on #stop while it waits or sends: up to 20, more than the default 10.
    setMaxListeners(100, this.#stop.signal);
    if (!(this.#backoff.baseMs > 0 && this.#backoff.capMs >= this.#backoff.baseMs) || !(this.#maxQueue >= 1)) {
      throw new LetheError(ErrorCode.CONFIG_INVALID, 'alert sender: backoff needs 0 < baseMs <= capMs and maxQueue >= 1');
    }
    this.#hooks = (config?.webhooks ?? []).map((hook, index) => {
      const url = new URL(hook.url);
      return {
        config: hook,
        url,
        label: redactUrl(url),
        field: `alerts.webhooks.${index}.secret`,
        events: new Set(hook.events),
        queue: [],
        current: undefined,
        worker: undefined,
        secret: undefined,
      };
    });
  }

  /**
   * A sender whose webhook secrets have all been read. Throws CONFIG_INVALID naming the
   * webhook's `secret` field and the fix when a secret file is missing, empty or readable
   * by other users.
   */
  static async open(config: AlertsConfig | undefined, options: AlertSenderOptions): Promise<AlertSender> {
    const sender = new AlertSender(config, options);
    for (const hook of sender.#hooks) await sender.#secretOf(hook);
    return sender;
  }

  /**
   * Queues `alert` for every webhook subscribed to its event and returns at once. Never
   * throws: an alert that cannot be encoded is logged and counted failed; after
   * {@link flush} alerts are logged and counted dropped.
   */
  send(alert: Alert): void {
    try {
      const hooks = this.#hooks.filter((hook) => hook.events.has(alert.event));
      if (hooks.length === 0) return;
      if (this.#closed) {
        this.#dropped += hooks.length;
        this.#log.warn({ event: alert.event, key: alert.key }, 'alert raised after shutdown began; not sent');
        return;
      }
      const id = randomUUID();
      const body = encodeAlert(alert, id, this.#instance);
      for (const hook of hooks) this.#enqueue(hook, { id, event: alert.event, key: alert.key, body });
    } catch (err) {
      this.#failed += 1;
      this.#log.error(
        { event: String((alert as Partial<Alert> | undefined)?.event), reason: scrubSecrets(String(err)) },
        'alert could not be encoded; not sent',
      );
    }
  }

  /**
   * For shutdown: stops taking alerts, waits until every queued delivery has been made or
   * given up, but no longer than `deadlineMs`; then aborts what is in flight, drops the
   * rest and logs how many. Never throws.
   */
  async flush(deadlineMs: number): Promise<void> {
    this.#closed = true;
    const workers = this.#hooks.flatMap((hook) => (hook.worker === undefined ? [] : [hook.worker]));
    if (workers.length === 0) return;
    const deadline = new AbortController();
    const done = Promise.all(workers).then(() => true);
    const timedOut = sleep(Math.max(0, deadlineMs), false, { signal: deadline.signal }).catch(() => false);
    const finished = await Promise.race([done, timedOut]);
    deadline.abort();
    if (finished) return;
    const left = this.#pending();
    this.#stop.abort();
    await done;
    for (const hook of this.#hooks) hook.queue.length = 0;
    this.#dropped += left;
    this.#log.warn({ dropped: left, deadlineMs }, `shutdown deadline reached: ${left} alert deliveries dropped unsent`);
  }

  /** Counts since construction; deliveries are counted per (alert, webhook). */
  stats(): AlertStats {
    return {
      sent: this.#sent,
      failed: this.#failed,
      retries: this.#retries,
      pending: this.#pending(),
      dropped: this.#dropped,
    };
  }

  #pending(): number {
    return this.#hooks.reduce((n, hook) => n + hook.queue.length + (hook.current === undefined ? 0 : 1), 0);
  }

  #enqueue(hook: Hook, delivery: Delivery): void {
    if (hook.queue.length >= this.#maxQueue) {
      const oldest = hook.queue.shift();
      this.#dropped += 1;
      this.#log.warn(
        { webhook: hook.label, event: oldest?.event, key: oldest?.key, delivery: oldest?.id, maxQueue: this.#maxQueue },
        'alert queue full (the receiver is down or slow): dropped the oldest alert',
      );
    }
    hook.queue.push(delivery);
    hook.worker ??= this.#drain(hook);
  }

  /**
   * Delivers the hook's queue in order, one at a time. Never rejects. It clears
   * `hook.worker` itself, in the same tick as it sees the queue empty, so an alert queued
   * just after always finds either a running worker or none.
   */
  async #drain(hook: Hook): Promise<void> {
    try {
      for (let next = hook.queue.shift(); next !== undefined; next = hook.queue.shift()) {
        hook.current = next;
        try {
          await this.#deliver(hook, next);
        } finally {
          hook.current = undefined;
        }
        if (this.#stop.signal.aborted) return;
      }
    } catch (err) {
      this.#log.error({ webhook: hook.label, reason: scrubSecrets(String(err)) }, 'alert delivery failed unexpectedly');
    } finally {
      hook.worker = undefined;
    }
  }

  async #deliver(hook: Hook, delivery: Delivery): Promise<void> {
    const log = this.#log.child({ webhook: hook.label, event: delivery.event, key: delivery.key, delivery: delivery.id });
    let secret: string;
    try {
      secret = await this.#secretOf(hook);
    } catch (err) {
      this.#failed += 1;
      log.error({ reason: err instanceof LetheError ? err.message : 'cannot read the secret' }, 'alert not sent: no secret to sign it with');
      return;
    }
    const { maxAttempts, timeoutSeconds } = hook.config;
    for (let attempt = 1; ; attempt += 1) {
      const outcome = await post(hook.url, delivery, secret, timeoutSeconds * 1000, this.#stop.signal);
      switch (outcome.kind) {
        case 'accepted':
          this.#sent += 1;
          log.debug({ attempt, status: outcome.status }, 'alert delivered');
          return;
        case 'refused':
          this.#failed += 1;
          log.warn({ attempt, status: outcome.status, reason: outcome.reason }, 'alert refused by the receiver; not retried');
          return;
        case 'aborted':
          return; // flush counts what it drops
        case 'retry': {
          if (attempt >= maxAttempts) {
            this.#failed += 1;
            log.error({ attempts: attempt, reason: outcome.reason }, `alert not delivered after ${attempt} attempts; given up`);
            return;
          }
          const waitMs = retryDelayMs(attempt, outcome.retryAfterMs, this.#backoff);
          this.#retries += 1;
          log.info({ attempt, reason: outcome.reason, retryInMs: Math.round(waitMs) }, 'alert delivery failed; will retry');
          try {
            await sleep(waitMs, undefined, { signal: this.#stop.signal, ref: false });
          } catch (err) {
            if (isAbortError(err)) return;
            throw err;
          }
        }
      }
    }
  }

  /** The hook's secret, read once; a failed read is tried again for the next alert. */
  async #secretOf(hook: Hook): Promise<string> {
    hook.secret ??= readSecret(hook.config.secret, hook.field);
    try {
      return await hook.secret;
    } catch (err) {
      hook.secret = undefined;
      throw err;
    }
  }
}

async function readSecret(source: SecretSource, field: string): Promise<string> {
  return 'file' in source ? readSecretFile(source.file, `${field}.file`) : source.value;
}

/**
 * The delay before attempt `attempt + 1`: the receiver's Retry-After when it gave one
 * (capped), else a random time up to the exponential bound ("full jitter", so many
 * senders retrying at once spread out).
 */
export function retryDelayMs(
  attempt: number,
  retryAfterMs: number | undefined,
  backoff: { readonly baseMs: number; readonly capMs: number },
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, backoff.capMs);
  return random() * Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.min(attempt - 1, 40));
}

/**
 * A Retry-After header in milliseconds from `nowMs`: delta-seconds or an HTTP date.
 * Undefined when absent or malformed (the ordinary backoff applies).
 */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d{1,9}$/.test(text)) return Number(text) * 1000;
  // Every HTTP-date form starts with the day's name; Date.parse alone would take "-5".
  const date = /^[A-Za-z]{3}/.test(text) ? Date.parse(text) : Number.NaN;
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

/** What a response status means for the delivery. */
function classify(status: number, headers: IncomingHttpHeaders): AttemptOutcome {
  if (status >= 200 && status < 300) return { kind: 'accepted', status };
  if (status === 408 || status === 429 || status >= 500) {
    const retryAfterMs = parseRetryAfter(headers['retry-after'], Date.now());
    const reason = `the receiver answered ${status}`;
    return retryAfterMs === undefined ? { kind: 'retry', reason } : { kind: 'retry', reason, retryAfterMs };
  }
  if (status >= 300 && status < 400) {
    // Following a redirect would send the signed alert to an address nobody configured.
    return { kind: 'refused', status, reason: `the receiver redirected (${status}); set the webhook's url to the final address` };
  }
  return { kind: 'refused', status, reason: `the receiver answered ${status}; check its url and that it accepts lethe's signature` };
}

/** One attempt: POST the body, signed now. Resolves at the response's status; never rejects. */
async function post(url: URL, delivery: Delivery, secret: string, timeoutMs: number, stop: AbortSignal): Promise<AttemptOutcome> {
  if (stop.aborted) return { kind: 'aborted' };
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = {
    'content-type': 'application/json',
    'content-length': String(delivery.body.length),
    'user-agent': 'lethe-alerts/1',
    'x-lethe-event': delivery.event,
    'x-lethe-delivery': delivery.id,
    'x-lethe-signature': signatureHeader(secret, timestamp, delivery.body),
  };
  return new Promise<AttemptOutcome>((resolve) => {
    let settled = false;
    const settle = (outcome: AttemptOutcome): void => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    // agent: false: a fresh connection each time; nothing lingers after a flush.
    const request: ClientRequest = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method: 'POST',
      headers,
      agent: false,
    });
    // Covers connecting, sending and the rest of the response, which is read and discarded.
    const timer = setTimeout(() => {
      settle({ kind: 'retry', reason: `no answer within ${timeoutMs / 1000} s` });
      request.destroy();
    }, timeoutMs);
    const onStop = (): void => {
      settle({ kind: 'aborted' });
      request.destroy();
    };
    stop.addEventListener('abort', onStop, { once: true });
    request.on('response', (response) => {
      settle(classify(response.statusCode ?? 0, response.headers));
      response.on('error', () => undefined);
      response.resume();
    });
    request.on('error', (err: NodeJS.ErrnoException) => {
      settle({ kind: 'retry', reason: `network error: ${err.code ?? 'unknown'}` });
    });
    request.on('close', () => {
      clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
      settle({ kind: 'retry', reason: 'the connection closed without an answer' });
    });
    request.end(delivery.body);
  });
}

/**
 * The JSON body of an alert: `{ id, event, key, at, summary, details, source }`. Strings
 * pass through {@link scrubSecrets}; details that would make the body larger than
 * {@link MAX_BODY_BYTES} are replaced by `{ truncated: true, detailBytes }`. Throws when
 * `alert.at` is not a valid date or the details are not JSON-serialisable.
 */
export function encodeAlert(alert: Alert, id: string, instance: string): Buffer {
  const scrub = (_key: string, value: unknown): unknown => (typeof value === 'string' ? scrubSecrets(value) : value);
  const envelope = (details: unknown): Buffer =>
    Buffer.from(
      JSON.stringify(
        {
          id,
          event: alert.event,
          key: alert.key,
          at: alert.at.toISOString(),
          summary: alert.summary.slice(0, MAX_SUMMARY_CHARS),
          details,
          source: { service: 'lethe', instance },
        },
        scrub,
      ),
    );
  const body = envelope(alert.details);
  if (body.length <= MAX_BODY_BYTES) return body;
  return envelope({ truncated: true, detailBytes: Buffer.byteLength(JSON.stringify(alert.details)) });
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the X-Lethe-Signature header. */
export function signatureHeader(secret: string, timestamp: number, body: Uint8Array): string {
  return `t=${timestamp},v1=${hmacHex(secret, timestamp, body)}`;
}

function hmacHex(secret: string, timestamp: number | string, body: Uint8Array | string): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}

/**
 * Checks an X-Lethe-Signature header against the raw body, as a receiver must: true when
 * some `v1=` value is the HMAC of `"<t>.<body>"` under `secret` (compared in constant time)
 * and `t` is within `toleranceSeconds` of `nowSeconds` (which limits replays). False for
 * anything else, including a malformed header; never throws.
 */
export function verifyAlertSignature(
  secret: string,
  header: string | undefined,
  body: Uint8Array | string,
  toleranceSeconds: number,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): boolean {
  if (header === undefined || secret === '') return false;
  let timestamp: string | undefined;
  const candidates: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return false;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === 't') timestamp = value;
    else if (name === 'v1') candidates.push(value);
  }
  if (timestamp === undefined || !/^\d{1,12}$/.test(timestamp) || candidates.length === 0) return false;
  if (Math.abs(nowSeconds - Number(timestamp)) > toleranceSeconds) return false;
  const expected = Buffer.from(hmacHex(secret, timestamp, body), 'hex');
  let ok = false;
  for (const candidate of candidates) {
    if (!/^[0-9a-f]{64}$/i.test(candidate)) continue;
    // Every candidate is compared, so the time taken does not say which one matched.
    if (timingSafeEqual(expected, Buffer.from(candidate, 'hex'))) ok = true;
  }
  return ok;
}

/** A URL as logs may show it: userinfo and query replaced by `[redacted]`, no fragment. */
export function redactUrl(url: URL): string {
  const userinfo = url.username !== '' || url.password !== '' ? '[redacted]@' : '';
  const query = url.search !== '' ? '?[redacted]' : '';
  return `${url.protocol}//${userinfo}${url.host}${url.pathname}${query}`;
}

// Alerts for each event, so that keys, summaries and details match docs/operations.md.

/** A scheduled job's run failed. Key: one per job and slot. */
export function jobFailedAlert(
  input: { job: string; slot: Date; code: string; message: string; fix?: string | null },
  at: Date = new Date(),
): Alert {
  const slot = input.slot.toISOString();
  return {
    event: 'job_failed',
    summary: `${input.job} failed (${input.code}) for the slot of ${slot}: ${input.message}`,
    details: { job: input.job, slot, code: input.code, message: input.message, fix: input.fix ?? null },
    at,
    key: `job_failed:${input.job}:${slot}`,
  };
}

/**
 * The newest complete snapshot is older than the objective. Key: one per newest snapshot,
 * so the alert repeats with the same key until a new snapshot lands.
 */
export function rpoBreachedAlert(
  input: { rpoSeconds: number; objectiveSeconds: number; newestSnapshot: string | null },
  at: Date = new Date(),
): Alert {
  const newest = input.newestSnapshot ?? 'none';
  return {
    event: 'rpo_breached',
    summary:
      input.newestSnapshot === null
        ? `no complete snapshot exists; the recovery point objective is ${formatSeconds(input.objectiveSeconds)}`
        : `the newest complete snapshot (${newest}) is ${formatSeconds(input.rpoSeconds)} old; the objective is ${formatSeconds(input.objectiveSeconds)}`,
    details: { rpoSeconds: input.rpoSeconds, objectiveSeconds: input.objectiveSeconds, newestSnapshot: input.newestSnapshot },
    at,
    key: `rpo_breached:${newest}`,
  };
}

/**
 * A restore drill of `snapshot` failed. Findings are reported as counts per code: their
 * subjects name cells, whose names hold tenant and user ids, which do not belong in a
 * message to a third party. Key: one per snapshot.
 */
export function drillFailedAlert(
  input: { snapshot: string; findings: readonly { readonly code: string }[]; rtoSeconds: number | null },
  at: Date = new Date(),
): Alert {
  const codes: Record<string, number> = {};
  for (const finding of input.findings) codes[finding.code] = (codes[finding.code] ?? 0) + 1;
  return {
    event: 'drill_failed',
    summary: `the restore drill of snapshot ${input.snapshot} failed with ${input.findings.length} finding(s); run \`lethe verify --snapshot ${input.snapshot}\` to see each one`,
    details: { snapshot: input.snapshot, findings: input.findings.length, findingCodes: codes, rtoSeconds: input.rtoSeconds },
    at,
    key: `drill_failed:${input.snapshot}`,
  };
}

/** The audit chain does not verify. Key: one per first bad entry. */
export function auditChainBrokenAlert(input: { firstBadEntry: number; message: string }, at: Date = new Date()): Alert {
  return {
    event: 'audit_chain_broken',
    summary: `the audit chain is broken at entry ${input.firstBadEntry}: ${input.message}; run \`lethe audit verify\``,
    details: { firstBadEntry: input.firstBadEntry, message: input.message },
    at,
    key: `audit_chain_broken:${input.firstBadEntry}`,
  };
}

/**
 * One alert per deletion request not yet executed whose age is at least `days` (pure:
 * the caller decides how often to ask). The subject (user or conversation id) is left
 * out: it is personal data, and the request id finds it. Key: one per request.
 */
export function erasePendingAlerts(requests: readonly EraseRequest[], now: Date, days: number): Alert[] {
  const alerts: Alert[] = [];
  for (const request of requests) {
    if (request.status === 'executed') continue;
    const ageDays = Math.floor((now.getTime() - request.requestedAt.getTime()) / 86_400_000);
    if (ageDays < days) continue;
    const waiting = request.status === 'pending' ? 'a second approver' : 'execution by `lethe lifecycle apply`';
    alerts.push({
      event: 'erase_request_pending',
      summary:
        `deletion request ${request.id} (${request.tenant === null ? 'every tenant' : `tenant ${request.tenant}`}, ${request.scope}) ` +
        `has waited ${ageDays} days for ${waiting}`,
      details: {
        requestId: request.id,
        tenant: request.tenant,
        scope: request.scope,
        status: request.status,
        requestedAt: request.requestedAt.toISOString(),
        ageDays,
      },
      at: now,
      key: `erase_request_pending:${request.id}`,
    });
  }
  return alerts;
}

function formatSeconds(seconds: number): string {
  if (seconds >= 172_800) return `${Math.floor(seconds / 86_400)} days`;
  if (seconds >= 7_200) return `${Math.floor(seconds / 3_600)} hours`;
  if (seconds >= 120) return `${Math.floor(seconds / 60)} minutes`;
  return `${Math.floor(seconds)} seconds`;
}
