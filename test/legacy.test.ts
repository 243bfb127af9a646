import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { decodeLegacyAddr, encodeLegacyAddr, readLegacyDatabase } from '../src/legacy';
import { applyLegacy } from '../src/legacy/import';
import { notSingleHost } from '../src/net/ip';

const ok = (v: unknown) => { const d = decodeLegacyAddr(v); assert.ok(d.ok, `${String(v)}: ${!d.ok ? d.reason : ''}`); return d.address; };
const bad = (v: unknown) => { const d = decodeLegacyAddr(v); assert.equal(d.ok, false, `${String(v)} should be refused`); return d.ok ? '' : d.reason; };

test('inet_addr byte order: 1.2.3.4 stored as 0x04030201 = 67305985', () => {
  assert.equal(ok(67305985), '1.2.3.4');
  assert.equal(ok(0x04030201), '1.2.3.4');
  assert.equal(ok(BigInt(67305985)), '1.2.3.4');
  assert.equal(ok('67305985'), '1.2.3.4', 'numeric text (SQLite dynamic typing)');
  assert.equal(ok(0x0100007f), '127.0.0.1');
  assert.equal(ok(0x0a00a8c0), '192.168.0.10');
  assert.notEqual(ok(67305985), '4.3.2.1', 'not the naive (original, buggy) order');
});

test('negative values: the signed 32-bit reading (last octet 128 or more)', () => {
  // 1.2.3.200 = 0xC8030201: as a signed int -939326975
  assert.equal(ok(-939326975), '1.2.3.200');
  assert.equal(ok(0xc8030201), '1.2.3.200');
  assert.equal(ok(-16777215), '1.0.0.255'); // 0xFF000001
  assert.equal(ok(-(2 ** 31) + 1), '1.0.0.128'); // 0x80000001
  assert.match(bad(-(2 ** 31)), /0\.0\.0\.128, not a single host/);
});

test('rows that do not decode are refused with a reason', () => {
  assert.match(bad(2 ** 32), /out of 32-bit range/);
  assert.match(bad(-(2 ** 31) - 1), /out of 32-bit range/);
  assert.match(bad(BigInt(2) ** BigInt(40)), /out of 32-bit range/);
  assert.match(bad(1.5), /not an integer/);
  assert.match(bad('1.2.3.4'), /not an integer/);
  assert.match(bad(null), /empty/);
  assert.match(bad(Buffer.from([1, 2, 3, 4])), /not an integer/);
  assert.match(bad(0), /0\.0\.0\.0/);
  assert.match(bad(-1), /broadcast/);
  assert.match(bad(0xffffffff), /broadcast/);
});

test('encode is the inverse of decode over a spread of addresses', () => {
  for (const a of ['1.2.3.4', '10.0.0.1', '203.0.113.250', '223.254.253.252', '1.0.0.0', '128.0.0.0']) {
    assert.equal(ok(encodeLegacyAddr(a)), a);
  }
  let x = 12345;
  for (let i = 0; i < 2000; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const a = [x & 255, (x >>> 8) & 255, (x >>> 16) & 255, x >>> 24].join('.');
    if (notSingleHost(a, 4)) { assert.match(bad(encodeLegacyAddr(a)), /not a single host/); continue; }
    assert.equal(ok(encodeLegacyAddr(a)), a);
    assert.equal(ok(encodeLegacyAddr(a) | 0), a, 'signed reading too');
  }
});

test('readLegacyDatabase: known rows decode to the right addresses, bad rows reported', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-legacy-'));
  const file = join(dir, 'ampere.db');
  const db = new Database(file);
  db.exec('CREATE TABLE filter(addr INT PRIMARY KEY NOT NULL, id TEXT)');
  const ins = db.prepare('INSERT INTO filter(addr, id) VALUES (?, ?)');
  ins.run(67305985, '100');              // 1.2.3.4
  ins.run(-939326975, "'; DROP TABLE x;--"); // 1.2.3.200 (signed)
  ins.run(2 ** 32 + 5, 'big');            // out of range
  ins.run('garbage', 'text');             // not a number
  ins.run(0, 'zero');                     // 0.0.0.0
  ins.run(encodeLegacyAddr('203.0.113.9'), null);
  db.close();
  const r = readLegacyDatabase(file);
  assert.equal(r.rows, 6);
  assert.deepEqual(r.entries.map((e) => e.address), ['1.2.3.4', '1.2.3.200', '203.0.113.9']);
  assert.equal(r.entries[1].account, "'; DROP TABLE x;--");
  assert.deepEqual(r.skipped.map((s) => s.row), [3, 4, 5]);
  assert.match(r.skipped[0].reason, /out of 32-bit range/);
  assert.match(r.skipped[1].reason, /not an integer/);

  const notLegacy = join(dir, 'other.db');
  new Database(notLegacy).exec('CREATE TABLE t(x)');
  assert.throws(() => readLegacyDatabase(notLegacy), /no table "filter"/);
  assert.throws(() => readLegacyDatabase(join(dir, 'missing.db')), /cannot open/);
});

test('applyLegacy: allowed and already banned addresses are not banned again', () => {
  const banned: string[] = [];
  const r = applyLegacy(
    [{ address: '1.2.3.4', account: '' }, { address: '10.0.0.1', account: '' }, { address: '5.6.7.8', account: '' }, { address: 'x; rm -rf /', account: '' }],
    { allowed: (a) => (a.startsWith('10.') ? 'allowed (10.0.0.0/8)' : undefined), isBanned: (a) => a === '5.6.7.8', ban: (e) => banned.push(e.address) },
  );
  assert.deepEqual(banned, ['1.2.3.4']);
  assert.deepEqual(r.imported, ['1.2.3.4']);
  assert.deepEqual(r.alreadyBanned, ['5.6.7.8']);
  assert.deepEqual(r.refused.map((x) => x.reason), ['allowed (10.0.0.0/8)', 'not an IPv4 address']);
});
