import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store, type NewBan } from '../src/store';
import { LocalFleetState } from '../src/fleet/local';

/** The fleet outbox in a real SQLite file: which local ban rows a node publishes. */
const dir = mkdtempSync(join(tmpdir(), 'ampere-outbox-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ban = (address: string, source: NewBan['source']): NewBan => ({
  address, family: 4, now: 1_000, until: 3_601_000, reasonKind: 'InvalidPassword', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source, origin: source === 'fleet' ? 'pbx2' : null,
});

test('every local ban is published, an adopted kernel ban too; a peer\'s ban never again', () => {
  const store = new Store(join(dir, 'a.db'));
  try {
    const local = new LocalFleetState(store.sqlite);
    const sources = ['auto', 'manual', 'legacy', 'fail2ban', 'kernel', 'fleet'] as const;
    sources.forEach((s, i) => store.bans.recordBan(ban(`192.0.2.${i + 1}`, s)));
    assert.deepEqual(local.pending(100).map((r) => [r.action, r.address, r.source]), sources.filter((s) => s !== 'fleet').map((s) => ['ban', `192.0.2.${sources.indexOf(s) + 1}`, s]));
  } finally { store.close(); }
});

test('a database made with the older trigger (adopted bans left out) gets the current one at the next start', () => {
  const file = join(dir, 'b.db');
  const store = new Store(file);
  try {
    new LocalFleetState(store.sqlite);
    store.sqlite.exec(`DROP TRIGGER fleet_outbox_ban`);
    store.sqlite.exec(`CREATE TRIGGER fleet_outbox_ban AFTER INSERT ON bans WHEN NEW.source NOT IN ('fleet', 'kernel') BEGIN
      INSERT INTO fleet_outbox (action, address, until, reason_kind, reason_service, reason_account, failures, source, at)
        VALUES ('ban', NEW.address, NEW.until, NEW.reason_kind, NEW.reason_service, NEW.reason_account, NEW.failures, NEW.source, NEW.started_at); END`);
    store.bans.recordBan(ban('198.51.100.1', 'kernel'));
    assert.equal(new LocalFleetState(store.sqlite).backlog(), 0, 'the old rule left it out');
    store.bans.recordBan(ban('198.51.100.2', 'kernel'));
    assert.deepEqual(new LocalFleetState(store.sqlite).pending(10).map((r) => r.address), ['198.51.100.2'], 'the trigger was made again');
  } finally { store.close(); }
});
