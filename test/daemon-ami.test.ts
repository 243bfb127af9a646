import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { DaemonProcess } from '../tools/lab/daemon';
import { niceness } from '../tools/lab/proc';
import { FakeAmi, amiEvent, captureEvents } from '../tools/lab/ami';
import { ampere, json } from './helpers/cli';
import { fixtureBytes } from './helpers/fixtures';

/** The real daemon against a real AMI byte stream; firewall in dry-run (the kernel is tested in firewall tests). */
const env = (ami: FakeAmi, dir: string, extra: Record<string, string> = {}) => ({
  AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_LOG_LEVEL: 'debug', AMPERE_AMI_TIMEOUT: '1s', ...extra,
});
const isBan = (a?: string) => (l: { msg: string; address?: unknown }) => l.msg === 'ban' && (a === undefined || l.address === a);

describe('daemon against a replayed AMI stream', () => {
  const daemons: DaemonProcess[] = [];
  const amis: FakeAmi[] = [];
  const start = async (opts: ConstructorParameters<typeof FakeAmi>[0] = {}, extra: Record<string, string> = {}, wrap?: string[]) => {
    const ami = new FakeAmi(opts);
    await ami.listen();
    amis.push(ami);
    const dir = mkdtempSync(join(tmpdir(), 'ampere-it-'));
    const d = new DaemonProcess(env(ami, dir, extra), { wrap });
    daemons.push(d);
    return { ami, d, dir };
  };
  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await Promise.all(amis.map((a) => a.close()));
  });

  test('svcrack capture: the attacker is banned once, stored, the password never logged', async () => {
    const { ami, d, dir } = await start({ secret: 'S3cr3t-Pw' }, { AMPERE_PASS: 'S3cr3t-Pw' });
    await ami.waitForLogins(1);
    await d.waitFor((l) => l.msg === 'ami connected');
    ami.send(captureEvents(fixtureBytes('svcrack.ami').toString()));
    const ban = await d.waitFor(isBan('10.99.0.2'));
    assert.equal((ban.reason as { kind: string }).kind, 'ChallengeResponseFailed');
    assert.equal(ban.failures, 3);
    assert.equal(ban.count, 1);
    assert.equal(ban.duration, '1h');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(d.count(isBan()), 1, 'one ban, later events from the banned host ignored');
    assert.equal(await d.stop(), 0);
    const all = d.lines.map((l) => JSON.stringify(l)).join('\n') + d.stderr;
    assert.ok(!all.includes('S3cr3t-Pw'), 'password never in logs');
    const db = new Database(join(dir, 'ampere.db'), { readonly: true });
    const row = db.prepare('SELECT * FROM hosts WHERE address = ?').get('10.99.0.2') as { ban_count: number; banned: number; last_kind: string };
    assert.equal(row.ban_count, 1);
    assert.equal(row.banned, 1);
    const events = db.prepare('SELECT count(*) AS n FROM events WHERE address = ?').get('10.99.0.2') as { n: number };
    assert.ok(events.n >= 3 && events.n <= 20, `bounded history (${events.n})`);
    db.close();
    assert.ok(d.lines.some((l) => l.msg === 'ampere stopped; bans stay in the kernel'));
  });

  const canDropCaps = process.getuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0;
  test('nice: without CAP_SYS_NICE one warning and the daemon runs as launched; nice = 0 leaves the priority alone', { skip: !canDropCaps && 'needs root and setpriv' }, async () => {
    const { ami, d } = await start({}, {}, ['setpriv', '--bounding-set=-sys_nice', '--inh-caps=-sys_nice']);
    await d.waitFor((l) => l.msg === 'ami connected');
    assert.equal(d.count((l) => l.msg === 'could not set the scheduling priority (raising it needs CAP_SYS_NICE): running as launched' && l.nice === -10), 1);
    assert.equal(niceness(d.proc.pid!), niceness(process.pid));
    ami.send(amiEvent('ChallengeResponseFailed', '203.0.113.61').repeat(3));
    await d.waitFor(isBan('203.0.113.61'));
    const zero = await start({}, { AMPERE_NICE: '0' });
    await zero.d.waitFor((l) => l.msg === 'ami connected');
    assert.equal(zero.d.count((l) => String(l.msg).includes('scheduling priority')), 0);
    assert.equal(niceness(zero.d.proc.pid!), niceness(process.pid));
  });

  test('a connection cut mid-event: reconnect, no crash, the next events still count', async () => {
    const { ami, d } = await start();
    await ami.waitForLogins(1);
    const ev = amiEvent('ChallengeResponseFailed', '192.0.2.50');
    ami.send(ev + ev + ev.slice(0, 40)); // two whole failures, then half of one
    await new Promise((r) => setTimeout(r, 200));
    ami.cut();
    await ami.waitForLogins(2);
    await d.waitFor((l) => l.msg === 'ami connected', 10_000, 2);
    assert.equal(d.count(isBan()), 0);
    ami.send(amiEvent('InvalidAccountID', '192.0.2.50'));
    const ban = await d.waitFor(isBan('192.0.2.50'));
    assert.equal(ban.failures, 3, 'the penalty survived the reconnect, the half event was dropped');
    assert.equal(d.proc.exitCode, null);
  });

  test('login refused: logged clearly and retried, then works when credentials are fixed', async () => {
    const { ami, d } = await start({ rejectLogin: true });
    await d.waitFor((l) => l.msg === 'ami login rejected', 10_000);
    const line = d.lines.find((l) => l.msg === 'ami login rejected')!;
    assert.match(String(line.reason), /rejected the login of user "ampere"/);
    ami.opts.rejectLogin = false; // the operator fixed manager.conf
    await d.waitFor((l) => l.msg === 'ami connected', 15_000);
    assert.ok(ami.rejected >= 1);
  });

  test('a silent peer (no Ping answer) is dropped and reconnected', async () => {
    const { ami, d } = await start({ silent: true });
    await ami.waitForLogins(1);
    await d.waitFor((l) => l.msg === 'ami disconnected' && /Ping/.test(String(l.reason)), 8_000);
    await ami.waitForLogins(2);
    assert.ok(ami.pings >= 1);
  });

  test('a Pong stuck behind a flood does not drop a live connection; silence does', async () => {
    const { ami, d } = await start({ silent: true });
    await ami.waitForLogins(1);
    const t0 = Date.now();
    let i = 0;
    while (Date.now() - t0 < 3500) { // 3.5 x the 1 s Ping timeout, events flowing all along
      ami.send(amiEvent('ChallengeSent', `192.0.2.${(i++ % 200) + 1}`));
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(ami.pings >= 1, 'a Ping went out and stayed unanswered');
    assert.equal(d.count((l) => l.msg === 'ami disconnected'), 0, 'data flowing = alive');
    await d.waitFor((l) => l.msg === 'ami disconnected' && /Ping/.test(String(l.reason)), 5_000);
  });

  test('Asterisk not up yet: the daemon waits and connects when it appears', async () => {
    const probe = new FakeAmi();
    const port = await probe.listen();
    await probe.close(); // a free port nobody listens on
    const dir = mkdtempSync(join(tmpdir(), 'ampere-it-'));
    const d = new DaemonProcess({ AMPERE_PORT: String(port), AMPERE_DB: join(dir, 'a.db'), AMPERE_BACKEND: 'dry-run', AMPERE_AMI_TIMEOUT: '1s' });
    daemons.push(d);
    await d.waitFor((l) => l.msg === 'ami disconnected');
    const ami = new FakeAmi();
    amis.push(ami);
    await ami.listen(port);
    await ami.waitForLogins(1, 15_000);
    await d.waitFor((l) => l.msg === 'ami connected');
  });

  test('malformed and hostile events are logged at debug and skipped; loopback and allow-list never banned', async () => {
    const { ami, d } = await start({}, { AMPERE_ALLOW: '198.51.100.0/24', AMPERE_LOYALTY: '1' });
    await ami.waitForLogins(1);
    ami.send(amiEvent('ChallengeResponseFailed', '1.2.3.4; rm -rf /'));
    ami.send(amiEvent('InvalidPassword', '127.0.0.1', { Service: 'AMI' }));
    ami.send(amiEvent('InvalidAccountID', '198.51.100.9'));
    ami.send('Event: ChallengeResponseFailed\r\nPrivilege: security,all\r\nSeverity: Error\r\n\r\n');
    ami.send('Garbage without colon\r\n\r\nResponse: Follows\r\n\r\n');
    ami.send(amiEvent('InvalidAccountID', '192.0.2.77', { AccountID: "'; DROP TABLE hosts;--" }));
    const ban = await d.waitFor(isBan('192.0.2.77'));
    assert.equal((ban.reason as { account: string }).account, "'; DROP TABLE hosts;--");
    assert.equal(d.count(isBan()), 1);
    assert.ok(d.count((l) => l.msg === 'malformed security event skipped') >= 2);
    assert.equal(d.proc.exitCode, null);
  });

  test('a jamming stream of crafted events (CR/LF in AccountID) never drops the session; the attacker is banned at its loyalty-th failure', async () => {
    const { ami, d, dir } = await start({}, { AMPERE_LOYALTY: '3' });
    await ami.waitForLogins(1);
    await d.waitFor((l) => l.msg === 'ami connected');
    const scanner = '192.0.2.66';
    const forge = (address: string) => `x\r\n\r\nEvent: ChallengeResponseFailed\r\nPrivilege: security,all\r\nSeverity: Error\r\nRemoteAddress: IPV4/UDP/${address}/5060\r\n\r\n`;
    const jam = [
      { AccountID: 'x\r\nSet: x' }, { AccountID: '\r\nSet: x\r\nconstructor: y' }, { AccountID: '\r\n\r\n' }, { AccountID: 'x\r\n\r\nSet: x' },
      { AccountID: forge(scanner) }, { AccountID: forge('203.0.113.9') },
      { AccountID: 'x\r\nRemoteAddress: IPV4/UDP/198.51.100.30/5060\r\n\r\nOrphan: 1' }, // its genuine tail is left without a head { AccountID: '\r\n\r\n__proto__: z\r\n\r\n\r\nhasOwnProperty: 1' },
    ].map((extra) => amiEvent('InvalidAccountID', '198.51.100.30', extra));
    let i = 0;
    const jammer = setInterval(() => { ami.send(jam[i++ % jam.length] + jam[i++ % jam.length]); }, 5);
    // The stream is in order: once a probe host's ban is logged, everything sent before it was read.
    let probes = 0;
    const barrier = async () => {
      const probe = `192.0.2.${200 + probes++}`;
      ami.send(amiEvent('ChallengeResponseFailed', probe).repeat(3));
      await d.waitFor(isBan(probe));
    };
    try {
      await barrier();
      for (let k = 1; k <= 3; k++) {
        ami.send(amiEvent('ChallengeResponseFailed', scanner));
        if (k < 3) {
          await barrier();
          assert.equal(d.count(isBan(scanner)), 0, `not banned after ${k} failures (no forged failure counted)`);
        }
      }
      const ban = await d.waitFor(isBan(scanner));
      assert.equal(ban.failures, 3);
      await barrier();
    } finally {
      clearInterval(jammer);
    }
    assert.ok(i > 20, `jam events sent: ${i}`);
    assert.equal(d.count(isBan('203.0.113.9')), 0, 'a forged address is never banned');
    assert.equal(d.count(isBan('198.51.100.30')), 1, "the jammer's own address is read from each event's genuine tail");
    assert.equal(d.count((l) => l.msg === 'ami disconnected'), 0);
    assert.equal(d.count((l) => l.msg === 'ami connected'), 1);
    assert.equal(ami.connections, 1);
    const cliEnv = env(ami, dir, { AMPERE_LOYALTY: '3' });
    const [text, js] = await Promise.all([ampere(['status'], cliEnv), ampere(['status', '--json'], cliEnv)]);
    assert.equal(text.code, 0, text.stderr);
    const s = json(js);
    assert.equal(s.ami.reconnects, 0);
    assert.ok(s.ami.malformed > 0 && s.ami.merged > 0, JSON.stringify(s.ami));
    assert.match(text.stdout, new RegExp(`^ami: +connected .*, 0 reconnects, ${s.ami.malformed} unreadable messages skipped, ${s.ami.merged} split-event blocks merged, 0 forged successes dropped$`, 'm'));
  });

  test('flood capture (6,003 events) is taken whole; status file reflects it', async () => {
    const { ami, d, dir } = await start();
    await ami.waitForLogins(1);
    await d.waitFor((l) => l.msg === 'ami connected');
    ami.send(captureEvents(fixtureBytes('flood.ami').toString()));
    await d.waitFor(isBan('10.99.0.2'));
    await d.waitFor(() => {
      try { return JSON.parse(readFileSync(join(dir, 'ampere.status.json'), 'utf8')).events.total >= 6002; } catch { return false; }
    }, 15_000).catch(() => {});
    const status = JSON.parse(readFileSync(join(dir, 'ampere.status.json'), 'utf8'));
    assert.equal(status.ami.connected, true);
    assert.equal(status.bans.active.v4, 1);
  });
});

test('a bad config stops the start with one line naming the key, and a non-zero exit', async () => {
  const d = new DaemonProcess({ AMPERE_LOYALTY: 'lots', AMPERE_PASS: 'TopSecret' });
  assert.equal(await d.exit, 1);
  assert.match(d.stderr, /invalid loyalty: "lots" from AMPERE_LOYALTY/);
  assert.ok(!d.stderr.includes('TopSecret'));
  assert.equal(d.stderr.trim().split('\n').length, 1);
});
