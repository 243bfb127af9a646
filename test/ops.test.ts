import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ampere, json } from './helpers/cli';
import { USAGE_OF } from '../src/cli/usage';
import { DaemonProcess } from '../tools/lab/daemon';
import { amiEvent, FakeAmi } from '../tools/lab/ami';
import { FakeAmiProcess } from '../tools/lab/ami-proc';
import { Netns, skipUnlessRoot } from '../tools/lab/netns';

/** Operator commands of issue 17: help, completion, config, several addresses, top, import-fail2ban. */
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'ampere-ops-')); dirs.push(d); return d; };
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

describe('help and completion', () => {
  test('help <command> and <command> --help print the same usage, exit 0; unknown is a usage error', async () => {
    const [help, flag, short, run, health, unknown, none] = await Promise.all([
      ampere(['help', 'ban'], {}), ampere(['ban', '--help'], {}), ampere(['ban', '-h'], {}),
      ampere(['run', '--help'], { AMPERE_DB: '/nonexistent/x.db' }), ampere(['health', '--help'], {}), ampere(['help', 'nope'], {}), ampere(['help'], {}),
    ]);
    for (const r of [help, flag, short, run, health, none]) assert.equal(r.code, 0, r.stderr);
    assert.equal(help.stdout, 'usage: ampere ban <ip-or-range>... [--for <duration>|permanent] [--reason <text>] [--json]\n');
    assert.equal(flag.stdout, help.stdout);
    assert.equal(short.stdout, help.stdout);
    // `run --help` must print, not start a daemon.
    assert.equal(run.stdout, 'usage: ampere run\n');
    assert.equal(health.stdout, 'usage: ampere health\n');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "nope"/);
    assert.match(none.stdout, /^usage: ampere <command>/);
  });

  test('every command in the main usage has its own usage, and each answers --help with it', async () => {
    const results = await Promise.all(Object.keys(USAGE_OF).filter((c) => c !== 'help').map(async (c) => [c, await ampere([c, '--help'], {})] as const));
    for (const [c, r] of results) {
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
      assert.equal(r.stdout, `usage: ampere ${USAGE_OF[c]}\n`, c);
    }
  });

  test('bash completion: sourced in bash, completes commands and the flags of the command typed', async () => {
    const script = (await ampere(['completion', 'bash'], {})).stdout;
    const dir = tmp();
    writeFileSync(join(dir, 'c.bash'), script);
    const complete = (words: string[]) => execFileSync('bash', ['-c', `source ${join(dir, 'c.bash')}; complete -p ampere; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _ampere; echo "\${COMPREPLY[*]}"`], { encoding: 'utf8' }).split('\n');
    const [spec, first] = complete(['ampere', 'im']);
    assert.equal(spec, 'complete -o default -F _ampere ampere');
    assert.deepEqual(first.split(' ').sort(), ['import-fail2ban', 'import-legacy']);
    assert.equal(complete(['ampere', 'ban', '--f'])[1], '--for');
    assert.deepEqual(complete(['ampere', 'top', '--'])[1].split(' ').sort(), ['--by', '--help', '--json', '--limit', '--since']);
    assert.equal(complete(['ampere', 'help', 'sta'])[1], 'status');
    assert.equal(complete(['ampere', 'completion', 'z'])[1], 'zsh');
    const zsh = await ampere(['completion', 'zsh'], {});
    assert.equal(zsh.code, 0);
    assert.match(zsh.stdout, /bashcompinit/);
    assert.equal((await ampere(['completion', 'fish'], {})).code, 2);
  });
});

