/**
 * The benchmark's stand-in for Asterisk, run inside the "pbx" namespace next to the daemon
 * (bundled to bench/.build/pbx.js). It serves AMI on 127.0.0.1:<port> with the lab's FakeAmi
 * (tools/lab/ami.ts) and, optionally, answers SIP attempts on UDP <sip port> the way Asterisk does
 * under a brute force: each datagram is one wrong-password attempt, which raises the two
 * events Asterisk 22 raises for it (ChallengeSent, ChallengeResponseFailed: the blocks of the
 * svcrack capture, source address replaced) and is answered with a 403.
 *
 * Controlled by JSON lines on stdin; answers JSON lines on stdout. Times are CLOCK_MONOTONIC
 * nanoseconds (process.hrtime.bigint), as text.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { FakeAmi } from '../../tools/lab/ami';

const [amiPort, sipPort] = process.argv.slice(2).map(Number);
const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
const mono = () => process.hrtime.bigint().toString();

// The AMI side is the lab's stand-in; only the SIP side and the control ops are the agent's own.
const ami = new FakeAmi({ authEvent: false });
ami.onLogin = () => out({ ev: 'login', logins: ami.logins });
ami.listen(amiPort).then(() => out({ ev: 'ready' }), (err) => { process.stderr.write(`${err}\n`); process.exit(1); });

/** Wire-format security events, from the Asterisk 22 captures (values the parser reads are real). */
function block(kind: string, address: string, session: string): string {
  const fam = address.includes(':') ? 'IPV6' : 'IPV4';
  const local = fam === 'IPV4' ? '10.233.0.1' : 'fd33::1';
  const tv = new Date().toISOString().replace('Z', '+0000');
  const sev = kind === 'ChallengeSent' || kind === 'SuccessfulAuth' ? 'Informational' : 'Error';
  let s = `Event: ${kind}\r\nPrivilege: security,all\r\nEventTV: ${tv}\r\nSeverity: ${sev}\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: 100\r\nSessionID: ${session}\r\nLocalAddress: ${fam}/UDP/${local}/5060\r\nRemoteAddress: ${fam}/UDP/${address}/5060\r\n`;
  if (kind === 'ChallengeSent') s += 'Challenge: \r\n';
  if (kind === 'ChallengeResponseFailed') s += 'Challenge: 1795760251/ef7b319964030efec2861b1032d1d30b\r\nResponse: 4e2d8c2a8bdb1a1ea9e27cf0f33bd1e2\r\nExpectedResponse: \r\n';
  return s + '\r\n';
}

let session = 1_000_000;
const attempt = (address: string) => block('ChallengeSent', address, String(++session)) + block('ChallengeResponseFailed', address, String(session));

/**
 * Write bytes[from, to) in chunks of about 256 KB, each ending on a message boundary, so that
 * whatever else is written meanwhile (a Pong) lands between messages, as with Asterisk.
 */
async function writeRange(bytes: Buffer, from: number, to: number): Promise<void> {
  const CH = 256 * 1024;
  for (let i = from; i < to;) {
    let j = Math.min(to, i + CH);
    if (j < to) {
      const k = bytes.lastIndexOf('\r\n\r\n', j - 4);
      const next = bytes.indexOf('\r\n\r\n', j);
      j = k >= i ? k + 4 : next >= 0 && next + 4 <= to ? next + 4 : to;
    }
    await write(bytes.subarray(i, j));
    i = j;
  }
}

const write = (data: string | Buffer) => ami.write(data);

