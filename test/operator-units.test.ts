import { test } from 'node:test';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { backupDatabase, backupName, listBackups, pruneBackups } from '../src/backup';
import { formatTable, formatSpan } from '../src/cli/table';
import { controlRequest, ControlUnreachable } from '../src/control/client';
import { networkOf } from '../src/allow';
import { claimSocket, ControlServer, HttpError } from '../src/control/server';
import type { FirewallBackend } from '../src/firewall';
import { createLogger } from '../src/log';
import { Metrics, parseListen } from '../src/metrics';
import { EventWindow } from '../src/metrics/window';

const quiet = createLogger('silent');

test('metrics: every series named in the spec, events counted per kind and service at scrape', async () => {
  const m = new Metrics({ activeBans: () => ({ v4: 3, v6: 1 }), trackedHosts: () => 7, amiConnected: () => true, amiReconnects: () => 2, amiMalformed: () => 4, amiMerged: () => 5, amiDistrusted: () => 6, firewallInSync: () => true });
  for (let i = 0; i < 5; i++) m.event('ChallengeResponseFailed', 'PJSIP');
  m.event('InvalidAccountID', 'SIP');
  m.ban('auto'); m.ban('manual'); m.unban('expired'); m.firewallFailure('add'); m.observeReaction(0.004);
  const text = await m.render();
  for (const line of [
    'ampere_events_total{kind="ChallengeResponseFailed",service="PJSIP"} 5', 'ampere_events_total{kind="InvalidAccountID",service="SIP"} 1',
    'ampere_bans_total{source="auto"} 1', 'ampere_bans_total{source="manual"} 1', 'ampere_unbans_total{reason="expired"} 1',
    'ampere_active_bans{family="ipv4"} 3', 'ampere_active_bans{family="ipv6"} 1', 'ampere_tracked_hosts 7', 'ampere_ami_connected 1',
    'ampere_ami_reconnects_total 2', 'ampere_ami_malformed_total 4', 'ampere_ami_merged_total 5', 'ampere_ami_distrusted_total 6', 'ampere_firewall_in_sync 1', 'ampere_firewall_command_failures_total{op="add"} 1',
    'ampere_ban_reaction_seconds_bucket{le="0.005"} 1', 'ampere_ban_reaction_seconds_count 1',
  ]) assert.ok(text.split('\n').includes(line), `missing: ${line}`);
  m.event('ChallengeResponseFailed', 'PJSIP');
  assert.ok((await m.render()).includes('ampere_events_total{kind="ChallengeResponseFailed",service="PJSIP"} 6'), 'counters move by the delta');
  assert.deepEqual(parseListen('127.0.0.1:9327'), { host: '127.0.0.1', port: 9327 });
  assert.deepEqual(parseListen('[::1]:9327'), { host: '::1', port: 9327 });
  assert.throws(() => parseListen('9327'));
});

test('EventWindow: the last 60 seconds by kind, older seconds dropped', () => {
  const w = new EventWindow();
  const t = 1_700_000_000_000;
  w.add('A', t); w.add('A', t + 500); w.add('B', t + 30_000);
  assert.deepEqual(w.lastMinute(t + 30_000), { total: 3, byKind: { A: 2, B: 1 } });
  assert.deepEqual(w.lastMinute(t + 61_000), { total: 1, byKind: { B: 1 } });
  w.add('C', t + 60_000); // same slot as t, a minute later: replaces it
  assert.deepEqual(w.lastMinute(t + 60_500), { total: 2, byKind: { B: 1, C: 1 } });
  assert.deepEqual(w.lastMinute(t + 200_000), { total: 0, byKind: {} });
});

