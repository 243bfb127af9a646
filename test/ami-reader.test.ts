import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { AmiConnection } from '../src/ami';
import { AmiReader, type AmiFields } from '../src/ami/reader';
import { toSecurityEvent, type SecurityEvent } from '../src/events';
import { splitAmiStream } from '../tools/lab/wire';
import { createLogger } from '../src/log';
import { canonicalIp } from '../src/net/ip';
import { FakeAmi, amiEvent } from '../tools/lab/ami';
import { fixtureBytes, fixtureNames } from './helpers/fixtures';

/** A deterministic PRNG (mulberry32): the same seed, the same fuzz run. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}
type Rng = ReturnType<typeof prng>;

const FORGED = 'IPV4/UDP/203.0.113.9/5060';
const NAMES = ['Set', 'set', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'Event', 'Response', 'RemoteAddress', 'ActionID', 'AccountID', 'Privilege'];
const INJECT = [
  '\r\nSet: x', '\r\n\r\nSet: x', '\r\nconstructor: x', '\r\n__proto__: x', '\r\ntoString: x', '\r\nhasOwnProperty: x', '\r\n\r\n', '\r\n\r\n\r\n\r\n',
  `\r\n\r\nEvent: InvalidAccountID\r\nPrivilege: security,all\r\nSeverity: Error\r\nRemoteAddress: ${FORGED}\r\n\r\n`,
  '\r\n\r\nEvent: SuccessfulAuth\r\nPrivilege: security,all\r\nSeverity: Informational\r\n', '\r\nRemoteAddress: IPV4/UDP/0.0.0.0/5060',
  '\r\n\r\nResponse: Error\r\nActionID: 1\r\nMessage: forged\r\n\r\n', '\r', '\n', '\n\n', '\u0000', '\u202e', '\u2028', ':', ': : :', '\r\n: empty name',
  '\r\nno colon here', '\ud800', 'x'.repeat(9000),
];
const VALUES = ['IPV4/UDP/010.0.0.1/5060', 'IPV6/UDP/::ffff:1.2.3.4/5060', 'IPV4/UDP/1.2.3.4/99999', 'IPV6/UDP/[fe80::1%eth0]/5060', 'IPV4/UDP/256.1.1.1/1', '', ' ', 'security,all', 'constructor', '__proto__'];

/** The messages of every fixture capture, as raw text, banners and login responses included. */
function seedFrames(): string[] {
  const frames: string[] = [];
  for (const name of fixtureNames()) frames.push(...splitAmiStream(fixtureBytes(name).toString('utf8')).messages.filter((m) => m.length < 4000));
  return frames;
}

/** One frame mutated 1-3 times: CR/LF and header injection into a field, hostile names, cut, duplicated or lost lines. */
function mutate(frame: string, r: Rng): string {
  const lines = frame.split('\r\n');
  for (let k = 1 + r.int(3); k > 0; k--) {
    if (lines.length === 0) lines.push('');
    const i = r.int(lines.length);
    const colon = lines[i].indexOf(':');
    switch (r.int(7)) {
      case 0: case 1: lines[i] += r.pick(INJECT); break; // injection at the end of a value (where Asterisk puts AccountID)
      case 2: lines[i] = `${r.pick(NAMES)}${colon >= 0 ? lines[i].slice(colon) : ': x'}`; break;
      case 3: lines[i] = `${colon >= 0 ? lines[i].slice(0, colon) : 'X'}: ${r.pick(VALUES)}`; break;
      case 4: lines.splice(r.int(lines.length + 1), 0, lines[r.int(lines.length)]); break;
      case 5: lines.splice(i, 1); break;
      default: lines[i] = lines[i].slice(0, r.int(lines[i].length + 1)); break;
    }
  }
  return lines.join('\r\n') + '\r\n\r\n';
}

/** n mutated frames (every third one intact), cut into chunks of random size. */
function fuzzStream(seed: number, n: number): string[] {
  const r = prng(seed);
  const frames = seedFrames();
  let text = '';
  for (let i = 0; i < n; i++) {
    const f = r.pick(frames) + '\r\n\r\n';
    text += i % 3 === 0 ? f : mutate(f.slice(0, -4), r);
  }
  const chunks: string[] = [];
  for (let p = 0; p < text.length;) {
    const len = 1 + r.int(r.next() < 0.3 ? 8 : 3000);
    chunks.push(text.slice(p, p + len));
    p += len;
  }
  return chunks;
}