// ---- SIP side: one datagram = one wrong-password attempt.
const sipCounts = new Map<string, number>();
const sipFirst = new Map<string, string>();
let sipOn = false;
let replyDelayMs = 0;
function onSip(sock: UdpSocket) {
  return (_msg: Buffer, r: RemoteInfo) => {
    if (!sipOn || ami.readers === 0) return;
    const a = r.address;
    sipCounts.set(a, (sipCounts.get(a) ?? 0) + 1);
    if (!sipFirst.has(a)) sipFirst.set(a, mono());
    void ami.write(attempt(a)).catch(() => {});
    const reply = () => sock.send('SIP/2.0 403 Forbidden\r\n\r\n', r.port, a);
    if (replyDelayMs > 0) setTimeout(reply, replyDelayMs);
    else reply();
  };
}
if (sipPort) {
  for (const type of ['udp4', 'udp6'] as const) {
    const s = createSocket(type === 'udp6' ? { type, ipv6Only: true } : { type });
    s.on('message', onSip(s));
    s.bind(sipPort, type === 'udp4' ? '0.0.0.0' : '::');
  }
}

interface Cmd { id: number; op: string; [k: string]: unknown }

let segmentChain: Promise<void> = Promise.resolve();
const files = new Map<string, { bytes: Buffer; offsets: number[] }>();

async function run(c: Cmd): Promise<Record<string, unknown>> {
  switch (c.op) {
    case 'fail': {
      // n failures (attempt pairs) for each address in one write.
      const addrs = c.addrs as string[];
      const n = c.n as number;
      let data = '';
      for (const a of addrs) for (let i = 0; i < n; i++) data += attempt(a);
      const t = mono();
      await write(data);
      return { t };
    }
    case 'stream': {
      // A prepared byte file of whole events (with `rate`, from event `from`); `rate` events/s in 10 ms ticks, or all as fast as the socket takes it.
      const bytes = readFileSync(c.file as string);
      const offsets = c.offsets ? (JSON.parse(readFileSync(c.offsets as string, 'utf8')) as number[]) : null;
      const t0 = mono();
      const rate = c.rate as number | undefined;
      if (!rate || !offsets) {
        await writeRange(bytes, 0, bytes.length);
      } else {
        // offsets[k] = byte offset where event k starts; offsets[n] = total length. Events [from, from + count).
        const from = Math.min(offsets.length - 1, (c.from as number | undefined) ?? 0);
        const n = Math.min(offsets.length - 1, from + ((c.count as number | undefined) ?? Infinity));
        const start = performance.now();
        let sent = from;
        while (sent < n) {
          const due = Math.min(n, from + Math.floor(((performance.now() - start) / 1000) * rate));
          if (due > sent) {
            await write(bytes.subarray(offsets[sent], offsets[due]));
            sent = due;
          }
          await new Promise((r) => setTimeout(r, 10));
        }
      }
      return { t0, t1: mono(), bytes: bytes.length };
    }
    case 'segment': {
      // Events [from, to) of a prepared file, then `markerFailures` failures of `marker`; one
      // segment after the other (a chain), so markers follow their segment on the wire.
      const prev = segmentChain;
      let release!: () => void;
      segmentChain = new Promise<void>((r) => (release = r));
      await prev;
      try {
        const cached = files.get(c.file as string) ?? { bytes: readFileSync(c.file as string), offsets: JSON.parse(readFileSync(c.offsets as string, 'utf8')) as number[] };
        files.set(c.file as string, cached);
        const from = cached.offsets[c.from as number];
        const to = cached.offsets[Math.min(c.to as number, cached.offsets.length - 1)];
        const t = mono();
        await writeRange(cached.bytes, from, to);
        let m = '';
        for (let i = 0; i < (c.markerFailures as number); i++) m += attempt(c.marker as string);
        await write(m);
        return { t, tm: mono() };
      } finally {
        release();
      }
    }
    case 'sip':
      sipOn = Boolean(c.on);
      replyDelayMs = Number(c.replyDelayMs ?? 0);
      if (c.reset) { sipCounts.clear(); sipFirst.clear(); }
      return {};
    case 'sipstats':
      return { counts: Object.fromEntries(sipCounts), first: Object.fromEntries(sipFirst) };
    case 'quit':
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let c: Cmd;
  try { c = JSON.parse(line); } catch { return; }
  run(c).then((r) => out({ id: c.id, ok: true, ...r }), (err) => out({ id: c.id, ok: false, error: String(err) }));
});
process.stdin.on('end', () => process.exit(0));
