/**
 * Ampere's own reader for the AMI byte stream. Asterisk copies attacker text (a SIP From user,
 * decoded) into AccountID without escaping CR/LF, so every byte here is hostile: headers go into
 * null-prototype objects, every size is bounded, and no input can make push() throw.
 * docs/ami-input.md explains the framing and the reassembly rules.
 */

/** Header names lower-cased, '-' as '_' (ami-io's shape); a null-prototype object. */
export type AmiFields = Record<string, string>;

export interface ReaderSink {
  event(fields: AmiFields): void;
  response(fields: AmiFields): void;
  /** A message that could not be read was skipped. */
  malformed(reason: string): void;
  /** A security event was emitted without RemoteAddress (its tail never came). */
  incomplete(fields: AmiFields): void;
}

export interface ReaderCounts { messages: number; malformed: number; merged: number; incomplete: number; distrusted: number }

export interface ReaderLimits {
  maxLine: number; // longer lines are cut to this many characters
  maxMessage: number; // characters of one message (all its blocks); a longer one is skipped
  maxHeaders: number; // distinct header names kept per message
  maxBlocks: number; // blocks merged into one held event
  holdMs: number; // how long a split security event waits for its tail
}

export const DEFAULT_LIMITS: ReaderLimits = { maxLine: 8192, maxMessage: 65536, maxHeaders: 128, maxBlocks: 64, holdMs: 30 };

const EOM = '\r\n\r\n';
const BANNER = 'Asterisk Call Manager/';
/** Kept even past maxHeaders: what routing and the event parser need. */
const ESSENTIAL = new Set(['event', 'response', 'actionid', 'privilege', 'severity', 'service', 'accountid', 'sessionid', 'remoteaddress']);

interface Message {
  fields: AmiFields;
  names: number;
  /** Names seen before the first AccountID line: Asterisk wrote them, so later copies are ignored. */
  head: string[];
  account: boolean;
  /** UsingPassword came after the last RemoteAddress: text no attacker can place (see trusted()). */
  proof: boolean;
  blocks: number;
  size: number;
}

const keyCache = new Map<string, string>();
function normKey(raw: string): string {
  const hit = keyCache.get(raw);
  if (hit !== undefined) return hit;
  const key = raw.trim().toLowerCase().replace(/-/g, '_');
  if (keyCache.size < 512) keyCache.set(raw, key);
  return key;
}

/** Lower-cased name of the block's first header ('' when the first line has none). */
function firstKey(buf: string, from: number, to: number): string {
  const colon = buf.indexOf(':', from);
  if (colon < 0 || colon > to || colon - from > 32) return '';
  const eol = buf.indexOf('\r\n', from);
  if (eol >= 0 && eol < colon) return '';
  return normKey(buf.slice(from, colon));
}

/**
 * Attacker text ends where Asterisk's tail of the event begins, so a SuccessfulAuth forged inside
 * another event's AccountID ends with that event's tail: Asterisk's own SuccessfulAuth carries
 * UsingPassword after RemoteAddress, which no other event's tail does. Dropping a success only
 * ever makes Ampere stricter.
 */
function trusted(m: Message): boolean {
  return m.proof || m.fields.event !== 'SuccessfulAuth';
}

/**
 * Frames on CRLF CRLF, parses headers, and puts back together a security event that injected
 * blank lines cut in two (see docs/ami-input.md). One reader per connection.
 */
export class AmiReader {
  private tail = '';
  private skipping = false; // inside an oversize message: bytes are dropped up to its end
  private start = true; // a banner line may come first
  private held: Message | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly lim: ReaderLimits;