describe('ampere config', () => {
  test('each value with its source (env, .env, file, default); the password only as set', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ampere.cfg'), 'loyalty = 5\npass = hunter2-file-secret\nbantime = 2h\nfindtime = 1m\n');
    writeFileSync(join(dir, '.env'), 'AMPERE_BANTIME=3h\nAMPERE_PASS=dotenv-secret-xyz\n');
    const env = { AMPERE_CONFIG: join(dir, 'ampere.cfg'), AMPERE_ENV_FILE: join(dir, '.env'), AMPERE_FINDTIME: '20m', AMPERE_DB: join(dir, 'none.db'), AMPERE_PASS: 'env-secret-abc' };
    const [table, js] = await Promise.all([ampere(['config'], env), ampere(['config', '--json'], env)]);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(js.code, 0, js.stderr);
    for (const out of [table.stdout + table.stderr, js.stdout + js.stderr]) {
      for (const secret of ['hunter2', 'dotenv-secret', 'env-secret']) assert.ok(!out.includes(secret), `password text shown: ${secret}`);
    }
    const keys = Object.fromEntries(json(js).keys.map((k: { key: string; value: string; source: string }) => [k.key, [k.value, k.source]]));
    assert.deepEqual(keys.pass, ['set', 'env']);
    assert.deepEqual(keys.findtime, ['20m', 'env']);
    assert.deepEqual(keys.bantime, ['3h', '.env']);
    assert.deepEqual(keys.loyalty, ['5', 'file']);
    assert.deepEqual(keys.target, ['DROP', 'default']);
    assert.equal(json(js).file, join(dir, 'ampere.cfg'));
    assert.match(table.stdout, /^loyalty +5 +file$/m);
    assert.match(table.stdout, /^pass +set +env$/m);
    // No password given anywhere: said so, still without the default's text.
    const bare = json(await ampere(['config', '--json'], { AMPERE_DB: join(dir, 'none.db') }));
    assert.deepEqual(bare.keys.find((k: { key: string }) => k.key === 'pass').value, 'not set (the default)');
  });

  test('a bad value: exit 1 naming the key (the password hidden); a bad argument: exit 2', async () => {
    const bad = await ampere(['config'], { AMPERE_LOYALTY: 'lots' });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid loyalty: "lots" from AMPERE_LOYALTY/);
    const pass = await ampere(['config'], { AMPERE_PASS: 'x'.repeat(300) + 'SECRETTAIL' });
    assert.equal(pass.code, 1);
    assert.ok(!pass.stderr.includes('SECRETTAIL'));
    assert.equal((await ampere(['config', 'extra'], {})).code, 2);
  });
});

test('several addresses and no daemon: one message, not one per address; exit 1', async () => {
  const r = await ampere(['ban', '192.0.2.1', '192.0.2.2', '192.0.2.3'], { AMPERE_DB: join(tmp(), 'a.db') });
  assert.equal(r.code, 1);
  assert.equal(r.stderr.match(/the daemon is not running/g)?.length, 1, r.stderr);
});

