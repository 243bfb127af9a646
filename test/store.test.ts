import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { and, desc, eq, gt, isNull, lte, or, sql } from 'drizzle-orm';
import { Store, MIGRATIONS, openDatabase } from '../src/store';
import * as schema from '../src/store/schema';
import type { SecurityEvent } from '../src/events';
import { IPSET_MAX_TIMEOUT, ipsetTimeout } from '../src/firewall/ipset';

const file = () => join(mkdtempSync(join(tmpdir(), 'ampere-store-')), 'sub', 'dir', 'ampere.db');
const ev = (address: string, kind = 'ChallengeResponseFailed'): SecurityEvent => ({ kind, severity: 'Error', service: 'PJSIP', address, family: address.includes(':') ? 6 : 4, transport: 'UDP', port: 5060, account: '100', sessionId: '' });
const ban = (address: string, now: number, until: number | null) => ({ address, family: (address.includes(':') ? 6 : 4) as 4 | 6, now, until, reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source: 'auto' as const });

test('a real file: directory created, WAL mode, migrations applied once, data survives reopening', () => {
  const path = file();
  const s = new Store(path);
  assert.equal(s.sqlite.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(s.sqlite.pragma('foreign_keys', { simple: true }), 1);
  assert.equal(s.sqlite.pragma('cache_size', { simple: true }), -2000, "SQLite's 2 MB page cache, not better-sqlite3's 16 MB");
  assert.equal(s.sqlite.pragma('temp.journal_mode', { simple: true }), 'memory', 'the bulk writes\' scratch table journals in memory, not a file each transaction');
  s.bans.recordBan(ban('192.0.2.1', 1000, 5000));
  s.close();
  const again = new Store(path);
  assert.deepEqual(again.bans.activeBans(2000).map((b) => b.address), ['192.0.2.1']);
  const applied = again.sqlite.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number };
  const journal = JSON.parse(readFileSync(join(MIGRATIONS, 'meta', '_journal.json'), 'utf8'));
  assert.equal(applied.n, journal.entries.length);
  again.close();
});

test('ban lifecycle: escalation count, supersede, expiry, early lift, permanent', () => {
  const s = new Store(file());
  assert.equal(s.bans.recordBan(ban('192.0.2.1', 1000, 2000)).banCount, 1);
  assert.equal(s.bans.banCount('192.0.2.1'), 1);
  assert.equal(s.bans.recordBan(ban('192.0.2.1', 1500, 9000)).banCount, 2, 'a re-ban counts');
  assert.equal(s.bans.activeBans(1600).length, 1, 'the earlier ban was superseded, not doubled');
  s.bans.recordBan(ban('2001:db8::7', 1000, null));
  s.bans.recordBan(ban('192.0.2.3', 1000, 3000));
  assert.deepEqual(s.bans.expireBans(3000).map((b) => b.address), ['192.0.2.3']);
  assert.deepEqual(s.bans.expireBans(3000), [], 'expiry is marked once');
  assert.deepEqual(s.bans.activeBans(10 ** 13).map((b) => b.address), ['2001:db8::7'], 'permanent stays');
  assert.equal(s.bans.liftBan('2001:db8::7', 4000, 'unban'), true);
  assert.equal(s.bans.liftBan('2001:db8::7', 4000, 'unban'), false);
  assert.equal(s.bans.isBanned('192.0.2.1', 5000), true);
  assert.equal(s.history.host('192.0.2.3')!.banned, false);
  s.close();
});

test('event history is bounded per host and keeps the newest; hostile text is stored verbatim as data', () => {
  const s = new Store(file(), 5);
  const hostile = "x'); DROP TABLE hosts; --";
  s.history.recordEvents(Array.from({ length: 12 }, (_, i) => ({ event: { ...ev('192.0.2.9'), account: `${hostile}${i}` }, at: i })));
  const rows = s.history.recentEvents('192.0.2.9');
  assert.equal(rows.length, 5);
  assert.deepEqual(rows.map((r) => r.at), [11, 10, 9, 8, 7]);
  assert.equal(rows[0].account, `${hostile}11`);
  assert.equal(s.history.host('192.0.2.9')!.failures, 12);
  s.close();
});

