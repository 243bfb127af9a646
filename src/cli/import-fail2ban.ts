import { resolve } from 'node:path';
import type { Config } from '../config';
import { applyImportBans, type ImportBan } from '../fail2ban/apply';
import { readFail2banDatabase, type Fail2banRead } from '../fail2ban';
import type { ImportReport } from '../legacy/import';
import { runImport } from './import-chunks';
import { CliError, config, openOffline, parse } from './common';
import { formatTable, iso, printJson } from './table';
import { offlineAllowList } from '../allow';
import { USAGE_OF } from './usage';

/**
 * `ampere import-fail2ban <db>`: fail2ban's bans still in force in a jail (default asterisk)
 * become Ampere bans (source "fail2ban") for what is left of each. Through the running daemon
 * (in the kernel when the command returns), else into the database for the next start.
 */
export async function importFail2banCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('import-fail2ban', args, { jail: { type: 'string' }, 'all-jails': { type: 'boolean' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } }, { min: 1, max: 1, usage: USAGE_OF['import-fail2ban'] });
  const file = resolve(positionals[0]);
  const jail = values['all-jails'] ? null : values.jail ?? 'asterisk';
  const now = Date.now();
  let read: Fail2banRead;
  try { read = readFail2banDatabase(file, jail, now); } catch (err) { throw new CliError(`import-fail2ban: ${(err as Error).message}`); }
  const entries: ImportBan[] = read.entries.map((e) => ({ address: e.address, until: e.until, jail: e.jail }));
  const cfg = config();
  const { report, applied, code } = await runImport(cfg, 'import-fail2ban', entries, {}, {
    dryRun: values['dry-run'] ? () => offline(cfg, entries, now, true) : null,
    offline: () => offline(cfg, entries, now),
  });
  const skipped = [...read.skipped.map((s) => ({ address: s.ip, jail: s.jail, reason: s.reason })), ...report.refused.map((r) => ({ ...r, jail: '' }))];
  if (values.json) {
    printJson({ file, table: read.table, jail: jail ?? 'all', rows: read.rows, imported: report.imported, alreadyBanned: report.alreadyBanned, skipped, dryRun: !!values['dry-run'], applied,
      bans: read.entries.map((e) => ({ address: e.address, jail: e.jail, until: iso(e.until), bancount: e.bancount })) });
    return code;
  }
  process.stdout.write(`${file} (jail ${jail ?? 'all'}, table ${read.table}): ${read.rows} rows; ${report.imported.length} imported, ${report.alreadyBanned.length} already banned, ${skipped.length} skipped\n${applied}\n`);
  if (skipped.length) process.stdout.write('\nskipped\n' + formatTable(skipped, [{ header: 'ADDRESS', get: (s) => s.address }, { header: 'REASON', get: (s) => s.reason }]));
  return code;
}

/** No daemon (or a dry run): into the database, checked against the same allow list the daemon would use. */
function offline(cfg: Config, entries: ImportBan[], now: number, dryRun = false): ImportReport {
  // A dry run checks the configured allow list only and opens no database.
  if (dryRun) { const allow = offlineAllowList(cfg, null); return applyImportBans(entries, { allowed: (a, f) => allow.refusal(a, f), isBanned: () => false, ban: () => {} }, now); }
  const store = openOffline(cfg, { create: true });
  try {
    const allow = offlineAllowList(cfg, store.allowed);
    return applyImportBans(entries, {
      allowed: (a, f) => allow.refusal(a, f),
      isBanned: (a) => store.bans.isBanned(a, now),
      ban: (address, family, forMs, jail) => { store.bans.recordBan({ address, family, now, until: forMs === null ? null : now + forMs, source: 'fail2ban', reasonKind: 'fail2ban', reasonService: jail, reasonAccount: '', failures: 0 }); },
    }, now);
  } finally { store.close(); }
}
