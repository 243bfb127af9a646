import { USAGE_OF } from './usage';
import { resolve } from 'node:path';
import { readLegacyDatabase, type LegacyRead } from '../legacy';
import { applyLegacy } from '../legacy/import';
import { banFor } from './ban';
import { formatTable, printJson } from './table';
import { runImport } from './import-chunks';
import { offlineAllowList } from '../allow';
import { CliError, config, openOffline, parse } from './common';

const USAGE = USAGE_OF['import-legacy'];

/**
 * `ampere import-legacy <file>`: the bans of the original C Ampere's database (table filter,
 * addresses as inet_addr() values) become bans here, decoded in the right byte order.
 * With the daemon running they are in the kernel when the command returns; without it they
 * go into the database and reach the kernel when `ampere run` starts. The original's bans
 * were permanent, and so are these unless --for is given.
 */
export async function importLegacyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('import-legacy', args, { for: { type: 'string' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } }, { min: 1, max: 1, usage: USAGE });
  const forMs = values.for === undefined ? 0 : banFor(values.for);
  const file = resolve(positionals[0]);
  let read: LegacyRead;
  try { read = readLegacyDatabase(file); } catch (err) { throw new CliError(`import-legacy: ${(err as Error).message}`); }
  const cfg = config();

  const { report, applied, code } = await runImport(cfg, 'import-legacy', read.entries, { forMs }, {
    dryRun: values['dry-run'] ? () => ({ imported: read.entries.map((e) => e.address), alreadyBanned: [], refused: [] }) : null,
    offline: () => {
      const store = openOffline(cfg, { create: true });
      try {
        const allow = offlineAllowList(cfg, store.allowed);
        const now = Date.now();
        return applyLegacy(read.entries, {
          allowed: (a) => allow.refusal(a, 4),
          isBanned: (a) => store.bans.isBanned(a, now),
          ban: (e) => { store.bans.recordBan({ address: e.address, family: 4, now, until: forMs ? now + forMs : null, source: 'legacy', reasonKind: 'legacy', reasonService: '', reasonAccount: e.account, failures: 0 }); },
        });
      } finally { store.close(); }
    },
  });

  if (values.json) {
    printJson({ file, rows: read.rows, imported: report.imported, alreadyBanned: report.alreadyBanned, refused: report.refused, skipped: read.skipped, dryRun: !!values['dry-run'], applied });
  } else {
    process.stdout.write(`${file}: ${read.rows} rows; ${report.imported.length} imported, ${report.alreadyBanned.length} already banned, ${report.refused.length} refused, ${read.skipped.length} skipped\n${applied}\n`);
    if (read.skipped.length) {
      process.stdout.write('\nskipped rows (not a valid address)\n' + formatTable(read.skipped, [
        { header: 'ROW', get: (s) => s.row, right: true },
        { header: 'ADDR', get: (s) => s.value },
        { header: 'REASON', get: (s) => s.reason },
      ]));
    }
    if (report.refused.length) {
      process.stdout.write('\nrefused\n' + formatTable(report.refused, [
        { header: 'ADDRESS', get: (r) => r.address },
        { header: 'REASON', get: (r) => r.reason },
      ]));
    }
  }
  return code;
}