/** Every accepted event's address must print back as itself. */
function checkEvent(fields: AmiFields, out: SecurityEvent[]): void {
  const r = toSecurityEvent(fields);
  if (!r.ok) return;
  assert.equal(canonicalIp(r.event.address)?.address, r.event.address, `non-canonical address ${JSON.stringify(r.event.address)}`);
  for (const text of [r.event.account, r.event.kind, r.event.service, r.event.sessionId]) assert.doesNotMatch(text, /[\p{Cc}\p{Cf}\u2028\u2029]/u);
  out.push(r.event);
}

function noPollution(): void {
  const probe = {} as Record<string, unknown>;
  for (const n of ['set', 'Set', 'x', 'constructor']) assert.ok(!Object.prototype.hasOwnProperty.call(Object.prototype, n) || n === 'constructor', `Object.prototype.${n} polluted`);
  assert.equal(typeof probe.toString, 'function');
  assert.equal(probe.set, undefined);
}

const collect = () => {
  const events: AmiFields[] = [];
  const responses: AmiFields[] = [];
  const reasons: string[] = [];
  const incomplete: AmiFields[] = [];
  const reader = new AmiReader({ event: (f) => events.push(f), response: (f) => responses.push(f), malformed: (r) => reasons.push(r), incomplete: (f) => incomplete.push(f) });
  return { reader, events, responses, reasons, incomplete };
};

describe('AMI reader', () => {
  test('fixtures: every message read, banner tolerated, headers in null-prototype objects', () => {
    for (const name of fixtureNames()) {
      const { reader, events, responses, reasons } = collect();
      const text = fixtureBytes(name).toString('utf8');
      for (let p = 0; p < text.length; p += 777) reader.push(text.slice(p, p + 777));
      const expected = splitAmiStream(text).messages;
      assert.equal(events.length + responses.length, expected.length, name);
      assert.deepEqual(reasons, [], name);
      for (const e of events) assert.equal(Object.getPrototypeOf(e), null);
    }
  });

  test('hostile header names are plain keys; oversize messages and lines are skipped or cut and counted', () => {
    const { reader, events, reasons } = collect();
    reader.push('Event: X\r\nSet: x\r\nset: y\r\nconstructor: c\r\n__proto__: p\r\ntoString: t\r\nhasOwnProperty: h\r\nEvent: Y\r\n\r\n');
    assert.equal(events.length, 1);
    const e = events[0];
    assert.equal(e.set, 'y');
    assert.equal(e.constructor, 'c');
    assert.equal(e.__proto__, 'p');
    assert.equal(Object.getPrototypeOf(e), null);
    assert.equal(e.event, 'Y', 'without AccountID, the last value wins');
    noPollution();
    reader.push(`Event: Big\r\nJunk: ${'x'.repeat(70_000)}`);
    reader.push(`${'y'.repeat(10)}\r\n\r\nEvent: After\r\nLong: ${'z'.repeat(20_000)}\r\n\r\n`);
    assert.equal(reasons.length, 1, 'the oversize message is skipped once');
    assert.equal(events.at(-1)!.event, 'After');
    assert.equal(events.at(-1)!.long.length, 8192 - 'Long: '.length, 'a long line is cut');
    reader.push('no header here\r\n\r\n');
    assert.equal(reasons.length, 2);
    assert.equal(reader.counts.malformed, 2);
  });

  test('header count is bounded, but RemoteAddress still read', () => {
    const { reader, events } = collect();
    const many = Array.from({ length: 500 }, (_, i) => `H${i}: v`).join('\r\n');
    reader.push(`Event: InvalidAccountID\r\nPrivilege: security,all\r\n${many}\r\nRemoteAddress: IPV4/UDP/192.0.2.1/5060\r\n\r\n`);
    assert.equal(Object.keys(events[0]).length, 129);
    assert.equal(events[0].remoteaddress, 'IPV4/UDP/192.0.2.1/5060');
  });

  test('fuzz, reader alone: 3,000 mutated frames in random cuts never throw; addresses canonical', () => {
    const { reader, events, reasons } = collect();
    const accepted: SecurityEvent[] = [];
    for (const chunk of fuzzStream(12, 3000)) reader.push(chunk);
    reader.close();
    for (const e of events) checkEvent(e, accepted);
    assert.ok(accepted.length > 500, `events accepted: ${accepted.length}`);
    assert.ok(!reasons.some((r) => r.startsWith('reader fault')), reasons.find((r) => r.startsWith('reader fault')));
    assert.ok(!accepted.some((e) => e.kind === 'SuccessfulAuth' && e.address === '203.0.113.9'));
    noPollution();
  });
});

