/**
 * Opening the database without Drizzle: the Store decides from drizzle/meta/_journal.json
 * whether a migration is pending, as Drizzle's migrator does, and loads drizzle-orm only to
 * run one. Real files in temp directories.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { MIGRATIONS, openSqlite, pendingMigrations, Store } from '../src/store';

const REPO = resolve(__dirname, '..');
const tmp = () => mkdtempSync(join(tmpdir(), 'ampere-migrate-'));

interface Entry { idx: number; version: string; when: number; tag: string; breakpoints: boolean }

/** A copy of drizzle/ that tests can add migrations to. */
function migrationsCopy(dir: string) {
  const folder = join(dir, 'drizzle');
  cpSync(MIGRATIONS, folder, { recursive: true });
  const journalFile = join(folder, 'meta', '_journal.json');
  const journal = () => JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: Entry[] };
  return {
    folder,
    lastWhen: () => journal().entries.at(-1)!.when,
    count: () => journal().entries.length,
    /** Appends a migration (journal entry and SQL file), as drizzle-kit generate does. */
    add(tag: string, when: number, sql: string) {
      const j = journal();
      j.entries.push({ ...j.entries.at(-1)!, idx: j.entries.length, when, tag });
      writeFileSync(journalFile, JSON.stringify(j, null, 2));
      writeFileSync(join(folder, `${tag}.sql`), sql);
    },
  };
}

const applied = (path: string) => {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT hash, created_at FROM __drizzle_migrations ORDER BY id').all() as { hash: string; created_at: number }[];
  } finally { db.close(); }
};
const tables = (path: string) => {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).pluck().all() as string[];
  } finally { db.close(); }
};

