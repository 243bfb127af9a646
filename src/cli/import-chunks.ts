import type { Config } from '../config';
import { MAX_IMPORT_ENTRIES, type ImportReport } from '../legacy/import';
import { askOrOffline, CliError, EXIT, note, refusal } from './common';

/**
 * An import's entries sent to the running daemon (POST /<command>) in requests of at most
 * MAX_IMPORT_ENTRIES, one after the other, their reports merged: the daemon never holds a
 * whole large import at once. Null when no daemon runs (nothing was sent).
 */
export async function importThroughDaemon<E>(cfg: Config, command: string, entries: E[], extra: Record<string, unknown> = {}): Promise<{ report: ImportReport; ok: boolean } | null> {
  const report: ImportReport = { imported: [], alreadyBanned: [], refused: [] };
  let ok = true;
  for (let i = 0; i === 0 || i < entries.length; i += MAX_IMPORT_ENTRIES) {
    const res = await askOrOffline<ImportReport>(cfg, 'POST', `/${command}`, { entries: entries.slice(i, i + MAX_IMPORT_ENTRIES), ...extra }, 600_000);
    if (!res) {
      if (i === 0) return null;
      throw new CliError(`${command}: the daemon stopped answering after ${i} of ${entries.length} entries (those are imported); run the import again for the rest`);
    }
    // A 500 carries the report when only the kernel failed; any other answer is an error.
    if ((res.status !== 200 && res.status !== 500) || !Array.isArray(res.body.imported)) throw refusal(res);
    if (res.status === 500) ok = false;
    for (const k of ['imported', 'alreadyBanned', 'refused'] as const) for (const x of res.body[k]) (report[k] as unknown[]).push(x);
  }
  return { report, ok };
}

/**
 * An import done: a dry run (dryRun gives its report, nothing changes), through the running
 * daemon, or (none running) into the database by offline(). What `applied` says and the exit
 * code follow from which it was.
 */
export async function runImport<E>(
  cfg: Config, command: string, entries: E[], extra: Record<string, unknown>, how: { dryRun: (() => ImportReport) | null; offline: () => ImportReport },
): Promise<{ report: ImportReport; applied: string; code: number }> {
  if (how.dryRun) return { report: how.dryRun(), applied: 'dry run: nothing changed', code: EXIT.ok };
  const res = await importThroughDaemon(cfg, command, entries, extra);
  if (res) {
    const applied = res.ok ? 'in the kernel now (through the running daemon)' : 'stored, but the kernel command failed (the daemon reloads the kernel from the database)';
    return { report: res.report, applied, code: res.ok ? EXIT.ok : EXIT.fail };
  }
  note('ampere: daemon not running; importing into the database (the kernel gets the bans when "ampere run" starts)');
  return { report: how.offline(), applied: 'in the database; applied to the kernel when the daemon starts', code: EXIT.ok };
}
