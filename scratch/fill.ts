import Database from 'better-sqlite3';
import { Store } from '../src/store';
import { listBanPage } from '../src/control/views';
const DAY = 86_400_000;
const path = '/tmp/fill-test.db';
require('fs').rmSync(path, { force: true }); require('fs').rmSync(path + '-wal', { force: true });
let t = performance.now();
new Store(path).close();
const c = new Database(path);
const n = 1_000_000, hosts = 100_000, now = Date.now();
c.exec('BEGIN');
c.prepare(`WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)
    INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until)
    SELECT '10.' || ((i >> 16) & 255) || '.' || ((i >> 8) & 255) || '.' || (i & 255), 4, ?, ?, 3, 10, 1, ? FROM k`).run(hosts, now - DAY, now, now + DAY);
c.prepare(`WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < @n - 1)
    INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source, lifted_at, lift_reason)
    SELECT '10.' || (((i % @hosts) >> 16) & 255) || '.' || (((i % @hosts) >> 8) & 255) || '.' || ((i % @hosts) & 255), 4, @start + i,
      iif(i < @n - @hosts, @start + i + 3600000, @now + 86400000), 'ChallengeResponseFailed', 'PJSIP', '100', 3, 'auto',
      iif(i < @n - @hosts, @start + i + 3600000, NULL), iif(i < @n - @hosts, 'expired', NULL) FROM k`)
    .run({ n, hosts, start: now - 3 * DAY, now });
c.exec('COMMIT'); c.close();
console.log('fill', performance.now() - t); t = performance.now();
const s = new Store(path);
if (process.argv[2] === "skip") {}
let before: number | null = null, rows = 0, pages = 0, maxMs = 0;
do { const t1 = performance.now(); const p = listBanPage(s, now, { all: true, limit: 5000, before: before ?? undefined }); const ms = performance.now() - t1; maxMs = Math.max(maxMs, ms); JSON.stringify(p); rows += p.bans.length; before = p.next; pages++; } while (before !== null);
console.log('page all', performance.now() - t, rows, pages, 'max page ms', maxMs); t = performance.now();
before = null; rows = 0; pages = 0; maxMs = 0;
do { const t1 = performance.now(); const p = listBanPage(s, now, { limit: 5000, before: before ?? undefined }); maxMs = Math.max(maxMs, performance.now() - t1); rows += p.bans.length; before = p.next; pages++; } while (before !== null);
console.log('page active', performance.now() - t, rows, pages, 'max page ms', maxMs);
{
  const { listBanPageJson } = require('../src/control/views');
  let t = performance.now(); let before: number | null = null, rows = 0, pages = 0, maxMs = 0;
  do { const t1 = performance.now(); const j = listBanPageJson(s, now, { all: true, limit: 2000, before: before ?? undefined }); maxMs = Math.max(maxMs, performance.now() - t1); const p = JSON.parse(j); rows += p.bans.length; before = p.next; pages++; } while (before !== null);
  console.log('json all', performance.now() - t, rows, pages, 'max page ms', maxMs);
}