test('prune forgets quiet hosts that were never banned, keeps banned ones', () => {
  const s = new Store(file());
  s.history.recordEvents([{ event: ev('192.0.2.20'), at: 100 }, { event: ev('192.0.2.21'), at: 100 }]);
  s.bans.recordBan(ban('192.0.2.21', 100, 200));
  assert.equal(s.history.pruneHosts(1000), 1);
  assert.equal(s.history.host('192.0.2.20'), undefined);
  assert.ok(s.history.host('192.0.2.21'));
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
  s.history.recordEvents([{ event: ev('192.0.2.30'), at: 1 }]);
  s.bans.recordBan(ban('192.0.2.30', 1, null));
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

test('activeBans: exactly the bans in force (not lifted; permanent or ending later), with their fields and types', () => {
  const path = file();
  const s = new Store(path);
  const now = 1_800_000_000_000;
  s.bans.recordBan(ban('192.0.2.40', now - 5000, now + 60_000)); // lifted early below
  s.bans.recordBan(ban('192.0.2.41', now - 5000, now - 1)); // over, not yet marked expired
  s.bans.recordBan(ban('192.0.2.42', now - 5000, now)); // ends exactly now: over
  s.bans.recordBan(ban('192.0.2.43', now - 5000, null)); // permanent
  s.bans.recordBan(ban('fd33::1:2', now - 4000, now + 1)); // ends later
  s.bans.recordBan({ ...ban('192.0.2.44', now - 3000, now + 10_000), source: 'manual', reasonKind: 'manual', reasonService: '', reasonAccount: '', failures: 0 });
  s.bans.recordBan(ban('192.0.2.44', now - 2000, now + 20_000)); // supersedes the manual one
  assert.equal(s.bans.liftBan('192.0.2.40', now - 100, 'unban'), true);
  const got = s.bans.activeBans(now);
  assert.deepEqual(got.map((b) => b.address).sort(), ['192.0.2.43', '192.0.2.44', 'fd33::1:2']);
  const v6 = got.find((b) => b.address === 'fd33::1:2')!;
  assert.deepEqual(v6, {
    id: v6.id, address: 'fd33::1:2', family: 6, startedAt: now - 4000, until: now + 1,
    reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source: 'auto',
  });
  assert.ok(Number.isInteger(v6.id) && v6.id > 0);
  assert.equal(got.find((b) => b.address === '192.0.2.43')!.until, null, 'permanent: until is null');
  assert.equal(got.find((b) => b.address === '192.0.2.44')!.startedAt, now - 2000, 'the newer ban, not the superseded one');
  for (const b of got) {
    assert.deepEqual(Object.keys(b), ['id', 'address', 'family', 'startedAt', 'until', 'reasonKind', 'reasonService', 'reasonAccount', 'failures', 'source']);
    for (const k of ['id', 'family', 'startedAt', 'failures'] as const) assert.equal(typeof b[k], 'number', k);
    for (const k of ['address', 'reasonKind', 'reasonService', 'reasonAccount', 'source'] as const) assert.equal(typeof b[k], 'string', k);
    assert.ok(b.until === null || typeof b.until === 'number');
    assert.ok(b.family === 4 || b.family === 6);
  }
  // The same rows, in the same order, as the Drizzle query it replaces.
  const { bans } = schema;
  const viaDrizzle = s.db
    .select({ id: bans.id, address: bans.address, family: bans.family, startedAt: bans.startedAt, until: bans.until, reasonKind: bans.reasonKind, reasonService: bans.reasonService, reasonAccount: bans.reasonAccount, failures: bans.failures, source: bans.source })
    .from(bans).where(and(isNull(bans.liftedAt), or(isNull(bans.until), gt(bans.until, now)))).all();
  assert.deepEqual(got, viaDrizzle);
  assert.deepEqual(s.bans.activeBans(now + 1).map((b) => b.address).sort(), ['192.0.2.43', '192.0.2.44'], 'a ban is over at its until');
  s.close();
});

test('the start\'s read of every active ban is served by the bans_active index alone (no table lookup per row)', () => {
  const s = new Store(file());
  // Migration 0001 added address to the index: 100k bans are read in ~40 ms instead of ~145 ms cold.
  const columns = s.sqlite.prepare(`SELECT name FROM pragma_index_info('bans_active') ORDER BY seqno`).pluck().all();
  assert.deepEqual(columns, ['lifted_at', 'until', 'address']);
  s.bans.activeKernelBans(0);
  const prepared = (s as unknown as { prepared: Map<string, { source: string }> }).prepared;
  const source = [...prepared.keys()].find((q) => q.includes("group_concat(address || ' '"))!;
  const plan = s.sqlite.prepare(`EXPLAIN QUERY PLAN ${source}`).all(0) as { detail: string }[];
  assert.ok(plan.some((p) => p.detail.includes('COVERING INDEX bans_active')), JSON.stringify(plan));
  s.close();
});

test('one host\'s bans are read through the address index, not by scanning every active ban (SQLite preferred the covering bans_active)', () => {
  const s = new Store(file());
  const now = 1_800_000_000_000;
  for (let i = 0; i < 50; i++) s.bans.recordBan(ban(`192.0.2.${i}`, now - 5000, now + 60_000));
  s.bans.recordBan(ban('192.0.2.7', now - 4000, now + 90_000)); // supersedes
  assert.equal(s.bans.isBanned('192.0.2.8', now), true);
  assert.equal(s.bans.liftBan('192.0.2.9', now, 'unban'), true);
  assert.equal(s.bans.listBans(now, { address: '192.0.2.7' }).length, 1);
  const inner = s as unknown as { prepared: Map<string, { source: string }> };
  const perHost = [...inner.prepared.values()].map((st) => st.source).filter((q) => /(FROM|UPDATE) bans\b/.test(q) && /address = \?/.test(q));
  assert.ok(perHost.length >= 4, `${perHost.length} statements`);
  for (const q of perHost) {
    const plan = (s.sqlite.prepare(`EXPLAIN QUERY PLAN ${q}`).all(...Array(q.split('?').length - 1).fill(0)) as { detail: string }[]).map((p) => p.detail).join(' / ');
    assert.match(plan, /bans USING INDEX bans_address \(address=\?\)/, `${q}: ${plan}`);
  }
  s.close();
});

test('renderActiveBans: the lines the bans make one by one (seconds rounded up; 0 for none or beyond the maximum), per family; only bans in force; only address characters', () => {
  const s = new Store(file());
  const now = 1_800_000_000_123;
  const ends: [string, number | null][] = [['192.0.2.1', now + 1], ['192.0.2.2', now + 1000], ['192.0.2.3', now + 1001], ['192.0.2.4', null],
    ['192.0.2.5', now + IPSET_MAX_TIMEOUT * 1000], ['192.0.2.6', now + IPSET_MAX_TIMEOUT * 1000 + 1], ['192.0.2.7', now], ['192.0.2.8', now + 60_000],
    ['fd33::1:2', now + 86_400_000], ['2001:db8::9', null]];
  for (const [a, until] of ends) s.bans.recordBan(ban(a, now - 5000, until));
  s.bans.liftBan('192.0.2.8', now - 1, 'unban');
  // Past the daemon's checks (a hand-edited file): letters and a space are never rendered.
  s.sqlite.prepare('INSERT INTO hosts (address, family, first_seen, last_seen) VALUES (?, 4, 0, 0)').run('1.2.3.4 -j ACCEPT');
  s.sqlite.prepare(`INSERT INTO bans (address, family, started_at, until, reason_kind) VALUES (?, 4, 0, NULL, 'manual')`).run('1.2.3.4 -j ACCEPT');
  const format = { prefix: { 4: 'add s4 ', 6: 'add s6 ' }, rangePrefix: { 4: 'add n4 ', 6: 'add n6 ' }, infix: ' timeout ', maxSeconds: IPSET_MAX_TIMEOUT };
  const lines = s.bans.renderActiveBans(now, format);
  const byAddress = (text: string) => Object.fromEntries(text.split('\n').map((l) => [l.split(' ')[2], l]));
  assert.deepEqual(byAddress(lines[4]), {
    '192.0.2.1': 'add s4 192.0.2.1 timeout 1', '192.0.2.2': 'add s4 192.0.2.2 timeout 1', '192.0.2.3': 'add s4 192.0.2.3 timeout 2',
    '192.0.2.4': 'add s4 192.0.2.4 timeout 0', '192.0.2.5': `add s4 192.0.2.5 timeout ${IPSET_MAX_TIMEOUT}`, '192.0.2.6': 'add s4 192.0.2.6 timeout 0',
  });
  assert.deepEqual(byAddress(lines[6]), { 'fd33::1:2': 'add s6 fd33::1:2 timeout 86400', '2001:db8::9': 'add s6 2001:db8::9 timeout 0' });
  assert.equal(lines.count, 8);
  // The same as the one-by-one load makes them from activeKernelBans.
  const oneByOne = s.bans.activeKernelBans(now).filter((b) => !b.address.includes(' ')).map((b) => `add s${b.family} ${b.address} timeout ${ipsetTimeout(b.until, now)}`);
  assert.deepEqual([...lines[4].split('\n'), ...lines[6].split('\n')].sort(), oneByOne.sort());
  assert.deepEqual(s.bans.renderActiveBans(now + 10 ** 12, format), { 4: 'add s4 192.0.2.4 timeout 0', 6: 'add s6 2001:db8::9 timeout 0', count: 2 }, 'much later: the permanent ones');
  s.close();
  const empty = new Store(file());
  assert.deepEqual(empty.bans.renderActiveBans(now, format), { 4: '', 6: '', count: 0 }, 'none: empty texts');
  empty.close();
});

test('renderActiveBanSlices: the same lines as renderActiveBans, slice by slice as pulled; none when the bans are spread thin', () => {
  const s = new Store(file());
  const now = 1_800_000_000_123;
  const format = { prefix: { 4: 'add s4 ', 6: 'add s6 ' }, rangePrefix: { 4: 'add n4 ', 6: 'add n6 ' }, infix: ' timeout ', maxSeconds: IPSET_MAX_TIMEOUT };
  // More than one slice of ids (4096), both families, ranges, permanent and timed, a lifted one, a hostile row.
  for (let i = 0; i < 10_000; i++) {
    const a = i % 5 === 0 ? `fd33::${i.toString(16)}` : i % 97 === 0 ? `10.${i >> 8 & 255}.${i & 255}.0/24` : `198.18.${i >> 8 & 255}.${i & 255}`;
    s.bans.recordBan(ban(a, now - 5000, i % 3 === 0 ? null : now + i * 1000));
  }
  s.bans.liftBan('198.18.0.1', now - 1, 'unban');
  s.sqlite.prepare('INSERT INTO hosts (address, family, first_seen, last_seen) VALUES (?, 4, 0, 0)').run('1.2.3.4 -j ACCEPT');
  s.sqlite.prepare(`INSERT INTO bans (address, family, started_at, until, reason_kind) VALUES (?, 4, 0, NULL, 'manual')`).run('1.2.3.4 -j ACCEPT');
  const whole = s.bans.renderActiveBans(now, format);
  const sliced = s.bans.renderActiveBanSlices(now, format)!;
  assert.equal(sliced.count, 0, 'nothing rendered before it is pulled');
  const chunks = [...sliced.slices];
  assert.ok(chunks.length >= 4, `${chunks.length} slices`);
  assert.ok(chunks.every((c) => c.length > 0 && c[c.length - 1] === 10), 'whole lines, each ending in a newline');
  const lines = Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean);
  assert.deepEqual(lines.sort(), [...whole[4].split('\n'), ...whole[6].split('\n')].sort());
  assert.equal(sliced.count, whole.count);
  assert.equal(sliced.count, 9_999);
  // Most rows lifted (a long history): the ids are spread thin, so no slices (one whole render instead).
  s.sqlite.prepare(`UPDATE bans SET lifted_at = ?, lift_reason = 'unban' WHERE id % 4 <> 0`).run(now - 1);
  assert.equal(s.bans.renderActiveBanSlices(now, format), undefined);
  s.close();
  const empty = new Store(file());
  assert.equal(empty.bans.renderActiveBanSlices(now, format), undefined, 'none: nothing to slice');
  empty.close();
});

test('activeAddressesStartingWith: the bans in force whose address starts with a prefix, read from the address index', () => {
  const s = new Store(file());
  const now = 1_800_000_000_000;
  for (const a of ['10.1.2.3', '10.10.0.1', '100.64.0.1', '192.0.2.1', 'fd33::1', '2001:db8::1']) s.bans.recordBan(ban(a, now - 5000, now + 60_000));
  s.bans.recordBan(ban('10.1.9.9', now - 5000, now - 1)); // over
  const got = (prefixes: string[]) => s.bans.activeAddressesStartingWith(now, prefixes).sort();
  assert.deepEqual(got(['10.']), ['10.1.2.3', '10.10.0.1']);
  assert.deepEqual(got(['10.1.', 'fd33:']), ['10.1.2.3', 'fd33::1']);
  assert.deepEqual(got(['10.1.2.3', '10.1.2.3']), ['10.1.2.3']);
  assert.deepEqual(got(['']), ['10.1.2.3', '10.10.0.1', '100.64.0.1', '192.0.2.1', '2001:db8::1', 'fd33::1']);
  assert.deepEqual(got([]), []);
  s.close();
});

test('expireBans: marks the bans that are over (lifted at their until), frees their hosts, returns them once', () => {
  const s = new Store(file());
  const now = 1_800_000_000_000;
  s.bans.recordBan(ban('192.0.2.50', now - 5000, now - 10));
  s.bans.recordBan(ban('2001:db8::50', now - 5000, now));
  s.bans.recordBan(ban('192.0.2.51', now - 5000, now + 1));
  s.bans.recordBan(ban('192.0.2.52', now - 5000, null));
  s.bans.recordBan(ban('192.0.2.53', now - 5000, now - 20));
  assert.equal(s.bans.liftBan('192.0.2.53', now - 30, 'unban'), true);
  const due = s.bans.expireBans(now);
  assert.deepEqual(due.map((b) => [b.address, b.family, b.until, b.startedAt]), [['192.0.2.50', 4, now - 10, now - 5000], ['2001:db8::50', 6, now, now - 5000]]);
  assert.deepEqual(Object.keys(due[0]), ['id', 'address', 'family', 'startedAt', 'until', 'reasonKind', 'reasonService', 'reasonAccount', 'failures', 'source']);
  const rows = s.bans.listBans(now, { all: true });
  const row = (a: string) => rows.find((r) => r.address === a)!;
  assert.deepEqual([row('192.0.2.50').liftedAt, row('192.0.2.50').liftReason], [now - 10, 'expired']);
  assert.deepEqual([row('2001:db8::50').liftedAt, row('2001:db8::50').liftReason], [now, 'expired']);
  assert.deepEqual([row('192.0.2.53').liftedAt, row('192.0.2.53').liftReason], [now - 30, 'unban'], 'an unbanned one is left alone');
  assert.deepEqual([row('192.0.2.51').liftedAt, row('192.0.2.52').liftedAt], [null, null]);
  for (const a of ['192.0.2.50', '2001:db8::50']) assert.deepEqual([s.history.host(a)!.banned, s.history.host(a)!.banUntil], [false, null]);
  assert.deepEqual([s.history.host('192.0.2.51')!.banned, s.history.host('192.0.2.51')!.banUntil], [true, now + 1]);
  assert.deepEqual(s.bans.expireBans(now), []);
  assert.deepEqual(s.bans.activeBans(now).map((b) => b.address).sort(), ['192.0.2.51', '192.0.2.52']);
  s.close();
});

/**
 * The Store's SQL against the Drizzle queries it replaced (the query builder over the same
 * schema): same rows, field names, field order, types (hosts.banned a boolean) and effects.
 */
const viaDrizzle = (s: Store) => {
  const { bans, hosts, events, allowed } = schema;
  const active = (now: number) => and(isNull(bans.liftedAt), or(isNull(bans.until), gt(bans.until, now)));
  const db = s.db;
  return {
    isBanned: (address: string, now: number) => db.select({ id: bans.id }).from(bans).where(and(eq(bans.address, address), active(now))).get() !== undefined,
    liftBan: (address: string, now: number, reason: 'unban' | 'allowed') => db.transaction((tx) => {
      const res = tx.update(bans).set({ liftedAt: now, liftReason: reason }).where(and(eq(bans.address, address), active(now))).run();
      tx.update(hosts).set({ banned: false, banUntil: null }).where(eq(hosts.address, address)).run();
      return res.changes > 0;
    }),
    pruneHosts: (before: number) => db.delete(hosts).where(and(eq(hosts.banCount, 0), lte(hosts.lastSeen, before))).run().changes,
    recentEvents: (address: string, limit = 100) => db.select().from(events).where(eq(events.address, address)).orderBy(desc(events.id)).limit(limit).all(),
    host: (address: string) => db.select().from(hosts).where(eq(hosts.address, address)).get(),
    allowList: () => db.select().from(allowed).all(),
    addAllowed: (cidr: string, now: number, note = '') => { db.insert(allowed).values({ cidr, addedAt: now, note }).onConflictDoNothing().run(); },
    removeAllowed: (cidr: string) => db.delete(allowed).where(eq(allowed.cidr, cidr)).run().changes > 0,
    listBans: (now: number, opts: { all?: boolean; address?: string } = {}) => {
      const conds = [opts.all ? undefined : active(now), opts.address !== undefined ? eq(bans.address, opts.address) : undefined].filter((c) => c !== undefined);
      return db.select({
        id: bans.id, address: bans.address, family: bans.family, startedAt: bans.startedAt, until: bans.until,
        reasonKind: bans.reasonKind, reasonService: bans.reasonService, reasonAccount: bans.reasonAccount,
        failures: bans.failures, source: bans.source, origin: bans.origin, liftedAt: bans.liftedAt, liftReason: bans.liftReason,
        banCount: sql<number>`coalesce(${hosts.banCount}, 0)`,
      }).from(bans).leftJoin(hosts, eq(hosts.address, bans.address)).where(conds.length ? and(...conds) : undefined).orderBy(desc(bans.startedAt), desc(bans.id)).all();
    },
    liftAllBans: (now: number, reason: 'unban') => db.transaction((tx) => {
      const lifted = tx.select().from(bans).where(active(now)).all();
      tx.update(bans).set({ liftedAt: now, liftReason: reason }).where(active(now)).run();
      tx.update(hosts).set({ banned: false, banUntil: null }).where(eq(hosts.banned, true)).run();
      return lifted;
    }),
  };
};

/** Same values and the same field order (JSON output follows it). */
const same = (got: unknown, want: unknown, what: string) => {
  assert.deepStrictEqual(got, want, what);
  assert.equal(JSON.stringify(got), JSON.stringify(want), `${what}: field order`);
};

test('the operator queries return and change exactly what the Drizzle queries they replace did', () => {
  const now = 1_800_000_000_000;
  const fill = (s: Store) => {
    s.history.recordEvents(Array.from({ length: 7 }, (_, i) => ({ event: ev(i % 2 ? '192.0.2.60' : '2001:db8::60'), at: now - 100 + i })));
    s.history.recordEvents([{ event: { ...ev('192.0.2.61'), transport: undefined as unknown as string }, at: now - 50 }]); // null transport
    s.history.recordEvents([{ event: ev('192.0.2.62'), at: now - 10_000 }]); // quiet, never banned
    s.bans.recordBan(ban('192.0.2.60', now - 5000, now + 60_000));
    s.bans.recordBan(ban('192.0.2.60', now - 4000, now + 90_000)); // supersedes
    s.bans.recordBan(ban('2001:db8::60', now - 3000, null));
    s.bans.recordBan(ban('192.0.2.63', now - 3000, now - 1)); // over, not marked
    s.bans.recordBan({ ...ban('192.0.2.64', now - 2000, now + 5), source: 'manual', reasonKind: 'manual', reasonService: '', reasonAccount: '', failures: 0 });
    s.bans.recordBan(ban('192.0.2.65', now - 2000, now - 5));
    s.bans.expireBans(now - 1);
    s.allowed.addAllowed('198.51.100.0/24', now - 7, 'office');
    s.allowed.addAllowed('2001:db8:1::/48', now - 6);
  };
  const a = new Store(file(), 5);
  const b = new Store(file(), 5);
  fill(a); fill(b);
  const ref = viaDrizzle(b);
  const addresses = ['192.0.2.60', '2001:db8::60', '192.0.2.61', '192.0.2.62', '192.0.2.63', '192.0.2.64', '192.0.2.65', '203.0.113.1'];
  const compare = (when: string) => {
    for (const t of [now - 6000, now - 1, now, now + 10]) {
      for (const opts of [{}, { all: true }, ...addresses.flatMap((address) => [{ address }, { all: true, address }])]) {
        same(a.bans.listBans(t, opts), ref.listBans(t, opts), `${when}: listBans(${t}, ${JSON.stringify(opts)})`);
      }
      for (const x of addresses) assert.equal(a.bans.isBanned(x, t), ref.isBanned(x, t), `${when}: isBanned(${x}, ${t})`);
    }
    for (const x of addresses) {
      same(a.history.host(x), ref.host(x), `${when}: host(${x})`);
      for (const limit of [1, 3, 100]) same(a.history.recentEvents(x, limit), ref.recentEvents(x, limit), `${when}: recentEvents(${x}, ${limit})`);
      same(a.history.recentEvents(x), ref.recentEvents(x), `${when}: recentEvents(${x})`);
    }
    same(a.allowed.allowList(), ref.allowList(), `${when}: allowList`);
  };
  compare('filled');
  assert.equal(typeof a.history.host('192.0.2.60')!.banned, 'boolean');
  assert.equal(a.history.recentEvents('192.0.2.61')[0].transport, null);
  // Writes: the same calls on both, compared by what they return and by what they leave.
  assert.equal(a.bans.liftBan('192.0.2.60', now - 1, 'unban'), ref.liftBan('192.0.2.60', now - 1, 'unban'));
  assert.equal(a.bans.liftBan('192.0.2.60', now - 1, 'unban'), ref.liftBan('192.0.2.60', now - 1, 'unban'));
  assert.equal(a.bans.liftBan('192.0.2.62', now - 1, 'allowed'), ref.liftBan('192.0.2.62', now - 1, 'allowed'));
  compare('after liftBan');
  a.allowed.addAllowed('198.51.100.0/24', now, 'again'); ref.addAllowed('198.51.100.0/24', now, 'again');
  a.allowed.addAllowed('192.0.2.0/28', now); ref.addAllowed('192.0.2.0/28', now);
  assert.equal(a.allowed.removeAllowed('2001:db8:1::/48'), ref.removeAllowed('2001:db8:1::/48'));
  assert.equal(a.allowed.removeAllowed('2001:db8:1::/48'), ref.removeAllowed('2001:db8:1::/48'));
  compare('after allow changes');
  same(a.bans.liftAllBans(now, 'unban'), ref.liftAllBans(now, 'unban'), 'liftAllBans');
  assert.ok(a.bans.listBans(now, { all: true }).some((r) => r.liftReason === 'unban'));
  compare('after liftAllBans');
  same(a.bans.liftAllBans(now, 'unban'), ref.liftAllBans(now, 'unban'), 'liftAllBans again (nothing left)');
  assert.equal(a.history.pruneHosts(now - 9000), ref.pruneHosts(now - 9000));
  assert.equal(a.history.pruneHosts(now), ref.pruneHosts(now));
  compare('after pruneHosts');
  assert.equal(a.history.host('192.0.2.62'), undefined, 'pruned');
  a.close(); b.close();
});
