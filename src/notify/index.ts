import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Logger } from '../log';
import { renderBody, type NotifyEvent, type NotifyFormat } from './body';
import { redactUrl, scrub } from './url';

export { redactUrl, checkNotifyUrl } from './url';
export { checkTemplate, type NotifyEvent, type NotifyFormat } from './body';

export interface NotifierOptions {
  url: string;
  format: NotifyFormat;
  /** Empty: the format's body. */
  template: string;
  /** One request's whole time, connect to last byte. */
  timeoutMs: number;
  log: Pick<Logger, 'info' | 'warn'>;
  /** Events waiting beyond this are dropped (counted, logged). */
  maxQueue?: number;
  /** Tries per event, the first included. */
  attempts?: number;
  /** Wait before the second try; doubled before each further one. */
  backoffMs?: number;
}

export interface NotifyState { queued: number; delivered: number; failed: number; dropped: number }

/** A try's outcome: delivered, worth another try, or refused for good (a 4xx other than 408/429). */
type Outcome = { ok: true } | { ok: false; retry: boolean; why: string };

/**
 * Delivers ban and unban events to a webhook, one at a time, in order. push() only appends
 * to a bounded queue and returns: a slow, hanging or dead webhook never delays a ban, and
 * never grows memory without bound (what does not fit is dropped, counted and logged).
 */
export class Notifier {
  private readonly queue: NotifyEvent[] = [];
  private running = false;
  private stopped = false;
  private wake: (() => void) | null = null;
  private inFlight: { abort: () => void } | null = null;
  readonly state: NotifyState = { queued: 0, delivered: 0, failed: 0, dropped: 0 };
  private readonly maxQueue: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  readonly shownUrl: string;

  constructor(private readonly o: NotifierOptions) {
    this.maxQueue = o.maxQueue ?? 1000;
    this.attempts = o.attempts ?? 5;
    this.backoffMs = o.backoffMs ?? 1000;
    this.shownUrl = redactUrl(o.url);
  }

  /** Queues one event; never throws, never waits. */
  push(event: NotifyEvent): void {
    if (this.stopped) return;
    if (this.queue.length >= this.maxQueue) {
      this.state.dropped++;
      // The first drop of a run and every hundredth after it: a flood is told, not echoed.
      if (this.state.dropped % 100 === 1) this.o.log.warn({ url: this.shownUrl, dropped: this.state.dropped, queue: this.queue.length }, 'notification dropped: the webhook queue is full');
      return;
    }
    this.queue.push(event);
    this.state.queued = this.queue.length;
    if (!this.running) { this.running = true; void this.drain(); }
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      const event = this.queue[0];
      await this.deliver(event);
      this.queue.shift();
      this.state.queued = this.queue.length;
    }
    this.running = false;
  }

  private async deliver(event: NotifyEvent): Promise<void> {
    const body = renderBody(event, this.o.format, this.o.template);
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.send(body);
      if (this.stopped) return;
      if (outcome.ok) { this.state.delivered++; return; }
      if (!outcome.retry || attempt >= this.attempts) {
        this.state.failed++;
        this.o.log.warn({ url: this.shownUrl, action: event.action, address: event.address, attempts: attempt, err: outcome.why, failed: this.state.failed }, 'notification not delivered: given up');
        return;
      }
      await this.sleep(this.backoffMs * 2 ** (attempt - 1));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wake = null; resolve(); }, ms);
      t.unref();
      this.wake = () => { clearTimeout(t); this.wake = null; resolve(); };
    });
  }

  /** One POST; every error message is scrubbed of the URL's secret parts. */
  private send(body: string): Promise<Outcome> {
    return new Promise((resolve) => {
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (o: Outcome) => { if (!done) { done = true; clearTimeout(timer); this.inFlight = null; resolve(o); } };
      const fail = (why: string) => finish({ ok: false, retry: true, why: scrub(why, this.o.url) });
      let req: ReturnType<typeof httpRequest>;
      try {
        const url = new URL(this.o.url);
        req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
          method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'ampere' },
        });
      } catch (err) {
        finish({ ok: false, retry: false, why: scrub((err as Error).message, this.o.url) });
        return;
      }
      timer = setTimeout(() => { req.destroy(); fail(`no answer within ${this.o.timeoutMs} ms`); }, this.o.timeoutMs);
      timer.unref();
      this.inFlight = { abort: () => { req.destroy(); fail('stopped'); } };
      req.on('error', (err) => fail(err.message));
      req.on('response', (res) => {
        res.resume(); // the answer's body is not read, only drained
        res.on('end', () => {
          const s = res.statusCode ?? 0;
          if (s >= 200 && s < 300) finish({ ok: true });
          else finish({ ok: false, retry: s >= 500 || s === 408 || s === 429, why: `HTTP ${s}` });
        });
        res.on('error', (err) => fail(err.message));
      });
      req.end(body);
    });
  }

  /** Stops: what is queued is not sent (logged with its count), a request in flight is cut. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.wake?.();
    this.inFlight?.abort();
    if (this.queue.length > 0) this.o.log.warn({ url: this.shownUrl, unsent: this.queue.length }, 'notifications not sent at stop');
  }
}

/** The reason a ban is reported with: the event kind, then service and account when known. */
function banReason(r: { kind: string; service: string; account: string }): string {
  return [r.kind, r.service, r.account && `account ${r.account}`].filter(Boolean).join(' ');
}

/**
 * The daemon's notifier (null when notify_url is empty), fed by every ban and unban. The
 * listener only builds an object and queues it: it runs on the ban path.
 */
export function notifyChanges(
  cfg: { notify_url: string; notify_format: NotifyFormat; notify_template: string; notify_timeout: number },
  decisions: { onChange(l: (what: 'ban' | 'unban', address: string, detail: string, ban?: { reason: { kind: string; service: string; account: string }; until: number | null; banCount: number; now: number }) => void): void },
  host: string, log: Logger,
): Notifier | null {
  if (!cfg.notify_url) return null;
  const notifier = new Notifier({ url: cfg.notify_url, format: cfg.notify_format, template: cfg.notify_template, timeoutMs: cfg.notify_timeout, log });
  decisions.onChange((what, address, detail, ban) => {
    // A ban another fleet member made is reported by that member's own notifier.
    if (what === 'ban' && detail === 'fleet') return;
    try {
      const now = ban?.now ?? Date.now();
      notifier.push(what === 'ban' && ban
        ? { action: 'ban', address, reason: banReason(ban.reason), source: detail, duration: ban.until === null ? null : Math.round((ban.until - ban.now) / 1000), count: ban.banCount, host, at: new Date(now).toISOString() }
        : { action: what, address, reason: detail, source: '', duration: null, count: null, host, at: new Date(now).toISOString() });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'notification not queued');
    }
  });
  log.info({ url: notifier.shownUrl, format: cfg.notify_template ? 'template' : cfg.notify_format }, 'notifications on');
  return notifier;
}