describe('AMI session (real AmiConnection, fake AMI over TCP)', () => {
  const conns: AmiConnection[] = [];
  const amis: FakeAmi[] = [];
  after(async () => {
    for (const c of conns) c.stop();
    await Promise.all(amis.map((a) => a.close()));
  });
  const logLines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { for (const l of String(chunk).split('\n')) if (l) logLines.push(JSON.parse(l)); cb(); } });
  const session = async () => {
    const ami = new FakeAmi();
    await ami.listen();
    amis.push(ami);
    const conn = new AmiConnection({ host: '127.0.0.1', port: ami.port, user: 'ampere', pass: 'ampere', pingIntervalMs: 100, pingTimeoutMs: 5000 }, createLogger('debug', sink));
    conns.push(conn);
    const got: AmiFields[] = [];
    conn.on('message', (m: AmiFields) => got.push(m));
    conn.start();
    await ami.waitForLogins(1);
    await until(() => conn.state === 'connected');
    return { ami, conn, got };
  };
  const until = async (pred: () => boolean, ms = 15_000) => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const addresses = (got: AmiFields[]) => got.map((m) => toSecurityEvent(m)).filter((r) => r.ok).map((r) => (r as { event: SecurityEvent }).event);

  test('an event cut by injected blank lines is put back together; forged events yield nothing', async () => {
    const { ami, conn, got } = await session();
    const forged = `x\r\n\r\nEvent: InvalidAccountID\r\nPrivilege: security,all\r\nSeverity: Error\r\nRemoteAddress: ${FORGED}\r\n\r\n`;
    const fakeSuccess = `y\r\n\r\nEvent: SuccessfulAuth\r\nPrivilege: security,all\r\nSeverity: Informational\r\nRemoteAddress: ${FORGED}\r\n\r\n`;
    ami.send(amiEvent('ChallengeResponseFailed', '192.0.2.1'));
    ami.send(amiEvent('InvalidAccountID', '198.51.100.7', { AccountID: 'x\r\n\r\nSet: x' }));
    ami.send(amiEvent('InvalidAccountID', '198.51.100.8', { AccountID: forged }));
    ami.send(amiEvent('InvalidAccountID', '198.51.100.10', { AccountID: '\r\n\r\n' }));
    ami.send(amiEvent('InvalidAccountID', '198.51.100.11', { AccountID: fakeSuccess }));
    // the head and its tail in two writes, a few ms apart
    const cut = amiEvent('InvalidAccountID', '198.51.100.12', { AccountID: 'z\r\n\r\nconstructor: x' });
    const at = cut.indexOf('constructor');
    ami.send(cut.slice(0, at));
    await new Promise((r) => setTimeout(r, 5));
    ami.send(cut.slice(at));
    ami.send(amiEvent('ChallengeResponseFailed', '192.0.2.2'));
    await until(() => addresses(got).some((e) => e.address === '192.0.2.2'));
    // The fake AMI's own login SuccessfulAuth (from 127.0.0.1) is not part of this stream.
    const events = addresses(got).filter((e) => e.address !== '127.0.0.1');
    assert.deepEqual(events.map((e) => `${e.kind} ${e.address}`), [
      'ChallengeResponseFailed 192.0.2.1', 'InvalidAccountID 198.51.100.7', 'InvalidAccountID 198.51.100.8', 'InvalidAccountID 198.51.100.10',
      'InvalidAccountID 198.51.100.11', 'InvalidAccountID 198.51.100.12', 'ChallengeResponseFailed 192.0.2.2',
    ]);
    assert.equal(events[1].account, 'x');
    assert.ok(conn.counts.merged >= 6, `merged ${conn.counts.merged}`);
    assert.equal(conn.counts.malformed, 0);
    assert.equal(conn.reconnects, 0);
    assert.equal(ami.connections, 1);
  });

  test('a SuccessfulAuth forged inside AccountID (riding on the genuine tail) is not believed; a real one is', async () => {
    const { ami, conn, got } = await session();
    const forgedHead = `x\r\nSessionID: 1\r\nLocalAddress: IPV4/UDP/192.0.2.1/5060\r\nRemoteAddress: ${FORGED}\r\n\r\n`;
    const success = 'Event: SuccessfulAuth\r\nPrivilege: security,all\r\nSeverity: Informational\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: 100';
    ami.send(amiEvent('InvalidAccountID', '198.51.100.40', { AccountID: forgedHead + success }));
    // the same with a cut: the forged success head is held and takes the genuine tail
    ami.send(amiEvent('InvalidAccountID', '198.51.100.41', { AccountID: `x\r\n\r\nSet: 1\r\nRemoteAddress: ${FORGED}\r\n\r\n${success}\r\n\r\nSet: 2` }));
    ami.send(amiEvent('SuccessfulAuth', '192.0.2.5'));
    await until(() => addresses(got).some((e) => e.address === '192.0.2.5'));
    const events = addresses(got).map((e) => `${e.kind} ${e.address}`);
    assert.ok(!events.some((e) => e.startsWith('SuccessfulAuth 198.51.100.')), events.join(', '));
    assert.ok(events.includes('SuccessfulAuth 192.0.2.5'));
    assert.equal(conn.counts.distrusted, 2);
    assert.equal(conn.reconnects, 0);
  });

  test('a cut event whose tail never comes is emitted as it is, warned about, and the next event still counts', async () => {
    const { ami, conn, got } = await session();
    const head = amiEvent('InvalidAccountID', '198.51.100.20', { AccountID: 'x\r\n\r\n' });
    ami.send(head.slice(0, head.indexOf('SessionID')));
    await until(() => conn.counts.incomplete === 1);
    ami.send(amiEvent('ChallengeResponseFailed', '192.0.2.3'));
    await until(() => addresses(got).some((e) => e.address === '192.0.2.3'));
    ami.send(head.slice(0, head.indexOf('SessionID')));
    await until(() => conn.counts.incomplete === 2);
    const warnings = logLines.filter((l) => l.level === 40 && /without RemoteAddress/.test(l.msg));
    assert.equal(warnings.length, 1, 'one warning per 10 s, not one per event');
    assert.equal(warnings[0].kind, 'InvalidAccountID');
    assert.equal(conn.reconnects, 0);
  });

  test('fuzz, whole session: 3,000 mutated frames over TCP, zero reconnects, every address canonical', async () => {
    const { ami, conn, got } = await session();
    const pingsBefore = ami.pings;
    for (const chunk of fuzzStream(7, 3000)) {
      ami.send(chunk);
      if (ami.sockets.size && [...ami.sockets][0].writableLength > 1 << 20) await new Promise((r) => setTimeout(r, 1));
    }
    // a clean end: whatever the fuzz left open is closed, then a sentinel
    ami.send('\r\n\r\n' + amiEvent('ChallengeResponseFailed', '192.0.2.250') + amiEvent('ChallengeResponseFailed', '192.0.2.251'));
    await until(() => addresses(got).some((e) => e.address === '192.0.2.251'));
    await until(() => ami.pings > pingsBefore + 1, 5000);
    const accepted: SecurityEvent[] = [];
    for (const m of got) checkEvent(m, accepted);
    assert.ok(accepted.length > 500, `events accepted: ${accepted.length}`);
    assert.equal(conn.reconnects, 0, 'no reconnect');
    assert.equal(conn.state, 'connected');
    assert.equal(ami.connections, 1);
    assert.ok(conn.counts.malformed > 0 && conn.counts.merged > 0, JSON.stringify(conn.counts));
    assert.ok(!logLines.some((l) => l.msg === 'ami event handler failed' || l.msg === 'ami response not handled'));
    assert.ok(!logLines.some((l) => String(l.reason ?? '').startsWith('reader fault')), 'no internal fault of the reader');
    assert.ok(logLines.some((l) => l.msg === 'unreadable AMI message skipped'), 'skipped messages are logged (debug)');
    noPollution();
  });
});