test('backups: consistent copy of a live WAL database, one file, named by time; listing and pruning', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-bk-'));
  const db = new Database(join(dir, 'live.db'));
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE hosts(address TEXT PRIMARY KEY); CREATE TABLE bans(id INTEGER PRIMARY KEY, address TEXT, lifted_at INTEGER, until INTEGER)');
  const ins = db.prepare('INSERT INTO bans(address, lifted_at, until) VALUES (?, NULL, NULL)');
  db.transaction(() => { for (let i = 0; i < 5000; i++) ins.run(`10.0.${i >> 8}.${i & 255}`); })();
  const at = Date.UTC(2025, 0, 31, 14, 5, 9);
  const r = await backupDatabase(db, join(dir, 'out'), at);
  assert.equal(r.path, join(dir, 'out', 'ampere-20250131T140509Z.db'));
  assert.equal(r.activeBans, 5000);
  const again = await backupDatabase(db, join(dir, 'out'), at);
  assert.equal(again.path, join(dir, 'out', 'ampere-20250131T140509Z-2.db'), 'same second: a second name, nothing overwritten');
  assert.deepEqual(readdirSync(join(dir, 'out')).sort(), ['ampere-20250131T140509Z-2.db', 'ampere-20250131T140509Z.db']);
  assert.equal(statSync(join(dir, 'out')).mode & 0o777, 0o700);
  const copy = new Database(r.path, { readonly: true });
  assert.equal(copy.pragma('journal_mode', { simple: true }), 'delete');
  copy.close();
  db.close();
  assert.equal(backupName(at, 3), 'ampere-20250131T140509Z-3.db');
  for (const n of ['ampere-20240101T000000Z.db', 'ampere-20260101T000000Z.db', 'other.db', 'ampere-2024.db']) writeFileSync(join(dir, 'out', n), '');
  assert.deepEqual(listBackups(join(dir, 'out')).map((b) => b.name), ['ampere-20260101T000000Z.db', 'ampere-20250131T140509Z-2.db', 'ampere-20250131T140509Z.db', 'ampere-20240101T000000Z.db']);
  assert.equal(pruneBackups(join(dir, 'out'), 2).length, 2);
  assert.deepEqual(readdirSync(join(dir, 'out')).sort(), ['ampere-2024.db', 'ampere-20250131T140509Z-2.db', 'ampere-20260101T000000Z.db', 'other.db']);
});

test('control server: JSON in and out over a 0600 socket, errors as statuses, stale sockets replaced, a live one refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-ctl-'));
  const path = join(dir, 'ampere.sock');
  await assert.rejects(controlRequest(path, 'GET', '/status'), (e: unknown) => e instanceof ControlUnreachable && e.reason === 'not-running');
  const srv = await ControlServer.listen(path, async (r) => {
    if (r.path === '/echo') return { body: { method: r.method, body: r.body, q: r.query.get('q') } };
    if (r.path === '/bad') throw new HttpError(400, 'no good');
    throw new Error('unexpected');
  }, quiet);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.deepEqual((await controlRequest(path, 'POST', '/echo?q=1', { a: [1] })).body, { method: 'POST', body: { a: [1] }, q: '1' });
  assert.deepEqual(await controlRequest(path, 'GET', '/bad'), { status: 400, body: { error: 'no good' } });
  assert.equal((await controlRequest(path, 'GET', '/boom')).status, 500);
  await assert.rejects(claimSocket(path), /another Ampere daemon is running on this database/);
  await srv.close();
  assert.equal(existsSync(path), false);
  // A socket file left by a killed daemon: nothing answers, so it is replaced.
  const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout!, 'data');
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(existsSync(path), true);
  await claimSocket(path);
  assert.equal(existsSync(path), false);
  writeFileSync(path, 'not a socket');
  await assert.rejects(claimSocket(path), /exists and is not a socket/);
});

test('networkOf masks the address to the prefix; tables align; spans read well', () => {
  assert.equal(networkOf('198.51.100.50/28')?.text, '198.51.100.48/28');
  assert.equal(networkOf('2001:db8::ff/64')?.text, '2001:db8::/64');
  assert.equal(networkOf('10.1.2.3')?.text, '10.1.2.3');
  assert.equal(networkOf('10.1.2.3/33'), null);
  assert.equal(formatTable([{ a: 'x', n: 5 }, { a: 'longer', n: 123 }], [{ header: 'NAME', get: (r) => r.a }, { header: 'N', get: (r) => r.n, right: true }]), 'NAME      N\nx         5\nlonger  123\n');
  assert.equal(formatTable([{ a: 'evil\x1b[2J' }], [{ header: 'A', get: (r) => r.a }]), 'A\nevil?[2J\n', 'control characters never reach the terminal');
  assert.deepEqual([45_000, 12 * 60_000, 3 * 3_600_000 + 5 * 60_000, 50 * 3_600_000].map(formatSpan), ['45s', '12m', '3h 5m', '2d 2h']);
});
