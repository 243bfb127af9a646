import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Store, MIGRATIONS, openDatabase } from '../src/store';
import type { SecurityEvent } from '../src/events';

const file = () => join(mkdtempSync(join(tmpdir(), 'ampere-store-')), 'sub', 'dir', 'ampere.db');
const ev = (address: string, kind = 'ChallengeResponseFailed'): SecurityEvent => ({ kind, severity: 'Error', service: 'PJSIP', address, family: address.includes(':') ? 6 : 4, transport: 'UDP', port: 5060, account: '100', sessionId: '' });
const ban = (address: string, now: number, until: number | null) => ({ address, family: (address.includes(':') ? 6 : 4) as 4 | 6, now, until, reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source: 'auto' as const });

test('a real file: directory created, WAL mode, migrations applied once, data survives reopening', () => {
  const path = file();
  const s = new Store(path);
  assert.equal(s.db.$client.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(s.db.$client.pragma('foreign_keys', { simple: true }), 1);
  s.recordBan(ban('192.0.2.1', 1000, 5000));
  s.close();
  const again = new Store(path);
  assert.deepEqual(again.activeBans(2000).map((b) => b.address), ['192.0.2.1']);
  const applied = again.db.$client.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number };
  const journal = JSON.parse(readFileSync(join(MIGRATIONS, 'meta', '_journal.json'), 'utf8'));
  assert.equal(applied.n, journal.entries.length);
  again.close();
});

test('ban lifecycle: escalation count, supersede, expiry, early lift, permanent', () => {
  const s = new Store(file());
  assert.equal(s.recordBan(ban('192.0.2.1', 1000, 2000)).banCount, 1);
  assert.equal(s.banCount('192.0.2.1'), 1);
  assert.equal(s.recordBan(ban('192.0.2.1', 1500, 9000)).banCount, 2, 'a re-ban counts');
  assert.equal(s.activeBans(1600).length, 1, 'the earlier ban was superseded, not doubled');
  s.recordBan(ban('2001:db8::7', 1000, null));
  s.recordBan(ban('192.0.2.3', 1000, 3000));
  assert.deepEqual(s.expireBans(3000).map((b) => b.address), ['192.0.2.3']);
  assert.deepEqual(s.expireBans(3000), [], 'expiry is marked once');
  assert.deepEqual(s.activeBans(10 ** 13).map((b) => b.address), ['2001:db8::7'], 'permanent stays');
  assert.equal(s.liftBan('2001:db8::7', 4000, 'unban'), true);
  assert.equal(s.liftBan('2001:db8::7', 4000, 'unban'), false);
  assert.equal(s.isBanned('192.0.2.1', 5000), true);
  assert.equal(s.host('192.0.2.3')!.banned, false);
  s.close();
});

test('event history is bounded per host and keeps the newest; hostile text is stored verbatim as data', () => {
  const s = new Store(file(), 5);
  const hostile = "x'); DROP TABLE hosts; --";
  s.recordEvents(Array.from({ length: 12 }, (_, i) => ({ event: { ...ev('192.0.2.9'), account: `${hostile}${i}` }, at: i })));
  const rows = s.recentEvents('192.0.2.9');
  assert.equal(rows.length, 5);
  assert.deepEqual(rows.map((r) => r.at), [11, 10, 9, 8, 7]);
  assert.equal(rows[0].account, `${hostile}11`);
  assert.equal(s.host('192.0.2.9')!.failures, 12);
  s.close();
});

test('prune forgets quiet hosts that were never banned, keeps banned ones', () => {
  const s = new Store(file());
  s.recordEvents([{ event: ev('192.0.2.20'), at: 100 }, { event: ev('192.0.2.21'), at: 100 }]);
  s.recordBan(ban('192.0.2.21', 100, 200));
  assert.equal(s.pruneHosts(1000), 1);
  assert.equal(s.host('192.0.2.20'), undefined);
  assert.ok(s.host('192.0.2.21'));
  s.close();
});

test('migrations run with foreign keys off: child rows survive a table rebuild', () => {
  // Simulate the pitfall: a later migration that rebuilds the parent table (DROP + rename).
  const dir = mkdtempSync(join(tmpdir(), 'ampere-mig-'));
  const migrations = join(dir, 'drizzle');
  cpSync(MIGRATIONS, migrations, { recursive: true });
  const journal = JSON.parse(readFileSync(join(migrations, 'meta', '_journal.json'), 'utf8'));
  const path = join(dir, 'a.db');
  const s = new Store(path);
  s.recordEvents([{ event: ev('192.0.2.30'), at: 1 }]);
  s.recordBan(ban('192.0.2.30', 1, null));
  s.close();
  const last = journal.entries.at(-1);
  journal.entries.push({ ...last, idx: last.idx + 1, when: last.when + 1000, tag: '9999_rebuild_hosts' });
  writeFileSync(join(migrations, 'meta', '_journal.json'), JSON.stringify(journal));
  writeFileSync(join(migrations, '9999_rebuild_hosts.sql'), [
    'CREATE TABLE `__new_hosts` (`address` text PRIMARY KEY NOT NULL, `family` integer NOT NULL, `first_seen` integer NOT NULL, `last_seen` integer NOT NULL, `failures` integer DEFAULT 0 NOT NULL, `ban_count` integer DEFAULT 0 NOT NULL, `banned` integer DEFAULT false NOT NULL, `ban_until` integer, `last_kind` text, `last_service` text, `last_account` text);',
    'INSERT INTO `__new_hosts` SELECT * FROM `hosts`;',
    'DROP TABLE `hosts`;',
    'ALTER TABLE `__new_hosts` RENAME TO `hosts`;',
  ].join('\n--> statement-breakpoint\n'));
  const db = openDatabase(path, migrations);
  const n = db.$client.prepare('SELECT (SELECT count(*) FROM bans) AS bans, (SELECT count(*) FROM events) AS events').get() as { bans: number; events: number };
  assert.deepEqual(n, { bans: 1, events: 1 }, 'no cascade delete');
  db.$client.close();
  // Control: the same rebuild with foreign keys ON loses the children, which is why open() turns them off.
  const raw = new Database(join(dir, 'control.db'));
  raw.pragma('foreign_keys = ON');
  raw.exec('CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(p TEXT REFERENCES p(id) ON DELETE CASCADE); INSERT INTO p VALUES (1); INSERT INTO c VALUES (1); DROP TABLE p;');
  assert.equal((raw.prepare('SELECT count(*) AS n FROM c').get() as { n: number }).n, 0);
  raw.close();
});
