import { USAGE_OF } from './usage';
import { countryLookup } from '../geoip';
import { UNKNOWN_COUNTRY } from './top';
import { historyView, type HistoryView } from '../control/views';
import { formatBans } from './bans';
import { hostArg } from './ban';
import { formatTable, formatTime, iso, printJson } from './table';
import { askOrOffline, config, EXIT, note, openOffline, parse, refusal } from './common';

const USAGE = USAGE_OF['history'];

/** `ampere history <ip>`: what Ampere knows of one host: its record, its bans, its recent events. */
export async function historyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('history', args, { json: { type: 'boolean' } }, { min: 1, max: 1, usage: USAGE });
  const address = hostArg('history', positionals[0]);
  const cfg = config();
  const res = await askOrOffline<HistoryView>(cfg, 'GET', `/history?${new URLSearchParams({ address })}`);
  if (res && res.status !== 200) throw refusal(res);
  let h: HistoryView;
  if (res) h = res.body;
  else {
    note('ampere: daemon not running; read from the database');
    const store = openOffline(cfg);
    try { h = historyView(store, address, Date.now()); } finally { store.close(); }
  }
  // With a country database (geoip_db) the host's country; without one, no country at all.
  const countryOf = countryLookup(cfg.geoip_db);
  const country = countryOf ? countryOf(h.address) ?? UNKNOWN_COUNTRY : undefined;
  if (values.json) {
    printJson({
      ...h,
      ...(country !== undefined ? { country } : {}),
      host: h.host ? { ...h.host, firstSeen: iso(h.host.firstSeen), lastSeen: iso(h.host.lastSeen), banUntil: iso(h.host.banUntil) } : null,
      bans: h.bans.map((b) => ({ ...b, since: iso(b.since), until: iso(b.until), liftedAt: iso(b.liftedAt) })),
      events: h.events.map((e) => ({ ...e, at: iso(e.at) })),
    });
    return EXIT.ok;
  }
  if (!h.host && h.bans.length === 0 && h.events.length === 0) {
    process.stdout.write(`no record of ${h.address}${h.penalty ? ` (penalty in memory: ${h.penalty} failures)` : ''}\n`);
    return EXIT.ok;
  }
  const host = h.host;
  const lines = [`host ${h.address}${country !== undefined ? ` (country ${country})` : ''}`];
  if (host) {
    lines.push(`  first seen ${formatTime(host.firstSeen)}, last seen ${formatTime(host.lastSeen)}`);
    lines.push(`  ${host.failures} failures recorded, ${host.banCount} bans, ${host.banned ? `banned ${host.banUntil === null ? 'permanently' : `until ${formatTime(host.banUntil)}`}` : 'not banned'}`);
  }
  if (h.penalty !== null) lines.push(`  failures counted now (findtime window): ${h.penalty}`);
  process.stdout.write(lines.join('\n') + '\n\nbans\n');
  process.stdout.write(h.bans.length ? formatBans(h.bans, true) : '(none)\n');
  process.stdout.write('\nevents (newest first)\n');
  process.stdout.write(h.events.length ? formatTable(h.events, [
    { header: 'AT', get: (e) => formatTime(e.at) },
    { header: 'EVENT', get: (e) => e.kind },
    { header: 'SERVICE', get: (e) => e.service },
    { header: 'TRANSPORT', get: (e) => e.transport },
    { header: 'ACCOUNT', get: (e) => e.account },
  ]) : '(none)\n');
  return EXIT.ok;
}