describe('with a daemon (dry-run firewall): several addresses, top', () => {
  let ami: FakeAmi;
  let d: DaemonProcess;
  let env: Record<string, string>;
  after(async () => { await d?.stop('SIGKILL'); await ami?.close(); });

  /** Poll a read until it shows what the daemon promised to write (its writes are batched). */
  async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = await read();
      if (ok(v) || Date.now() > end) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  test('start', async () => {
    ami = new FakeAmi();
    await ami.listen();
    const dir = tmp();
    env = { AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_AMI_TIMEOUT: '1s' };
    d = new DaemonProcess(env);
    await d.waitFor((l) => l.msg === 'ampere started', 15_000);
    await ami.waitForLogins(1);
  });

  test('ban and unban several: each reported, a refused one does not stop the others, exit 1', async () => {
    const ban = await ampere(['ban', '192.0.2.50', '127.0.0.1', 'junk', '2001:db8::50', '--for', '1h'], env);
    assert.equal(ban.code, 1, ban.stderr);
    assert.match(ban.stdout, /^banned 192\.0\.2\.50 until .*\nbanned 2001:db8::50 until /);
    assert.match(ban.stderr, /127\.0\.0\.1/);
    assert.match(ban.stderr, /"junk" is not a valid IP address/);
    assert.match(ban.stderr, /2 of 4 failed/);
    const bans = json(await ampere(['bans', '--json'], env)).map((b: { address: string }) => b.address).sort();
    assert.deepEqual(bans, ['192.0.2.50', '2001:db8::50']);
    const all = await ampere(['ban', '192.0.2.51', '192.0.2.52', '--json'], env);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(json(all).map((r: { address: string; ok: boolean }) => [r.address, r.ok]), [['192.0.2.51', true], ['192.0.2.52', true]]);
    assert.match(json(all)[0].until, /^\d{4}-\d\d-\d\dT/);
    const un = await ampere(['unban', '192.0.2.50', '192.0.2.51', 'x!y', '--json'], env);
    assert.equal(un.code, 1);
    assert.deepEqual(json(un).map((r: { address: string; ok: boolean }) => [r.address, r.ok]), [['192.0.2.50', true], ['192.0.2.51', true], ['x!y', false]]);
    assert.deepEqual(json(await ampere(['bans', '--json'], env)).map((b: { address: string }) => b.address).sort(), ['192.0.2.52', '2001:db8::50']);
    // One address keeps its former output and exit codes.
    const one = await ampere(['unban', '192.0.2.52'], env);
    assert.equal(one.stdout, 'unbanned 192.0.2.52; its penalty is forgotten\n');
    assert.equal((await ampere(['ban', 'junk'], env)).code, 2);
  });

  test('top: by address, network and account, with counts and whether banned now; hostile text defused', async () => {
    const fail = (addr: string, account: string, n: number) => amiEvent('ChallengeResponseFailed', addr, { AccountID: account }).repeat(n);
    await ami.send(fail('203.0.113.9', '200', 2) + fail('2001:db8:1:2::5', 'admin', 2) + fail('2001:db8:1:2::6', 'admin\x1b[2J', 2) + fail('203.0.113.5', '100', 3));
    await d.waitFor((l) => l.msg === 'ban' && l.address === '203.0.113.5');
    const top = await until(() => ampere(['top', '--json'], env), (r) => r.code === 0 && json(r).some((x: { address: string; failures: number }) => x.address === '203.0.113.5' && x.failures === 2) && json(r).some((x: { address: string }) => x.address === '2001:db8:1:2::6'));
    assert.equal(top.code, 0, top.stderr);
    // Failures as recorded: a host is written from its second failure on (README), so one less than sent.
    const rows = json(top);
    // The bundled country database knows no documentation address: country "-".
    assert.deepEqual(rows[0], { address: '203.0.113.5', country: '-', bannedNow: true, failures: 2, bans: 1, lastSeen: rows[0].lastSeen });
    const byAddr = Object.fromEntries(rows.map((r: { address: string; failures: number; bannedNow: boolean }) => [r.address, [r.failures, r.bannedNow]]));
    assert.deepEqual(byAddr['203.0.113.9'], [1, false]);
    assert.deepEqual(byAddr['2001:db8:1:2::5'], [1, false]);
    assert.deepEqual(byAddr['2001:db8::50'], [0, true], 'a manual ban counts as banned, no failures');

    const net = json(await ampere(['top', '--by', 'network', '--json'], env));
    const v6 = net.find((r: { network: string }) => r.network === '2001:db8:1:2::/64');
    assert.deepEqual([v6.hosts, v6.failures, v6.bannedNow], [2, 2, 0]);
    const v4 = net.find((r: { network: string }) => r.network === '203.0.113.0/24');
    assert.deepEqual([v4.hosts, v4.failures, v4.bans, v4.bannedNow], [2, 3, 1, 1]);

    const acc = json(await ampere(['top', '--by', 'account', '--json'], env));
    assert.deepEqual(acc.map((r: { account: string; attempts: number; hosts: number }) => [r.account, r.attempts, r.hosts]).slice(0, 2), [['100', 2, 1], ['200', 1, 1]]);
    const table = await ampere(['top', '--by', 'account'], env);
    assert.ok(!table.stdout.includes('\x1b'), 'no terminal escape reaches the operator');
    assert.match(table.stdout, /^admin\??\[2J +1 +1 /m);
    const text = await ampere(['top', '--limit', '1'], env);
    assert.match(text.stdout, /^ADDRESS +COUNTRY +FAILURES +BANS +BANNED +LAST SEEN\n203\.0\.113\.5 +- +2 +1 +yes +\d{4}-/);
    assert.equal(text.stdout.trimEnd().split('\n').length, 2);
    // --since: hosts seen in the window only.
    assert.deepEqual(json(await ampere(['top', '--since', '1h', '--json'], env)).length, rows.length);
    for (const bad of [['--by', 'city'], ['--since', 'soon'], ['--limit', '0'], ['x']]) assert.equal((await ampere(['top', ...bad], env)).code, 2, bad.join(' '));
    assert.equal((await ampere(['top'], { AMPERE_DB: '/nonexistent/a.db' })).code, 1);
  });
});

/** A fail2ban (Debian's package) in a temporary config dir whose only action is `dummy`, writing to a file there. */
async function fail2banDb(bans: Record<string, string[]>): Promise<{ file: string; acted: string; stop: () => void }> {
  const dir = tmp();
  mkdirSync(join(dir, 'action.d'));
  mkdirSync(join(dir, 'filter.d'));
  copyFileSync('/etc/fail2ban/action.d/dummy.conf', join(dir, 'action.d', 'dummy.conf'));
  writeFileSync(join(dir, 'fail2ban.conf'), `[Definition]\nloglevel = INFO\nlogtarget = ${dir}/fail2ban.log\nsocket = ${dir}/f2b.sock\npidfile = ${dir}/f2b.pid\ndbfile = ${dir}/fail2ban.sqlite3\n`);
  writeFileSync(join(dir, 'filter.d', 'none.conf'), '[Definition]\nfailregex = ^never matches <HOST>$\n');
  writeFileSync(join(dir, 'asterisk.log'), '');
  const jail = (name: string, bantime: string) => `[${name}]\nenabled = true\nfilter = none\nlogpath = ${dir}/asterisk.log\nbantime = ${bantime}\n`;
  writeFileSync(join(dir, 'jail.conf'), `[DEFAULT]\nbackend = polling\nbanaction = dummy\naction = %(banaction)s[target=${dir}/dummy.out]\n` +
    jail('asterisk', '1h') + jail('forever', '-1') + jail('short', '1') + jail('sshd', '1h'));
  const client = (...args: string[]) => execFileSync('fail2ban-client', ['-c', dir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = () => { try { client('stop'); } catch { /* not running */ } };
  client('start');
  let acted = '';
  try {
    for (const [j, ips] of Object.entries(bans)) client('set', j, 'banip', ...ips);
    // Its actions run after banip answers, and `dummy` deletes its file at the stop: read it before.
    const want = Object.values(bans).flat().length;
    const until = Date.now() + 20_000;
    while ((acted.match(/^\+/gm) ?? []).length < want && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      acted = existsSync(join(dir, 'dummy.out')) ? readFileSync(join(dir, 'dummy.out'), 'utf8') : '';
    }
  } finally { stop(); }
  return { file: join(dir, 'fail2ban.sqlite3'), acted, stop };
}

const haveFail2ban = (() => { try { execFileSync('fail2ban-client', ['-V'], { stdio: 'ignore' }); return true; } catch { return false; } })();

describe('import-fail2ban from a database written by the real fail2ban', { skip: haveFail2ban ? false : 'fail2ban not installed (scripts/setup.sh --with-test-tools)' }, () => {
  let f2b: Awaited<ReturnType<typeof fail2banDb>>;
  let ami: FakeAmi;
  let d: DaemonProcess | undefined;
  after(async () => { await d?.stop('SIGKILL'); await ami?.close(); f2b?.stop(); });

  test('fail2ban writes its bans (the dummy action only writes its file)', async () => {
    f2b = await fail2banDb({ asterisk: ['203.0.113.7', '198.51.100.8', '2001:db8::7', '127.0.0.1', '192.0.2.0/24', '0.0.0.0'], forever: ['203.0.113.99'], short: ['192.0.2.77'], sshd: ['198.51.100.200'] });
    const acted = f2b.acted;
    for (const ip of ['203.0.113.7', '2001:db8::7', '198.51.100.200']) assert.ok(acted.includes(`+${ip}\n`), `dummy action saw ${ip}`);
  });

  test('dry run and no daemon: the jail asterisk by default; expired, networks and allowed skipped with reasons', async () => {
    const dir = tmp();
    const env = { AMPERE_DB: join(dir, 'ampere.db') };
    const dry = await ampere(['import-fail2ban', f2b.file, '--dry-run', '--json'], env);
    assert.equal(dry.code, 0, dry.stderr);
    const r = json(dry);
    assert.equal(r.table, 'bips');
    assert.deepEqual(r.imported.sort(), ['198.51.100.8', '2001:db8::7', '203.0.113.7']);
    const reasons = Object.fromEntries(r.skipped.map((s: { address: string; reason: string }) => [s.address, s.reason]));
    assert.match(reasons['192.0.2.0/24'], /not a single host/);
    assert.match(reasons['0.0.0.0'], /not a single host/);
    assert.match(reasons['127.0.0.1'], /^allowed \(127\.0\.0\.0\/8\)$/);
    assert.equal(existsSync(env.AMPERE_DB), false, 'a dry run writes nothing');

    // The jail "short" has a bantime of 1 s: wait until fail2ban's own end of it has passed.
    const end = (() => { const db = new Database(f2b.file, { readonly: true }); try { return (db.prepare(`SELECT timeofban + bantime AS e FROM bips WHERE jail = 'short'`).get() as { e: number }).e * 1000; } finally { db.close(); } })();
    while (Date.now() < end + 1000) await new Promise((res) => setTimeout(res, 200));
    const all = await ampere(['import-fail2ban', f2b.file, '--all-jails', '--json'], env);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stderr, /daemon not running; importing into the database/);
    const a = json(all);
    assert.deepEqual(a.imported.sort(), ['198.51.100.200', '198.51.100.8', '2001:db8::7', '203.0.113.7', '203.0.113.99']);
    assert.equal(a.skipped.find((s: { address: string }) => s.address === '192.0.2.77').reason, 'expired');
    const bans = json(await ampere(['bans', '--json'], env));
    const by = Object.fromEntries(bans.map((b: { address: string; until: string | null; source: string }) => [b.address, b]));
    assert.equal(by['203.0.113.99'].until, null, 'bantime -1 stays permanent');
    assert.equal(by['203.0.113.7'].source, 'fail2ban');
    const left = Date.parse(by['203.0.113.7'].until) - Date.now();
    assert.ok(left > 3_500_000 && left <= 3_600_000, `what is left of fail2ban's 1h: ${left}`);
    // Run twice: nothing doubled.
    const again = json(await ampere(['import-fail2ban', f2b.file, '--json'], env));
    assert.deepEqual([again.imported.length, again.alreadyBanned.length], [0, 3]);
  });

  test('through the running daemon: in force when the command returns; errors are clear', async () => {
    ami = new FakeAmi();
    await ami.listen();
    const dir = tmp();
    const env = { AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_AMI_TIMEOUT: '1s', AMPERE_ALLOW: '198.51.100.0/24' };
    d = new DaemonProcess(env);
    await d.waitFor((l) => l.msg === 'ampere started', 15_000);
    const res = await ampere(['import-fail2ban', f2b.file, '--jail', 'asterisk'], env);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /\(jail asterisk, table bips\): 6 rows; 2 imported, 0 already banned, 4 skipped\nin the kernel now/);
    assert.match(res.stdout, /198\.51\.100\.8 +allowed \(198\.51\.100\.0\/24\)/);
    await d.waitFor((l) => l.msg === 'fail2ban bans imported');
    assert.deepEqual(json(await ampere(['bans', '--json'], env)).map((b: { address: string }) => b.address).sort(), ['2001:db8::7', '203.0.113.7']);
    const noJail = await ampere(['import-fail2ban', f2b.file, '--jail', 'nope'], env);
    assert.equal(noJail.code, 1);
    assert.match(noJail.stderr, /has no jail "nope" \(its jails: asterisk, forever, short, sshd\)/);
    const notDb = join(dir, 'x.sqlite3');
    writeFileSync(notDb, 'not sqlite at all'.repeat(100));
    assert.match((await ampere(['import-fail2ban', notDb], env)).stderr, /not an SQLite database|cannot open/);
    assert.equal((await ampere(['import-fail2ban'], env)).code, 2);
  });
});

describe('several addresses and import-fail2ban against a daemon with a real kernel firewall', { skip: skipUnlessRoot() || (haveFail2ban ? false : 'fail2ban not installed') }, () => {
  let pbx: Netns;
  let ami: FakeAmiProcess;
  let d: DaemonProcess;
  let env: Record<string, string>;
  const inKernel = async (address: string) => (await pbx.exec('ipset', ['test', address.includes(':') ? 'ampere-v6' : 'ampere-v4', address])).code === 0;
  after(async () => { await d?.stop('SIGKILL'); await ami?.stop(); await pbx?.destroy(); });

  test('in the kernel when the command returns; a refused address does not stop the others', async () => {
    pbx = await Netns.create();
    ami = await FakeAmiProcess.start(pbx.name);
    env = { AMPERE_PORT: String(ami.port), AMPERE_DB: join(tmp(), 'ampere.db'), AMPERE_BACKEND: 'ipset', AMPERE_ALLOW: '203.0.113.0/24' };
    d = new DaemonProcess(env, { netns: pbx.name });
    await ami.waitForLogins(1);
    await d.waitFor((l) => l.msg === 'ampere started', 15_000);

    const ban = await ampere(['ban', '192.0.2.61', '203.0.113.61', '2001:db8::61', '192.0.2.62'], env);
    assert.equal(ban.code, 1);
    assert.match(ban.stderr, /203\.0\.113\.61 is on the allow list/);
    for (const a of ['192.0.2.61', '2001:db8::61', '192.0.2.62']) assert.equal(await inKernel(a), true, a);
    assert.equal(await inKernel('203.0.113.61'), false);
    const unban = await ampere(['unban', '192.0.2.61', '2001:db8::61'], env);
    assert.equal(unban.code, 0, unban.stderr);
    assert.equal(await inKernel('192.0.2.61'), false);
    assert.equal(await inKernel('2001:db8::61'), false);
    assert.equal(await inKernel('192.0.2.62'), true);

    const f2b = await fail2banDb({ asterisk: ['198.51.100.71', '2001:db8::71', '203.0.113.71', '192.0.2.62'] });
    const imp = await ampere(['import-fail2ban', f2b.file, '--json'], env);
    assert.equal(imp.code, 0, imp.stderr);
    const r = json(imp);
    assert.deepEqual(r.imported.sort(), ['198.51.100.71', '2001:db8::71']);
    assert.deepEqual(r.alreadyBanned, ['192.0.2.62']);
    assert.match(r.skipped[0].reason, /^allowed \(203\.0\.113\.0\/24\)/);
    for (const a of ['198.51.100.71', '2001:db8::71']) assert.equal(await inKernel(a), true, a);
    assert.equal(await inKernel('203.0.113.71'), false);
  });
});