  constructor(private readonly sink: ReaderSink, readonly counts: ReaderCounts = { messages: 0, malformed: 0, merged: 0, incomplete: 0, distrusted: 0 }, limits: Partial<ReaderLimits> = {}) {
    this.lim = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Feed a chunk of the stream. Never throws: an internal fault drops the buffered bytes and is counted. */
  push(chunk: string): void {
    if (this.closed) return;
    try {
      this.feed(chunk);
    } catch (err) {
      this.tail = '';
      this.skipping = true;
      this.bad(`reader fault: ${String(err).slice(0, 100)}`);
    }
  }

  /** End of stream: a held event goes out as it is, the partial message is dropped. */
  close(): void {
    if (this.closed) return;
    this.release();
    this.closed = true;
    this.tail = '';
  }

  private feed(chunk: string): void {
    let buf = this.tail.length > 0 ? this.tail + chunk : chunk;
    let pos = 0;
    if (this.start) {
      if (buf.length < BANNER.length && BANNER.startsWith(buf)) { this.tail = buf; return; }
      if (buf.startsWith(BANNER)) {
        const eol = buf.indexOf('\r\n');
        if (eol < 0 && buf.length < this.lim.maxLine) { this.tail = buf; return; }
        pos = eol < 0 ? buf.length : eol + 2;
      }
      this.start = false;
    }
    if (this.skipping) {
      const end = buf.indexOf(EOM, pos);
      if (end < 0) { this.tail = buf.slice(Math.max(pos, buf.length - 3)); return; }
      this.skipping = false;
      pos = end + 4;
    }
    for (;;) {
      const end = buf.indexOf(EOM, pos);
      if (end < 0) break;
      if (end - pos > this.lim.maxMessage) this.bad(`message over ${this.lim.maxMessage} characters`);
      else this.block(buf, pos, end);
      pos = end + 4;
    }
    if (buf.length - pos > this.lim.maxMessage) {
      this.bad(`message over ${this.lim.maxMessage} characters`);
      this.skipping = true;
      buf = buf.slice(buf.length - 3);
      pos = 0;
    }
    this.tail = pos === 0 ? buf : buf.slice(pos);
  }

  /** One block between blank lines: a new message, or a part of the held event. */
  private block(buf: string, from: number, to: number): void {
    while (from + 1 < to && buf.charCodeAt(from) === 13 && buf.charCodeAt(from + 1) === 10) from += 2;
    if (from >= to) return;
    const first = firstKey(buf, from, to);
    const isHead = first === 'event' || first === 'response';
    const held = this.held;
    // A held event without RemoteAddress takes every block (a forged Event: header included);
    // once it has one, only blocks without a head of their own.
    if (held && (held.fields.remoteaddress === undefined || !isHead)) {
      this.counts.merged++;
      held.blocks++;
      held.size += to - from;
      this.parse(held, buf, from, to);
      if (held.blocks >= this.lim.maxBlocks || held.size > this.lim.maxMessage) this.release();
      return;
    }
    if (held) this.release();
    if (!isHead) { this.bad('a block without Event or Response header'); return; }
    const m: Message = { fields: Object.create(null) as AmiFields, names: 0, head: [], account: false, proof: false, blocks: 1, size: to - from };
    this.parse(m, buf, from, to);
    if (first === 'response') { this.counts.messages++; this.deliver(this.sink.response, m.fields); return; }
    const f = m.fields;
    // Injected blank lines cut inside AccountID, so the head of a cut security event has it.
    const cut = m.account && f.remoteaddress === undefined && f.privilege !== undefined && f.privilege.includes('security');
    if (cut) this.hold(m);
    else this.emit(m);
  }

  private parse(m: Message, buf: string, from: number, to: number): void {
    let p = from;
    while (p < to) {
      let eol = buf.indexOf('\r\n', p);
      if (eol < 0 || eol > to) eol = to;
      const line = buf.slice(p, eol - p > this.lim.maxLine ? p + this.lim.maxLine : eol);
      p = eol + 2;
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      this.set(m, normKey(line.slice(0, colon)), line.slice(colon + 1).trim());
    }
  }

  /**
   * Last value wins (a genuine tail comes after the attacker's text), except for names seen
   * before the first AccountID line: those Asterisk wrote before any attacker text.
   */
  private set(m: Message, key: string, value: string): void {
    if (key === '') return;
    if (key === 'remoteaddress') m.proof = false;
    else if (key === 'usingpassword') m.proof = m.fields.remoteaddress !== undefined;
    const f = m.fields;
    if (f[key] === undefined) {
      if (m.names >= this.lim.maxHeaders && !ESSENTIAL.has(key)) return;
      m.names++;
      f[key] = value;
      if (key === 'accountid') m.account = true;
      else if (!m.account) m.head.push(key);
      return;
    }
    if (key === 'accountid' || (m.account && m.head.includes(key))) return;
    f[key] = value;
  }

  private hold(m: Message): void {
    this.held = m;
    const timer = setTimeout(() => {
      // After the poll phase, so a tail already waiting in the socket is read first.
      setImmediate(() => { if (this.held === m) this.release(); });
    }, this.lim.holdMs);
    timer.unref?.();
    this.timer = timer;
  }

  private release(): void {
    const m = this.held;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (!m) return;
    this.held = null;
    if (m.fields.remoteaddress === undefined) { this.counts.incomplete++; this.deliver(this.sink.incomplete, m.fields); }
    this.emit(m);
  }

  private emit(m: Message): void {
    if (!trusted(m)) {
      this.counts.distrusted++;
      try { this.sink.malformed('SuccessfulAuth without UsingPassword after its RemoteAddress (forged inside another event?): not believed'); } catch { /* see bad() */ }
      return;
    }
    this.counts.messages++;
    this.deliver(this.sink.event, m.fields);
  }

  private bad(reason: string): void {
    this.counts.malformed++;
    try { this.sink.malformed(reason); } catch { /* the sink's fault must not stop the stream */ }
  }

  /** A throw in the consumer stays there: the stream and its framing go on. */
  private deliver(fn: (f: AmiFields) => void, fields: AmiFields): void {
    try { fn.call(this.sink, fields); } catch { /* the consumer logs its own faults */ }
  }
}
