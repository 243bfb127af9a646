/**
 * BanTable.recordBans writes a list in three statements (src/store/bulk-bans.ts) when it can:
 * the rows must be exactly those of recordBan called for each, in order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store';
import { bulkWritable, BULK_MIN } from '../src/store/bulk-bans';
import type { NewBan } from '../src/store/rows';

const file = () => join(mkdtempSync(join(tmpdir(), 'ampere-bulk-')), 'ampere.db');
const ban = (address: string, now: number, until: number | null, more: Partial<NewBan> = {}): NewBan => ({
  address, family: address.includes(':') ? 6 : 4, now, until, reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source: 'auto', ...more,
});

/** Everything of both tables, in a stable order. */
const dump = (s: Store) => ({
  bans: s.sqlite.prepare('SELECT * FROM bans ORDER BY id').all(),
  hosts: s.sqlite.prepare('SELECT * FROM hosts ORDER BY address').all(),
  types: s.sqlite.prepare('SELECT typeof(until), typeof(started_at), typeof(family), typeof(failures), typeof(origin) FROM bans ORDER BY id').raw().all(),
});

/** The same history in two stores: the list through recordBans in one, recordBan each in the other. */
function both(before: NewBan[], list: NewBan[]): { bulk: Store; each: Store } {
  const bulk = new Store(file());
  const each = new Store(file());
  for (const s of [bulk, each]) for (const b of before) s.bans.recordBan(b);
  bulk.bans.recordBans(list);
  for (const b of list) each.bans.recordBan(b);
  return { bulk, each };
}

test('a list written in bulk: the same rows as one recordBan each (hosts new and known, older bans superseded)', () => {
  const before = [
    ban('192.0.2.1', 1000, 50_000), // active: superseded
    ban('192.0.2.2', 1000, 2000), // ended, not yet marked expired: superseded too, as row by row
    ban('2001:db8::5', 1000, null, { source: 'manual' }), // permanent: superseded
    ban('192.0.2.9', 1000, 60_000), // not in the list: untouched
  ];
  const list: NewBan[] = [];
  // 250 rows: two full chunks of the temporary table's insert and 50 one by one.
  for (let i = 0; i < 250; i++) list.push(ban(`198.51.${100 + (i >> 8)}.${i & 255}`, 5000 + i, 90_000 + i * 0.25, { source: 'fleet', origin: `pbx${i % 3}`, reasonAccount: i % 2 ? 'ünïcødé 😀' : '', failures: i }));
  list.push(ban('192.0.2.1', 6000, 70_000, { source: 'fleet', origin: 'pbx1' }), ban('192.0.2.2', 6000, null, { source: 'fleet', origin: 'pbx2' }), ban('2001:db8::5', 6001, 80_000));
  assert.ok(bulkWritable(list), 'this list takes the bulk path');
  const { bulk, each } = both(before, list);
  assert.deepEqual(dump(bulk), dump(each));
  const active = bulk.bans.activeBans(7000);
  assert.equal(active.length, 254, 'one active ban per host');
  assert.equal(active.filter((b) => b.source === 'fleet').length, 252);
  assert.equal(bulk.bans.banCount('192.0.2.1'), 2);
  assert.deepEqual(bulk.bans.listBans(7000, { all: true, address: '192.0.2.1' }).map((b) => [b.origin, b.liftReason]), [['pbx1', null], [null, 'superseded']]);
  bulk.close();
  each.close();
});

test('a list the statements cannot write as one goes row by row: an address twice, a short list', () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => ban(`203.0.113.${i}`, 1000 + i, 9000));
  assert.equal(bulkWritable(many(BULK_MIN - 1)), false);
  assert.equal(bulkWritable(many(BULK_MIN)), true);
  assert.equal(bulkWritable([...many(20), ban('203.0.113.3', 3000, 9500)]), false);
  // Twice in one list: the second supersedes the first, as row by row.
  const list = [...many(20), ban('203.0.113.3', 3000, 9500, { source: 'fleet', origin: 'pbx1' })];
  const { bulk, each } = both([], list);
  assert.deepEqual(dump(bulk), dump(each));
  assert.equal(bulk.bans.activeBans(4000).length, 20);
  assert.equal(bulk.bans.banCount('203.0.113.3'), 2);
  bulk.close();
  each.close();
});
