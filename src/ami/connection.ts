import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { format } from 'node:util';
// The lib entry, not the package main: the package's CLI branch calls process.exit under ESM loaders.
import amiio from 'ami-io/lib/index.js';
import type { Logger } from '../log';
import { AmiReader, type AmiFields, type ReaderCounts } from './reader';

export interface AmiOptions {
  host: string;
  port: number;
  user: string;
  pass: string;
  /** A Ping goes out this often; no answer within pingTimeoutMs and the connection is dropped. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Reconnect backoff: doubles from min to max; a rejected login waits at least loginRetryMs. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  loginRetryMs?: number;
}

export type AmiState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'login-rejected' | 'stopped';

/** Raw message fields, keys lower-cased, a null-prototype object; received = Date.now() when the bytes were parsed. */
export type AmiMessage = AmiFields;

/** Response headers passed back to ami-io, rebuilt one line each: nothing else of the stream reaches it. */
const RESPONSE_KEYS: [string, string][] = [['response', 'Response'], ['actionid', 'ActionID'], ['message', 'Message'], ['ping', 'Ping'], ['timestamp', 'Timestamp']];
const LINE_BREAKING = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;
const WARN_EVERY_MS = 10_000;

/**
 * The only code that knows ami-io. ami-io opens the socket, checks the banner, logs in and runs
 * Ping; the stream after the banner goes to Ampere's own AmiReader (src/ami/reader.ts), which
 * hands ami-io back only the responses to its own pending actions (docs/ami-input.md).
 * A fresh client and reader per connection, our own reconnect loop with capped backoff
 * (ami-io's stops for good after a rejected login), TCP keepalive plus Action: Ping so a
 * half-open connection is noticed within pingInterval + pingTimeout.
 * Emits 'message' (fields, receivedAt) and 'state' (state, detail).
 */
export class AmiConnection extends EventEmitter {
  state: AmiState = 'idle';
  since = Date.now();
  reconnects = 0;
  /** Over all connections: messages read, skipped as unreadable, blocks merged, events left without RemoteAddress, forged successes dropped. */
  readonly counts: ReaderCounts = { messages: 0, malformed: 0, merged: 0, incomplete: 0, distrusted: 0 };
  private reader: AmiReader | null = null;
  private incompleteLogged = { at: 0, since: 0 };
  private client: amiio.Client | null = null;
  private attempt = 0;
  private lastData = 0; // Date.now() of the last bytes received on the current connection
  private timers = new Set<NodeJS.Timeout>();
  private readonly o: Required<AmiOptions>;

  constructor(opts: AmiOptions, private readonly log: Logger) {
    super();
    this.o = { pingIntervalMs: 10_000, pingTimeoutMs: 10_000, connectTimeoutMs: 10_000, backoffMinMs: 250, backoffMaxMs: 30_000, loginRetryMs: 5_000, ...opts };
  }

  start(): void {
    if (this.state !== 'idle' && this.state !== 'stopped') return;
    this.connect();
  }

  stop(): void {
    this.setState('stopped');
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.drop();
  }

  private connect(): void {
    this.setState('connecting', `${this.o.host}:${this.o.port}`);
    const client = amiio.createClient({
      host: this.o.host, port: this.o.port, login: this.o.user, password: this.o.pass,
      encoding: 'utf8', logger: this.quietLogger(),
    });
    this.client = client;
    let settled = false;
    const current = () => this.client === client;
    // ami-io reads the banner itself; every later chunk goes to our reader instead of its parser.
    const reader = this.newReader(client);
    this.reader = reader;
    client.splitMessages = (data: string) => { if (current()) reader.push(data); };
    client.on('socketConnected', () => {
      client.tailInput = '';
      this.lastData = Date.now();
      client.socket?.on('data', () => { this.lastData = Date.now(); });
      client.socket?.setKeepAlive(true, 5_000);
      client.socket?.setNoDelay(true);
    });
    client.on('connected', () => {
      if (!current()) return;
      settled = true;
      this.attempt = 0;
      this.setState('connected', `${this.o.host}:${this.o.port}`);
      this.schedulePing(client);
    });
    client.on('incorrectLogin', () => {
      if (!current()) return;
      settled = true;
      this.setState('login-rejected', `AMI rejected the login of user "${this.o.user}" (check user/pass and manager.conf)`);
      this.drop();
      this.retry(Math.max(this.o.loginRetryMs, this.backoff()));
    });
    client.on('incorrectServer', () => {
      if (!current()) return;
      settled = true;
      this.lost(`${this.o.host}:${this.o.port} is not an Asterisk manager (no AMI banner)`);
    });
    client.on('socketError', (err: NodeJS.ErrnoException) => this.log.debug({ code: err.code }, 'ami socket error'));
    client.on('error', (err: unknown) => { if (current()) this.lost(`ami error: ${String(err)}`); });
    client.on('disconnected', () => { if (current()) this.lost('connection closed'); });
    this.later(this.o.connectTimeoutMs, () => { if (current() && !settled) this.lost('connect/login timed out'); });
    client.connect(false);
  }

