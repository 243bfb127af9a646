import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { parseAmiBlock } from './wire';

export interface FakeAmiOptions {
  user?: string;
  secret?: string;
  /** Reject every login (credentials wrong on purpose). */
  rejectLogin?: boolean;
  /** Never answer Ping (a half-open, silent peer). */
  silent?: boolean;
  /**
   * The user has `read = security` (default): like Asterisk, each accepted login is followed
   * at once by a SuccessfulAuth (Service AMI) for that login. false: no event ever reaches
   * the client, as for a user without it.
   */
  readSecurity?: boolean;
  /** Follow each accepted login with Asterisk's SuccessfulAuth for it (default true). */
  authEvent?: boolean;
}

/**
 * The lab's Asterisk stand-in: a small AMI server speaking the real wire format (banner,
 * Login/Response, Ping/Pong) that writes raw event bytes as given, so a test can replay a
 * capture or cut it mid-event; the benchmark's agent (bench/agent/pbx.ts) runs it too.
 */
export class FakeAmi {
  readonly server: Server;
  readonly sockets = new Set<Socket>();
  logins = 0;
  rejected = 0;
  pings = 0;
  connections = 0;
  opts: Required<FakeAmiOptions>;
  private loggedIn = new Set<Socket>();
  /** Called after each accepted login. */
  onLogin: (() => void) | null = null;

  constructor(opts: FakeAmiOptions = {}) {
    this.opts = { user: 'ampere', secret: 'ampere', rejectLogin: false, silent: false, readSecurity: true, authEvent: true, ...opts };
    this.server = createServer((s) => this.accept(s));
  }

  async listen(port = 0): Promise<number> {
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as { port: number }).port;
  }

  /** How many logged-in clients read events now. */
  get readers(): number {
    return this.loggedIn.size;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  private accept(s: Socket): void {
    this.connections++;
    this.sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => { this.sockets.delete(s); this.loggedIn.delete(s); });
    s.on('error', () => {});
    s.write('Asterisk Call Manager/11.0.0\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('utf8');
      let i;
      while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 4);
        const f = parseAmiBlock(block);
        const id = f.actionid ?? '';
        if (f.action?.toLowerCase() === 'login') {
          const ok = !this.opts.rejectLogin && f.username === this.opts.user && f.secret === this.opts.secret;
          const events = this.opts.readSecurity && f.events?.toLowerCase() !== 'off';
          if (ok) { this.logins++; if (events) this.loggedIn.add(s); } else this.rejected++;
          s.write(ok ? `Response: Success\r\nActionID: ${id}\r\nMessage: Authentication accepted\r\n\r\n` : `Response: Error\r\nActionID: ${id}\r\nMessage: Authentication failed\r\n\r\n`);
          if (ok && events && this.opts.authEvent) s.write(amiEvent('SuccessfulAuth', '127.0.0.1', { Service: 'AMI', AccountID: f.username ?? '', RemoteAddress: `IPV4/TCP/127.0.0.1/${s.remotePort ?? 0}`, LocalAddress: 'IPV4/TCP/127.0.0.1/5038', UsingPassword: '0' }));
          if (ok) this.onLogin?.();
          if (!ok) s.end();
        } else if (f.action?.toLowerCase() === 'ping') {
          this.pings++;
          if (!this.opts.silent) s.write(`Response: Success\r\nActionID: ${id}\r\nPing: Pong\r\nTimestamp: ${Date.now() / 1000}\r\n\r\n`);
        } else if (f.action?.toLowerCase() === 'logoff') {
          s.end('Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n');
        }
      }
    });
  }

  /** Resolves once n clients are logged in. */
  async waitForLogins(n: number, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.logins < n) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${n} AMI logins (have ${this.logins})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Write raw bytes to every logged-in client that may read events. */
  send(bytes: string | Buffer): void {
    for (const s of this.loggedIn) s.write(bytes);
  }

  /** Write to every client that may read events; resolves once their sockets took it (backpressure). */
  write(bytes: string | Buffer): Promise<void> {
    if (this.loggedIn.size === 0) return Promise.reject(new Error('no AMI client logged in'));
    return Promise.all([...this.loggedIn].map((s) => (s.write(bytes) ? undefined : new Promise((r) => s.once('drain', r))))).then(() => {});
  }

  /** Drop every connection (Asterisk restarting). */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/** The events of a capture without its banner and its own login response. */
export function captureEvents(raw: string): string {
  const body = raw.slice(raw.indexOf('\r\n') + 2);
  const firstEnd = body.indexOf('\r\n\r\n');
  return body.startsWith('Response:') ? body.slice(firstEnd + 4) : body;
}

/** One synthetic security event in wire format. */
export function amiEvent(kind: string, address: string, extra: Record<string, string> = {}): string {
  const severity = kind === 'ChallengeSent' || kind === 'SuccessfulAuth' ? 'Informational' : 'Error';
  const fam = address.includes(':') ? 'IPV6' : 'IPV4';
  const fields: Record<string, string> = {
    Event: kind, Privilege: 'security,all', EventTV: new Date().toISOString(), Severity: severity, Service: 'PJSIP',
    EventVersion: '1', AccountID: '100', SessionID: '1', LocalAddress: `${fam}/UDP/192.0.2.1/5060`,
    RemoteAddress: `${fam}/UDP/${address}/5060`,
    // Asterisk's SuccessfulAuth ends with UsingPassword, after RemoteAddress (src/ami/reader.ts relies on it).
    ...(kind === 'SuccessfulAuth' ? { UsingPassword: '1' } : {}), ...extra,
  };
  return Object.entries(fields).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
}