test('the daemon\'s use of a Store on a migrated file (with the checkpointer) loads no drizzle-orm module; a new file loads only what migrates it', () => {
  const dir = tmp();
  // Each start in a fresh process: this one has loaded drizzle-orm for the other tests.
  const start = (control: boolean) => {
    const script = `
      const { Store } = require('./src/store/index.ts');
      const loaded = () => Object.keys(require.cache).filter((k) => k.includes('/drizzle-orm/') || k.includes('/src/store/schema'));
      const now = Date.now();
      const ev = (address) => ({ event: { kind: 'ChallengeResponseFailed', severity: 'Error', service: 'PJSIP', address, family: 4, transport: 'UDP', port: 5060, account: '100', sessionId: '' }, at: now });
      const ban = (address, until) => ({ address, family: 4, now, until, reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source: 'auto' });
      const s = new Store(${JSON.stringify(join(dir, 'ampere.db'))}, 20, { checkpointer: true });
      s.allowed.allowList();
      s.bans.expireBans(now);
      s.bans.activeKernelBans(now);
      s.history.recordEvents([ev('192.0.2.1'), ev('192.0.2.2')]);
      s.bans.banCount('192.0.2.1');
      s.bans.recordBans([ban('192.0.2.1', now + 60000), ban('192.0.2.2', now - 1)]);
      s.bans.recordBan(ban('192.0.2.3', null));
      s.bans.expireBans(now);
      s.bans.liftBan('192.0.2.3', now, 'allowed');
      s.history.pruneHosts(now - 1);
      s.bans.activeBans(now);
      // and the operator's commands through the control socket
      s.allowed.addAllowed('198.51.100.0/24', now); s.allowed.removeAllowed('198.51.100.0/24');
      s.bans.listBans(now, { all: true }); s.history.host('192.0.2.1'); s.history.recentEvents('192.0.2.1'); s.bans.isBanned('192.0.2.1', now); s.bans.liftAllBans(now, 'unban');
      const out = { loaded: loaded(), bans: s.bans.listBans(now, { all: true }).length };
      // Control: the check sees Drizzle once something asks for it.
      if (${control}) { s.db; out.control = loaded().length > 0; }
      s.close();
      console.log(JSON.stringify(out));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { loaded: string[]; bans: number; control?: boolean };
  };
  const fresh = start(false);
  assert.equal(fresh.bans, 3);
  assert.ok(fresh.loaded.some((k) => k.endsWith('/drizzle-orm/better-sqlite3/migrator.cjs')), 'a new file is migrated by Drizzle');
  assert.ok(!fresh.loaded.some((k) => k.includes('/src/store/schema')), 'without the schema module');
  assert.deepEqual(start(false), { loaded: [], bans: 6 });
  assert.deepEqual(start(true), { loaded: [], bans: 9, control: true });
  rmSync(dir, { recursive: true, force: true });
});

test('a migration added to the journal is detected and applied once; an older database gets what it misses', () => {
  const dir = tmp();
  const m = migrationsCopy(dir);
  const path = join(dir, 'a.db');
  const s = new Store(path); // migrated from the shipped drizzle/
  s.bans.recordBan({ address: '192.0.2.1', family: 4, now: 1, until: null, reasonKind: 'manual', reasonService: '', reasonAccount: '', failures: 0, source: 'manual' });
  assert.equal(pendingMigrations(s.sqlite, m.folder), 0);
  s.close();
  const older = join(dir, 'older.db');
  copyFileSync(path, older);
  const before = applied(path);

  m.add('0001_extra', m.lastWhen() + 1000, 'CREATE TABLE `extra` (`id` integer PRIMARY KEY NOT NULL);\n--> statement-breakpoint\nCREATE INDEX `extra_id` ON `extra` (`id`);');
  let db = openSqlite(path, m.folder);
  assert.ok(tables(path).includes('extra'), 'the new migration ran');
  assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
  assert.deepEqual(applied(path).slice(0, before.length), before);
  assert.equal(applied(path).length, before.length + 1);
  assert.equal(pendingMigrations(db, m.folder), 0);
  db.close();
  db = openSqlite(path, m.folder); // a second run would fail: table extra already exists
  assert.equal(applied(path).length, before.length + 1, 'not applied twice');
  db.close();

  m.add('0002_more', m.lastWhen() + 1000, 'CREATE TABLE `more` (`id` integer PRIMARY KEY NOT NULL);');
  const o = new Database(older);
  assert.equal(pendingMigrations(o, m.folder), 2);
  o.close();
  openSqlite(older, m.folder).close();
  assert.deepEqual(tables(older).filter((t) => t === 'extra' || t === 'more'), ['extra', 'more']);
  assert.deepEqual(applied(older).map((a) => a.created_at), [...before.map((a) => a.created_at), m.lastWhen() - 1000, m.lastWhen()]);
  rmSync(dir, { recursive: true, force: true });
});

test('pendingMigrations counts exactly what Drizzle\'s migrator then runs', () => {
  const dir = tmp();
  const m = migrationsCopy(dir);
  const first = m.lastWhen();
  const shipped = m.count();
  // Databases in several states, each tried against the journal as it grows: a new file, an
  // empty migrations table, migrated at an earlier stage; and entries dated at or before the
  // newest applied one, which Drizzle skips (it compares with the newest row only).
  const templates: string[] = [];
  const template = (name: string, prepare: (db: Database.Database) => void) => {
    const path = join(dir, `template-${name}.db`);
    const db = new Database(path);
    prepare(db);
    db.close();
    templates.push(path);
  };
  template('new', () => {});
  template('empty-table', (db) => db.exec('CREATE TABLE __drizzle_migrations (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)'));
  const migrated = (stage: string) => template(stage, (db) => migrate(drizzle(db), { migrationsFolder: m.folder }));
  const rows = (db: Database.Database) =>
    db.prepare(`SELECT 1 FROM sqlite_master WHERE name = '__drizzle_migrations'`).get() ? db.prepare('SELECT count(*) FROM __drizzle_migrations').pluck().get() as number : 0;
  let checks = 0;
  const check = (stage: string, want: number[]) => {
    const got = templates.map((t, k) => {
      const path = join(dir, `${stage}-${k}.db`);
      copyFileSync(t, path);
      const db = new Database(path);
      const pending = pendingMigrations(db, m.folder);
      const n = rows(db);
      migrate(drizzle(db), { migrationsFolder: m.folder });
      assert.equal(pending, rows(db) - n, `${stage}, ${t}: pending ${pending}, Drizzle ran ${rows(db) - n}`);
      assert.equal(pendingMigrations(db, m.folder), 0, `${stage}, ${t}: none left`);
      db.close();
      checks++;
      return pending;
    });
    assert.deepEqual(got, want, stage);
  };
  const sql = (t: string) => `CREATE TABLE \`${t}\` (\`id\` integer PRIMARY KEY NOT NULL);`;
  migrated('shipped');
  check('shipped', [shipped, shipped, 0]);
  m.add('0001_a', first + 10, sql('a'));
  check('0001_a added', [shipped + 1, shipped + 1, 1]);
  migrated('with-0001_a');
  m.add('0002_same_time', first + 10, sql('b')); // not later than 0001_a
  m.add('0003_earlier', first + 5, sql('c')); // earlier than 0001_a
  m.add('0004_b', first + 20, sql('d'));
  check('out of order', [shipped + 4, shipped + 4, 4, 1]);
  assert.equal(checks, 3 + 3 + 4);
  rmSync(dir, { recursive: true, force: true });
});

test('a missing or unreadable journal is an error naming the migrations folder', () => {
  const dir = tmp();
  const path = join(dir, 'a.db');
  const absent = join(dir, 'no-such-folder');
  assert.throws(() => openSqlite(path, absent), (err: Error) => err.message.includes(absent) && err.message.includes('meta/_journal.json'));
  new Store(path).close(); // migrated from the shipped drizzle/
  assert.throws(() => openSqlite(path, absent), (err: Error) => err.message.includes(absent), 'also on an already migrated file');
  const m = migrationsCopy(dir);
  writeFileSync(join(m.folder, 'meta', '_journal.json'), '{"version": "7", "entr');
  assert.throws(() => openSqlite(path, m.folder), (err: Error) => err.message.includes(m.folder) && err.message.includes('meta/_journal.json'));
  writeFileSync(join(m.folder, 'meta', '_journal.json'), '{"version": "7"}');
  assert.throws(() => openSqlite(path, m.folder), (err: Error) => err.message.includes(m.folder) && /entries/.test(err.message));
  rmSync(dir, { recursive: true, force: true });
});
