import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { controlRequest } from '../src/control/client';
import { encodeLegacyAddr } from '../src/legacy';
import { ampere, json } from './helpers/cli';
import { eventually } from './helpers/eventually';
import { legacyDb } from './helpers/fixtures';
import { DaemonProcess } from '../tools/lab/daemon';
import { FakeAmi, amiEvent } from '../tools/lab/ami';
import { FakeAmiProcess } from '../tools/lab/ami-proc';
import { Netns, skipUnlessRoot } from '../tools/lab/netns';

/**
 * The `ampere` commands as an operator uses them: separate processes talking to a real daemon
 * through its control socket; real SQLite; in the first suite a real kernel (ipset + iptables
 * in a namespace, beside a fake Asterisk), in the second the dry-run backend.
 */
const skip = skipUnlessRoot();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


describe('ampere commands against a running daemon with a real kernel firewall', { skip }, () => {
  let pbx: Netns;
  let ami: FakeAmiProcess;
  let d: DaemonProcess;
  let dir: string;
  let env: Record<string, string>;
  let sock: string;

  const inKernel = async (address: string) => (await pbx.exec('ipset', ['test', address.includes(':') ? 'ampere-v6' : 'ampere-v4', address])).code === 0;
  const kernelCount = async (f: 4 | 6) => (await pbx.must('ipset', ['list', `ampere-v${f}`, '-output', 'save'])).split('\n').filter((l) => l.startsWith('add ')).length;
  const fetchInNs = async (path: string) => {
    const r = await pbx.must(process.execPath, ['-e', `fetch('http://127.0.0.1:9327${path}').then(async (r) => { process.stdout.write(r.status + '\\n' + await r.text()); })`]);
    const i = r.indexOf('\n');
    return { status: Number(r.slice(0, i)), body: r.slice(i + 1) };
  };
  const penalty = async (address: string) => (await controlRequest<{ penalty: number }>(sock, 'GET', `/history?address=${address}`)).body.penalty;

  before(async () => {
    pbx = await Netns.create();
    ami = await FakeAmiProcess.start(pbx.name);
    dir = mkdtempSync(join(tmpdir(), 'ampere-op-'));
    env = {
      AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'ipset',
      AMPERE_ALLOW: '203.0.113.0/24', AMPERE_METRICS: '127.0.0.1:9327', AMPERE_LOYALTY: '3',
      // Not 1s: under the flood below the Pong waits behind thousands of queued events.
      AMPERE_AMI_TIMEOUT: '10s',
    };
    sock = join(dir, 'ampere.sock');
    d = new DaemonProcess(env, { netns: pbx.name });
    await ami.waitForLogins(1);
    await d.waitFor((l) => l.msg === 'ampere started', 15_000);
  });
  after(async () => {
    await d?.stop('SIGKILL');
    await ami?.stop();
    await pbx?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('status and check on a fresh daemon; the socket is 0600', async () => {
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    const [text, js, check] = await Promise.all([ampere(['status'], env), ampere(['status', '--json'], env), ampere(['check'], env, { netns: pbx.name })]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^daemon: +running, pid \d+/m);
    assert.match(text.stdout, /^ami: +connected since/m);
    assert.match(text.stdout, /^firewall: +ipset, chain ampere, target DROP, in sync/m);
    assert.match(text.stdout, /^metrics: +http:\/\/127\.0\.0\.1:9327\/metrics/m);
    assert.match(text.stdout, /^memory: +\d+\.\d MB resident, heap \d+\.\d of \d+\.\d MB$/m);
    assert.match(text.stdout, /^wal checkpoints: +worker thread running, \d+ passes, log at \d+ frames$/m);
    const s = json(js);
    assert.equal(s.running, true);
    // The daemon's own numbers: a Node process is tens of MB, its heap within its resident set.
    assert.deepEqual([s.checkpointer.running, s.checkpointer.failed], [true, false], 'the daemon checkpoints on its worker thread');
    assert.ok(s.memory.rss > 20e6 && s.memory.heapUsed > 1e6 && s.memory.heapUsed <= s.memory.heapTotal && s.memory.heapTotal < s.memory.rss, JSON.stringify(s.memory));
    assert.equal(s.ami.connected, true);
    assert.equal(s.firewall.backend, 'ipset');
    assert.equal(s.firewall.inSync, true);
    assert.deepEqual(s.bans.active, { v4: 0, v6: 0, total: 0 });
    assert.equal(typeof s.firewall.lastSyncAt, 'string');
    assert.equal(check.code, 0, check.stdout + check.stderr);
    for (const name of ['config', 'daemon', 'ami', 'iptables', 'ipset', 'chain v4', 'chain v6', 'database']) {
      assert.match(check.stdout, new RegExp(`^ok +${name} `, 'm'), `${name} ok in:\n${check.stdout}`);
    }
    assert.doesNotMatch(check.stdout, /FAIL/);
  });

  test('ban from the command: in the kernel and the database when it returns, within the same second', async (t) => {
    for (const address of ['198.51.100.7', '2001:db8::7']) {
      assert.equal(await inKernel(address), false);
      const t0 = performance.now();
      const r = await ampere(['ban', address, '--for', '10m', '--reason', 'seen in the SIP log', '--json'], env);
      const there = await inKernel(address);
      const ms = performance.now() - t0;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(there, true, `${address} in the kernel as soon as the command returned`);
      const b = json(r);
      // Within the same second of the daemon hearing the command; the wall time adds the CLI's
      // process start-up, which a loaded machine can stretch, so it only gets a sanity bound.
      assert.ok(b.appliedMs < 1000, `daemon: database + kernel took ${b.appliedMs} ms`);
      assert.ok(ms < 5000, `command + kernel check took ${Math.round(ms)} ms`);
      assert.equal(b.address, address);
      assert.equal(b.kernel, 'applied');
      assert.ok(Math.abs(Date.parse(b.until) - Date.now() - 600_000) < 5000);
      t.diagnostic(`ban ${address}: command ${Math.round(r.ms)} ms wall (process start included), daemon db+kernel ${b.appliedMs} ms`);
    }
    const text = await ampere(['ban', '198.51.100.8'], env);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^banned 198\.51\.100\.8 until .* \(1h\); ban #1 of this host; in the kernel after [\d.]+ ms$/m);
    // The control round trip itself, without process start-up.
    const times: number[] = [];
    for (let i = 0; i < 50; i++) { const t0 = performance.now(); await controlRequest(sock, 'GET', '/status'); times.push(performance.now() - t0); }
    const kernelTimes: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const r = await controlRequest<{ kernel: string }>(sock, 'POST', '/ban', { address: `198.51.100.${200 + i}`, forMs: 60_000 });
      kernelTimes.push(performance.now() - t0);
      assert.equal(r.body.kernel, 'applied');
    }
    const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)].toFixed(2);
    t.diagnostic(`control round trip GET /status median ${med(times)} ms; POST /ban to the kernel (ipset) median ${med(kernelTimes)} ms`);
    for (let i = 0; i < 20; i++) assert.equal(await inKernel(`198.51.100.${200 + i}`), true);
    await controlRequest(sock, 'POST', '/unban', { address: '198.51.100.8' });
    for (let i = 0; i < 20; i++) await controlRequest(sock, 'POST', '/unban', { address: `198.51.100.${200 + i}` });
  });

  test('bad input is refused with a clear message and exit 2; policy refusals exit 1; the kernel is untouched', async () => {
    const before4 = await kernelCount(4);
    const cases: [string[], number, RegExp][] = [
      [['ban', '1.2.3.999'], 2, /"1\.2\.3\.999" is not a valid IP address/],
      [['ban', '10.0.0.0/7'], 2, /wider than \/8/],
      [['ban', '0.0.0.0'], 2, /0\.0\.0\.0 is not a single host: unspecified/],
      [['ban', '224.0.0.1'], 2, /224\.0\.0\.1 is not a single host: multicast/],
      [['ban', '1.2.3.4; rm -rf /'], 2, /not a valid IP address/],
      [['ban'], 2, /missing argument\nusage: ampere ban/],
      [['ban', '192.0.2.1', '--for', 'soon'], 2, /--for "soon" is not a duration/],
      [['ban', '203.0.113.5'], 1, /203\.0\.113\.5 is on the allow list \(203\.0\.113\.0\/24, config\)/],
      [['ban', '127.0.0.1'], 1, /on the allow list \(127\.0\.0\.0\/8, builtin\); Ampere never bans it/],
      [['unban'], 2, /give IP addresses or --all/],
      [['unban', 'nonsense'], 2, /"nonsense" is not a valid IP address/],
      [['bans', 'not-an-ip'], 2, /not an IP address or CIDR/],
      [['history', '999.1.1.1'], 2, /not a valid IP address/],
      [['allow', 'add', '300.1.1.1'], 2, /not an IP address or CIDR/],
      [['allow', 'add', '0.0.0.0/0'], 2, /would allow every address/],
      [['frobnicate'], 2, /unknown command "frobnicate"/],
      [['import-legacy', join(dir, 'nope.db')], 1, /cannot open/],
    ];
    const results = [];
    for (let i = 0; i < cases.length; i += 4) results.push(...(await Promise.all(cases.slice(i, i + 4).map(([args]) => ampere(args, env)))));
    results.forEach((r, i) => {
      const [args, code, re] = cases[i];
      assert.equal(r.code, code, `ampere ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, re, `ampere ${args.join(' ')}`);
      assert.equal(r.stdout.trim(), '', `nothing on stdout for a refusal (${args.join(' ')})`);
    });
    assert.equal(await kernelCount(4), before4);
    assert.equal(await inKernel('203.0.113.5'), false);
  });

  test('bans: aligned table, address and CIDR filters, --json, --all with the history', async () => {
    const table = await ampere(['bans'], env);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0], /^ADDRESS +SINCE +UNTIL +BANS +SOURCE +REASON$/);
    assert.equal(lines.length, 3, table.stdout);
    const col = lines[0].indexOf('SINCE');
    for (const l of lines.slice(1)) assert.match(l.slice(col), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/, 'columns aligned');
    assert.match(table.stdout, /198\.51\.100\.7 .* manual +seen in the SIP log/);
    const [v4, v6, one, all] = await Promise.all([
      ampere(['bans', '198.51.100.0/24', '--json'], env), ampere(['bans', '2001:db8::/32', '--json'], env),
      ampere(['bans', '2001:db8:0::7', '--json'], env), ampere(['bans', '--all', '--json'], env),
    ]);
    assert.deepEqual(json(v4).map((b: { address: string }) => b.address), ['198.51.100.7']);
    assert.deepEqual(json(v6).map((b: { address: string }) => b.address), ['2001:db8::7']);
    assert.deepEqual(json(one).map((b: { address: string }) => b.address), ['2001:db8::7']);
    const b = json(v4)[0];
    assert.equal(b.source, 'manual');
    assert.equal(b.active, true);
    assert.equal(b.banCount, 1);
    assert.equal(b.reason, 'seen in the SIP log');
    assert.match(b.since, /^\d{4}-\d\d-\d\dT/);
    const history = json(all) as { address: string; active: boolean; liftReason: string | null }[];
    assert.ok(history.some((h) => h.address === '198.51.100.8' && !h.active && h.liftReason === 'unban'), '--all shows lifted bans');
    assert.ok(history.length >= 23);
  });

  test('unban: out of the kernel when it returns, and the penalty is forgotten', async (t) => {
    const t0 = performance.now();
    const r = await ampere(['unban', '198.51.100.7'], env);
    const gone = !(await inKernel('198.51.100.7'));
    const ms = performance.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'unbanned 198.51.100.7; its penalty is forgotten\n');
    assert.ok(gone, 'out of the kernel as soon as the command returned');
    assert.ok(ms < 5000, `${Math.round(ms)} ms`);
    const j = json(await ampere(['unban', '2001:db8::7', '--json'], env));
    assert.equal(j.wasBanned, true);
    assert.ok(j.appliedMs < 1000, `daemon: database + kernel took ${j.appliedMs} ms`);
    assert.equal(await inKernel('2001:db8::7'), false);
    t.diagnostic(`unban: command + kernel check ${Math.round(ms)} ms wall; daemon db+kernel ${j.appliedMs} ms`);
    assert.equal(json(await ampere(['bans', '198.51.100.7', '--json'], env)).length, 0);

    // Two failures count; unban forgets them; two more do not ban (loyalty 3); a third does.
    const host = '192.0.2.44';
    await ami.send(amiEvent('ChallengeResponseFailed', host).repeat(2));
    for (let i = 0; i < 50 && (await penalty(host)) !== 2; i++) await sleep(20);
    assert.equal(await penalty(host), 2);
    const u = json(await ampere(['unban', host, '--json'], env));
    assert.deepEqual({ wasBanned: u.wasBanned, penaltyForgotten: u.penaltyForgotten }, { wasBanned: false, penaltyForgotten: true });
    assert.equal(await penalty(host), 0);
    await ami.send(amiEvent('ChallengeResponseFailed', host).repeat(2));
    for (let i = 0; i < 50 && (await penalty(host)) !== 2; i++) await sleep(20);
    assert.equal(d.count((l) => l.msg === 'ban' && l.address === host), 0, 'not banned: the penalty started again from zero');
    await ami.send(amiEvent('ChallengeResponseFailed', host));
    await d.waitFor((l) => l.msg === 'ban' && l.address === host);
  });

  test('an automatic ban: history shows its events and ban; metrics and healthz tell the same', async (t) => {
    const host = '192.0.2.44';
    await sleep(300); // the event history is written in batches every 200 ms
    const h = json(await ampere(['history', host, '--json'], env));
    assert.equal(h.address, host);
    assert.equal(h.host.banned, true);
    assert.equal(h.host.banCount, 1);
    assert.equal(h.bans.length, 1);
    assert.equal(h.bans[0].source, 'auto');
    assert.equal(h.bans[0].kind, 'ChallengeResponseFailed');
    assert.equal(h.bans[0].failures, 3);
    assert.ok(h.events.length >= 3, `events recorded: ${h.events.length}`);
    assert.deepEqual(Object.keys(h.events[0]).sort(), ['account', 'at', 'kind', 'service', 'transport']);
    assert.equal(h.events[0].service, 'PJSIP');
    const text = await ampere(['history', host], env);
    assert.match(text.stdout, /^host 192\.0\.2\.44 \(country -\)$/m); // the bundled country database places no documentation address
    assert.match(text.stdout, /^events \(newest first\)\nAT +EVENT +SERVICE +TRANSPORT +ACCOUNT\n.*ChallengeResponseFailed +PJSIP +UDP +100$/m);
    const none = await ampere(['history', '192.0.2.250'], env);
    assert.equal(none.code, 0);
    assert.equal(none.stdout, 'no record of 192.0.2.250\n');

    const m = await fetchInNs('/metrics');
    assert.equal(m.status, 200);
    const value = (re: RegExp) => Number(re.exec(m.body)?.[1] ?? NaN);
    assert.ok(value(/^ampere_events_total\{kind="ChallengeResponseFailed",service="PJSIP"\} (\d+)/m) >= 5, m.body.slice(0, 2000));
    assert.equal(value(/^ampere_bans_total\{source="auto"\} (\d+)/m), 1);
    assert.ok(value(/^ampere_bans_total\{source="manual"\} (\d+)/m) >= 23);
    assert.ok(value(/^ampere_unbans_total\{reason="unban"\} (\d+)/m) >= 22);
    assert.equal(value(/^ampere_active_bans\{family="ipv6"\} (\d+)/m), 0);
    assert.equal(value(/^ampere_active_bans\{family="ipv4"\} (\d+)/m), 1);
    assert.equal(value(/^ampere_ami_connected (\d+)/m), 1);
    assert.equal(value(/^ampere_ami_reconnects_total (\d+)/m), 0);
    assert.equal(value(/^ampere_firewall_command_failures_total (\d+)/m) || 0, 0);
    assert.equal(value(/^ampere_ban_reaction_seconds_count (\d+)/m), 1);
    const reaction = value(/^ampere_ban_reaction_seconds_sum ([\d.e-]+)/m);
    assert.ok(reaction > 0 && reaction < 1, `reaction ${reaction} s`);
    t.diagnostic(`reaction of the automatic ban (AMI event arrival to kernel): ${(reaction * 1000).toFixed(1)} ms`);
    assert.match(m.body, /^ampere_tracked_hosts \d+$/m);
    const hz = await fetchInNs('/healthz');
    assert.equal(hz.status, 200);
    assert.deepEqual(JSON.parse(hz.body), { healthy: true, problems: [] });
    const health = await ampere(['health'], env);
    assert.equal(health.code, 0, health.stderr);
    assert.equal(health.stdout, 'healthy\n');
  });

  test('allow add of a banned address unbans it; allow list merges sources; configured entries stay', async () => {
    assert.equal((await ampere(['ban', '198.51.100.50'], env)).code, 0);
    assert.equal(await inKernel('198.51.100.50'), true);
    const add = await ampere(['allow', 'add', '198.51.100.50/28', '--note', 'office', '--json'], env);
    assert.equal(add.code, 0, add.stderr);
    assert.deepEqual(json(add), { cidr: '198.51.100.48/28', added: true, unbanned: ['198.51.100.50'] });
    assert.equal(await inKernel('198.51.100.50'), false, 'unbanned in the kernel at once');
    const list = json(await ampere(['allow', 'list', '--json'], env)) as { cidr: string; source: string; note: string }[];
    assert.deepEqual(list.map((e) => `${e.source} ${e.cidr}`), ['builtin 127.0.0.0/8', 'builtin ::1', 'config 203.0.113.0/24', 'ami-host 127.0.0.1', 'runtime 198.51.100.48/28']);
    assert.equal(list[4].note, 'office');
    const table = await ampere(['allow', 'list'], env);
    assert.match(table.stdout, /^NETWORK +SOURCE +ADDED +NOTE\n/);
    assert.match(table.stdout, /^198\.51\.100\.48\/28 +runtime +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +office$/m);
    // Failures from an allowed address never ban it; a ban by hand is refused.
    await ami.send(amiEvent('ChallengeResponseFailed', '198.51.100.51').repeat(5));
    const refused = await ampere(['ban', '198.51.100.51'], env);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /on the allow list \(198\.51\.100\.48\/28, runtime\); remove it with "ampere allow rm" first/);
    const cfgRm = await ampere(['allow', 'rm', '203.0.113.0/24'], env);
    assert.equal(cfgRm.code, 1);
    assert.match(cfgRm.stderr, /203\.0\.113\.0\/24 is configured \(AMPERE_ALLOW or allow in the config file\): change it there/);
    const rm = await ampere(['allow', 'rm', '198.51.100.48/28'], env);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout, 'removed 198.51.100.48/28 from the allow list\n');
    const again = await ampere(['allow', 'rm', '198.51.100.48/28'], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /not in the runtime allow list/);
    assert.equal(d.count((l) => l.msg === 'ban' && l.address === '198.51.100.51'), 0);
    assert.equal((await ampere(['ban', '198.51.100.51', '--for', 'permanent'], env)).code, 0, 'bannable again');
    assert.equal(json(await ampere(['bans', '198.51.100.51', '--json'], env))[0].until, null);
  });

  test('import-legacy: known rows land on the right addresses, in the kernel at once; bad rows reported', async () => {
    const file = join(dir, 'legacy.db');
    legacyDb(file, [
      [67305985, '100'], // 1.2.3.4, stored as 0x04030201
      [encodeLegacyAddr('1.2.3.200') | 0, '101'], // a negative (signed) value
      [encodeLegacyAddr('198.51.100.51'), 'x'], // banned already
      [encodeLegacyAddr('203.0.113.77'), 'y'], // allowed by the configuration
      [2 ** 32 + 1, 'big'],
      ['not a number', 'text'],
      [encodeLegacyAddr('10.20.30.40'), "'; DROP TABLE bans;--"],
    ]);
    const r = await ampere(['import-legacy', file, '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const rep = json(r);
    assert.equal(rep.rows, 7);
    assert.deepEqual(rep.imported, ['1.2.3.4', '1.2.3.200', '10.20.30.40']);
    assert.deepEqual(rep.alreadyBanned, ['198.51.100.51']);
    assert.deepEqual(rep.refused, [{ address: '203.0.113.77', reason: 'allowed (203.0.113.0/24)' }]);
    assert.deepEqual(rep.skipped.map((s: { row: number }) => s.row), [5, 6]);
    assert.match(rep.skipped[0].reason, /out of 32-bit range/);
    assert.match(rep.skipped[1].reason, /not an integer/);
    for (const a of ['1.2.3.4', '1.2.3.200', '10.20.30.40']) assert.equal(await inKernel(a), true, `${a} in the kernel`);
    for (const a of ['4.3.2.1', '200.3.2.1', '40.30.20.10']) assert.equal(await inKernel(a), false, `${a} (wrong byte order) not banned`);
    const bans = json(await ampere(['bans', '10.20.30.40', '--json'], env));
    assert.equal(bans[0].source, 'legacy');
    assert.equal(bans[0].until, null, 'permanent, as in the original');
    assert.equal(bans[0].account, "'; DROP TABLE bans;--");
    const text = await ampere(['import-legacy', file], env);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /7 rows; 0 imported, 4 already banned, 1 refused, 2 skipped\nin the kernel now/);
    assert.match(text.stdout, /^ROW +ADDR +REASON\n +5 +4294967297 +out of 32-bit range/m);
  });

  test('a backup taken during a flood of events opens and holds every ban', async (t) => {
    const hostsOf = (block: number, n: number) => Array.from({ length: n }, (_, i) => `10.${block}.${i >> 8}.${i & 255}`);
    const burst = (hosts: string[]) => hosts.map((h) => amiEvent('ChallengeResponseFailed', h).repeat(3)).join('');
    const first = hostsOf(101, 300);
    await ami.send(burst(first));
    await d.waitFor((l) => l.msg === 'ban' && l.address === first.at(-1), 15_000);
    const before = (await controlRequest<{ bans: { address: string }[] }>(sock, 'GET', '/bans')).body.bans.map((b) => b.address);
    assert.ok(before.length >= 300 + 5, `${before.length} active bans before the backup`);

    // The flood goes on while the backup runs: new bans and event history written meanwhile.
    let flooding = true;
    let sent = 0;
    const flood = (async () => {
      for (let block = 102; flooding && block < 114; block++) {
        await ami.send(burst(hostsOf(block, 200)) + amiEvent('InvalidAccountID', `10.250.0.${block}`).repeat(50));
        sent += 650;
      }
    })();
    await sleep(50);
    const bdir = join(dir, 'backups');
    const r = await ampere(['backup', '--to', bdir, '--json'], env);
    const sentDuringBackup = sent;
    flooding = false;
    await flood;
    // The stream is read in order: once a last host's ban is logged, every flood event before it
    // was handled, and none is left to ban again after the next test's unban --all.
    await ami.send(amiEvent('ChallengeResponseFailed', '10.251.0.1').repeat(3));
    await d.waitFor((l) => l.msg === 'ban' && l.address === '10.251.0.1', 60_000);
    assert.equal(r.code, 0, r.stderr);
    const info = json(r);
    t.diagnostic(`backup during the flood: ${info.bytes} bytes, ${info.activeBans} active bans, ${info.ms} ms in the daemon; ${sentDuringBackup} events sent meanwhile`);
    assert.ok(sentDuringBackup > 0, 'events were flowing during the backup');
    assert.match(info.path, /\/backups\/ampere-\d{8}T\d{6}Z\.db$/);
    assert.deepEqual(readdirSync(bdir), [info.path.split('/').pop()], 'one self-contained file: no -wal, no .partial');
    const copy = new Database(info.path, { readonly: true, fileMustExist: true });
    try {
      assert.equal(copy.pragma('integrity_check', { simple: true }), 'ok');
      assert.equal(copy.pragma('journal_mode', { simple: true }), 'delete');
      assert.equal((copy.pragma('foreign_key_check') as unknown[]).length, 0);
      const held = new Set((copy.prepare('SELECT address FROM bans WHERE lifted_at IS NULL').all() as { address: string }[]).map((b) => b.address));
      const missing = before.filter((a) => !held.has(a));
      assert.deepEqual(missing, [], 'every ban made before the backup is in it');
      assert.equal(held.size, info.activeBans);
    } finally {
      copy.close();
    }
    // Status reports it.
    const s = json(await ampere(['status', '--json'], env));
    assert.equal(s.backup.last.path, info.path);
    // How fast bans reached the kernel under the flood, from the histogram.
    const m = (await fetchInNs('/metrics')).body;
    const buckets = [...m.matchAll(/^ampere_ban_reaction_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map((x) => [x[1], Number(x[2])] as const);
    const count = Number(/^ampere_ban_reaction_seconds_count (\d+)$/m.exec(m)![1]);
    const sum = Number(/^ampere_ban_reaction_seconds_sum ([\d.e+-]+)$/m.exec(m)![1]);
    const q = (p: number) => buckets.find(([, n]) => n >= p * count)?.[0];
    t.diagnostic(`ban reaction under the flood: ${count} bans, mean ${((sum / count) * 1000).toFixed(1)} ms, p50 <= ${q(0.5)} s, p99 <= ${q(0.99)} s`);
    assert.ok(count >= before.length - 30, `${count} reactions measured`);
  });

  test('unban --all empties the kernel and the database at once', async () => {
    const r = await ampere(['unban', '--all', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(json(r).count >= 300);
    assert.equal(await kernelCount(4), 0);
    assert.equal(await kernelCount(6), 0);
    assert.deepEqual(json(await ampere(['bans', '--json'], env)), []);
    const s = json(await ampere(['status', '--json'], env));
    assert.equal(s.bans.active.total, 0);
    assert.ok(s.events.total > 5_000, JSON.stringify(s.events) + JSON.stringify(s.ami) + d.lines.filter((l) => /ami/.test(l.msg)).map((l) => JSON.stringify(l)).join('\n'));
    assert.ok(s.events.lastMinute.byKind.ChallengeResponseFailed > 1000);
    assert.equal(s.ami.reconnects, 0, 'the flood did not cost the AMI connection');
  });

  test('check names every problem and exits 1', async () => {
    const bad = join(dir, 'a-file');
    writeFileSync(bad, '');
    const r = await ampere(['check'], { ...env, AMPERE_PASS: 'wrong', AMPERE_DB: join(bad, 'ampere.db') }, { netns: pbx.name });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /^FAIL +ami +127\.0\.0\.1:\d+ rejected the login of user "ampere"/m);
    assert.match(r.stdout, /^FAIL +database +cannot create .*a-file is not a directory/m);
    assert.match(r.stderr, /ampere check: 2 problems: ami: .*; database: /);
    const js = json(await ampere(['check', '--json'], { ...env, AMPERE_PORT: '1' }, { netns: pbx.name }));
    assert.equal(js.ok, false);
    assert.deepEqual(js.problems.map((p: string) => p.split(':')[0]), ['ami']);
    assert.match(js.problems[0], /connection refused/);
    const cfgBad = await ampere(['check'], { ...env, AMPERE_LOYALTY: 'lots' });
    assert.equal(cfgBad.code, 1);
    assert.match(cfgBad.stdout, /^FAIL +config +invalid loyalty: "lots" from AMPERE_LOYALTY/m);
  });
});

describe('ampere commands with and without a daemon (dry-run firewall)', () => {
  const amis: FakeAmi[] = [];
  const daemons: DaemonProcess[] = [];
  const dirs: string[] = [];
  const setup = async () => {
    const ami = new FakeAmi();
    await ami.listen();
    amis.push(ami);
    const dir = mkdtempSync(join(tmpdir(), 'ampere-op-'));
    dirs.push(dir);
    const env = { AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_AMI_TIMEOUT: '1s' };
    return { ami, dir, env };
  };
  const start = (env: Record<string, string>) => { const d = new DaemonProcess(env); daemons.push(d); return d; };
  /** A fresh database and a daemon on it, started and logged in to its AMI; `extra` adds to its environment. */
  const running = async (extra: Record<string, string> = {}) => {
    const { ami, dir, env } = await setup();
    const d = start({ ...env, ...extra });
    await d.waitFor((l) => l.msg === 'ampere started');
    await ami.waitForLogins(1);
    return { dir, env, d, sock: join(dir, 'ampere.sock') };
  };
  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await Promise.all(amis.map((a) => a.close()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('no daemon: reads come from the database, changes are refused, a legacy import waits in the database for the start', async () => {
    const { ami, dir, env } = await setup();
    const file = join(dir, 'old-ampere.db');
    legacyDb(file, [[67305985, '100'], [encodeLegacyAddr('192.0.2.9'), null], [-1, 'broadcast']]);
    const imp = await ampere(['import-legacy', file, '--json'], env);
    assert.equal(imp.code, 0, imp.stderr);
    assert.match(imp.stderr, /daemon not running; importing into the database/);
    assert.deepEqual(json(imp).imported, ['1.2.3.4', '192.0.2.9']);
    assert.match(json(imp).skipped[0].reason, /broadcast/);
    const dry = json(await ampere(['import-legacy', file, '--dry-run', '--json'], env));
    assert.equal(dry.dryRun, true);

    const [bans, status, ban, unban, allow, health] = await Promise.all([
      ampere(['bans', '--json'], env), ampere(['status'], env), ampere(['ban', '192.0.2.1'], env),
      ampere(['unban', '1.2.3.4'], env), ampere(['allow', 'add', '192.0.2.0/24'], env), ampere(['health'], env),
    ]);
    assert.equal(bans.code, 0, bans.stderr);
    assert.match(bans.stderr, /daemon not running; read from the database/);
    assert.deepEqual(json(bans).map((b: { address: string }) => b.address).sort(), ['1.2.3.4', '192.0.2.9']);
    assert.equal(status.code, 1);
    assert.match(status.stdout, /^daemon: +not running$/m);
    assert.match(status.stdout, /^active bans: +2 \(IPv4 2, IPv6 0\)$/m);
    for (const r of [ban, unban, allow]) {
      assert.equal(r.code, 1);
      assert.match(r.stderr, /the daemon is not running \(nothing listens on .*ampere\.sock\); start it with "ampere run"/);
    }
    assert.equal(health.code, 1);

    const d = start(env);
    const started = await d.waitFor((l) => l.msg === 'ampere started');
    assert.equal(started.bansRestored, 2, 'the imported bans reach the kernel at the start');
    await ami.waitForLogins(1);
    const s = json(await ampere(['status', '--json'], env));
    assert.equal(s.bans.active.v4, 2);
  });

  test('ampere ban while another process holds the database\'s write lock: stored once the lock goes (within 2 s), else said honestly', async () => {
    const { dir, env, d } = await running();
    const other = new Database(join(dir, 'ampere.db'));
    try {
      // The daemon's writes wait 5 ms for a lock: this one is held for 300 ms after the ban arrives.
      other.exec('BEGIN IMMEDIATE');
      const banning = ampere(['ban', '192.0.2.77'], env);
      await d.waitFor((l) => /database write failed/.test(String(l.msg)), 5000);
      await sleep(300);
      other.exec('COMMIT');
      const r = await banning;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(json(await ampere(['bans', '192.0.2.77', '--json'], env))[0].address, '192.0.2.77');

      // Held past the 2 s the command waits: the operator hears the ban is in force but not stored yet; it is stored after.
      other.exec('BEGIN IMMEDIATE');
      const late = await ampere(['ban', '192.0.2.78'], env);
      other.exec('COMMIT');
      assert.equal(late.code, 1);
      assert.match(late.stderr, /ban of 192\.0\.2\.78 is in the kernel, but not stored yet \(retried\): .*database is locked/);
      await eventually('the row stored after the lock', async () => (json(await ampere(['bans', '--json'], env)) as { address: string }[]).some((b) => b.address === '192.0.2.78'), 10_000);
    } finally {
      if (other.inTransaction) other.exec('COMMIT');
      other.close();
    }
  });

  test('allow add/rm, unban and unban --all while another process holds the write lock: done and stored once it goes, else refused with nothing changed', async () => {
    const { dir, env, d, sock } = await running();
    for (const a of ['192.0.2.80', '192.0.2.81', '192.0.2.82']) assert.equal((await ampere(['ban', a], env)).code, 0);
    const other = new Database(join(dir, 'ampere.db'));
    const active = () => other.prepare('SELECT address FROM bans WHERE lifted_at IS NULL ORDER BY address').pluck().all();
    const allowed = () => other.prepare('SELECT cidr FROM allowed ORDER BY cidr').pluck().all();
    /** The request is made while the lock is held (the daemon's writes wait 5 ms for it); the lock goes after holdMs. */
    const underLock = async (holdMs: number, method: 'POST' | 'DELETE', path: string, body?: unknown) => {
      other.exec('BEGIN IMMEDIATE');
      const answer = controlRequest<Record<string, unknown>>(sock, method, path, body);
      await sleep(holdMs);
      other.exec('COMMIT');
      return answer;
    };
    try {
      const add = await underLock(300, 'POST', '/allow', { cidr: '198.51.100.0/28' });
      assert.equal(add.status, 200, JSON.stringify(add.body));
      assert.deepEqual(allowed(), ['198.51.100.0/28']);
      const rm = await underLock(300, 'DELETE', '/allow?cidr=198.51.100.0/28');
      assert.equal(rm.status, 200, JSON.stringify(rm.body));
      assert.deepEqual(allowed(), []);
      const one = await underLock(300, 'POST', '/unban', { address: '192.0.2.80' });
      assert.equal(one.body.wasBanned, true);
      assert.deepEqual(active(), ['192.0.2.81', '192.0.2.82'], 'the unban is stored: it does not come back at the next start');
      const all = await underLock(300, 'POST', '/unban', { all: true });
      assert.equal(all.body.count, 2);
      assert.deepEqual(active(), []);
      assert.equal(d.count((l) => /not stored/.test(String(l.msg))), 0, 'no write was given up');
      // Held past the 2 s a command waits: refused, and nothing changed.
      const late = await underLock(2600, 'POST', '/allow', { cidr: '198.51.100.16/28' });
      assert.equal(late.status, 500);
      assert.match(String(late.body.error), /database is locked/);
      assert.deepEqual(allowed(), []);
      const list = json(await ampere(['allow', 'list', '--json'], env)) as { cidr: string }[];
      assert.ok(!list.some((e) => e.cidr === '198.51.100.16/28'), 'not matched by the daemon either');
    } finally {
      if (other.inTransaction) other.exec('COMMIT');
      other.close();
    }
  });

  test('only root or the owner may use the socket; a second daemon on the same database refuses to start', async () => {
    const { dir, env, d, sock } = await running();
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    chmodSync(dir, 0o755); // let another user reach the directory: the socket itself must still refuse
    const nobody = await ampere(['bans'], env, { user: 65534 });
    assert.equal(nobody.code, 1, nobody.stdout + nobody.stderr);
    assert.match(nobody.stderr, /permission denied on .*ampere\.sock: only root or the daemon's user may control Ampere/);

    const second = start(env);
    assert.equal(await second.exit, 1);
    const fatal = second.lines.find((l) => l.msg === 'ampere could not start');
    assert.match(String(fatal?.err), /another Ampere daemon is running on this database \(.*ampere\.db: its lock .*ampere\.db\.lock is held\)/);
    assert.equal(existsSync(sock), true, 'the first daemon keeps its socket');
    assert.equal((await ampere(['status'], env)).code, 0);
    assert.equal(await d.stop(), 0);
    assert.equal(existsSync(sock), false, 'removed at stop');
  });

  test('scheduled backups: the first soon after start, then only the newest AMPERE_BACKUP_KEEP are kept', async () => {
    const bdir = mkdtempSync(join(tmpdir(), 'ampere-op-backups-'));
    dirs.push(bdir);
    const old = ['ampere-20200101T000000Z.db', 'ampere-20200102T000000Z.db', 'ampere-20200103T000000Z.db'];
    for (const n of old) writeFileSync(join(bdir, n), 'old');
    writeFileSync(join(bdir, 'unrelated.txt'), 'keep me');
    const { env, d } = await running({ AMPERE_BACKUP_DIR: bdir, AMPERE_BACKUP_KEEP: '2', AMPERE_BACKUP_INTERVAL: '1h' });
    assert.equal((await ampere(['ban', '192.0.2.33', '--for', '1d'], env)).code, 0);
    const line = await d.waitFor((l) => l.msg === 'scheduled backup written', 12_000);
    assert.equal(line.removed, 2);
    const files = readdirSync(bdir).sort();
    assert.equal(files.length, 3, files.join(' '));
    assert.deepEqual(files.filter((f) => f !== String(line.path).split('/').pop()), ['ampere-20200103T000000Z.db', 'unrelated.txt']);
    const copy = new Database(String(line.path), { readonly: true });
    assert.deepEqual(copy.prepare('SELECT address FROM bans WHERE lifted_at IS NULL').all(), [{ address: '192.0.2.33' }]);
    copy.close();
    const s = json(await ampere(['status', '--json'], env));
    assert.equal(s.backup.last.path, line.path);
    assert.ok(Math.abs(Date.parse(s.backup.nextAt) - Date.now() - 3_600_000) < 10_000, `next backup in about 1h: ${s.backup.nextAt}`);
  });
});
