import { USAGE_OF } from './usage';
import { dirname, join, resolve } from 'node:path';
import type { BackupResult } from '../backup';
import { formatTime, iso, printJson } from './table';
import { askOrOffline, config, EXIT, note, openOffline, parse, refusal } from './common';

const USAGE = USAGE_OF['backup'];

/**
 * `ampere backup`: an online, consistent copy of the live database (SQLite's backup API) named
 * ampere-<UTC time>.db, made by the running daemon on its own connection; without a daemon,
 * made here. Directory: --to, else AMPERE_BACKUP_DIR, else backups/ beside the database.
 */
export async function backupCommand(args: string[]): Promise<number> {
  const { values } = parse('backup', args, { to: { type: 'string' }, json: { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE });
  const cfg = config();
  const dir = resolve(values.to ?? (cfg.backup_dir || join(dirname(resolve(cfg.db)), 'backups')));
  const res = await askOrOffline<BackupResult>(cfg, 'POST', '/backup', { dir }, 600_000);
  let r: BackupResult;
  if (res) {
    if (res.status !== 200) throw refusal(res);
    r = res.body;
  } else {
    note('ampere: daemon not running; backing up the database directly');
    const { backupDatabase } = require('../backup') as typeof import('../backup');
    const store = openOffline(cfg);
    try { r = await backupDatabase(store.sqlite, dir); } finally { store.close(); }
  }
  if (values.json) printJson({ ...r, at: iso(r.at) });
  else process.stdout.write(`backup ${r.path}: ${r.bytes} bytes, ${r.activeBans} active bans, ${r.bans} bans in history, ${r.hosts} hosts; taken ${formatTime(r.at)} in ${r.ms} ms\n`);
  return EXIT.ok;
}