  /** The connection is gone: tear it down and come back with backoff, unless stopping. */
  private lost(why: string): void {
    this.drop();
    if (this.state === 'stopped') return;
    this.setState('disconnected', why);
    this.retry(this.backoff());
  }

  private retry(delay: number): void {
    this.reconnects++;
    this.later(delay, () => { if (this.state !== 'stopped') this.connect(); });
  }

  private backoff(): number {
    const ms = Math.min(this.o.backoffMaxMs, this.o.backoffMinMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 20);
    return ms;
  }

  private schedulePing(client: amiio.Client): void {
    this.later(this.o.pingIntervalMs, () => {
      if (this.client !== client || this.state !== 'connected') return;
      let answered = false;
      // Under a flood the Pong queues behind thousands of events: bytes still arriving prove
      // the peer alive, so the deadline only fires after pingTimeout of complete silence.
      let deadline: NodeJS.Timeout;
      const arm = (ms: number) => {
        deadline = this.later(ms, () => {
          if (answered || this.client !== client) return;
          const quiet = Date.now() - this.lastData;
          if (quiet < this.o.pingTimeoutMs) arm(this.o.pingTimeoutMs - quiet);
          else this.lost('no answer to Ping');
        });
      };
      arm(this.o.pingTimeoutMs);
      // An unguessable ActionID: a Response forged inside an event cannot answer (or fail) it.
      const ping = new amiio.Action.Ping();
      ping.ActionID = `ampere-${randomBytes(12).toString('hex')}`;
      client.send(ping, (err) => {
        answered = true;
        clearTimeout(deadline);
        this.timers.delete(deadline);
        if (this.client !== client) return;
        if (err) return this.lost(`Ping failed: ${err instanceof Error ? err.message : 'error response'}`);
        this.schedulePing(client);
      });
    });
  }

  private newReader(client: amiio.Client): AmiReader {
    return new AmiReader({
      event: (fields) => {
        try { this.emit('message', fields, Date.now()); } catch (err) { this.log.error({ err: String(err) }, 'ami event handler failed'); }
      },
      response: (fields) => {
        const id = fields.actionid;
        if (id === undefined || !Object.hasOwn(client.callbacks, id)) return;
        const raw = RESPONSE_KEYS.filter(([k]) => fields[k] !== undefined).map(([k, name]) => `${name}: ${fields[k].replace(LINE_BREAKING, '')}`).join('\r\n');
        try { client.parseMessage(raw); } catch (err) { this.log.warn({ err: String(err) }, 'ami response not handled'); }
      },
      malformed: (reason) => this.log.debug({ reason }, 'unreadable AMI message skipped'),
      incomplete: (fields) => this.warnIncomplete(fields),
    }, this.counts);
  }

  /** Security events that end without RemoteAddress: one warning per WARN_EVERY_MS, with how many. */
  private warnIncomplete(fields: AmiFields): void {
    const now = Date.now();
    const w = this.incompleteLogged;
    w.since++;
    if (now - w.at < WARN_EVERY_MS) return;
    this.log.warn({ count: w.since, kind: String(fields.event ?? '').replace(LINE_BREAKING, '').slice(0, 40) }, 'ami security events without RemoteAddress (split by injected blank lines?)');
    w.at = now;
    w.since = 0;
  }

  private drop(): void {
    this.reader?.close();
    this.reader = null;
    const client = this.client;
    this.client = null;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', () => {}); // late errors from a discarded client go nowhere
    client.socket?.removeAllListeners();
    client.socket?.on('error', () => {});
    client.socket?.destroy();
  }

  private later(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
    return t;
  }

  private setState(state: AmiState, detail?: string): void {
    const changed = state !== this.state;
    this.state = state;
    if (changed) this.since = Date.now();
    this.emit('state', state, detail);
  }

  /** ami-io logs every chunk (the Secret included) at debug: keep only its warnings, scrubbed. */
  private quietLogger() {
    const scrub = (args: unknown[]) => format(...args).replace(/Secret:[^\r\n]*/gi, 'Secret: [redacted]').slice(0, 500);
    const noop = () => {};
    const warn = (...args: unknown[]) => this.log.debug({ amiio: scrub(args) }, 'ami-io says');
    return { trace: noop, debug: noop, info: noop, warn, error: warn, fatal: warn };
  }
}
