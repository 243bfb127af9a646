/**
 * A node joining a fleet whose table holds many active bans (issue 15's scale): a throwaway
 * PostgreSQL cluster gets N ban decisions from peer pbx1 (IPv4 from 100.64.0.0/10, a day long,
 * created 1 ms apart), then a real daemon (pbx2, ipset backend, its own namespace) starts and
 * catches up. Prints the time from "fleet connected" to its kernel set holding all N, the
 * daemon's CPU over that time, and its RSS (and peak). The daemon is the compiled one with the
 * launcher's node flags, as `ampere run` starts it. Not part of `npm run bench`:
 *
 *   node --import tsx bench/catchup-fleet.ts [--bans=100000] [--profile=DIR]
 *
 * --profile: the daemon runs with --cpu-prof into DIR, and where its time went is printed.
 *
 * Needs root (namespaces, ipset) and Debian's postgresql.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { build } from './lib/build';
import { catchUpRun } from './lib/scale';
import { scriptArg } from './lib/sys';
import type { Ctx } from './sections/common';


async function main(): Promise<void> {
  const n = Number(scriptArg('bans', '100000'));
  const profileDir = scriptArg('profile', '') ? resolve(scriptArg('profile', '')) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const ctx: Ctx = { quick: false, log: (s) => console.log(s), profileDir };
  await build((s) => console.log(s));
  const r = await catchUpRun(n, ctx);
  console.log(`${n} decisions of pbx1 in the fleet table in ${Math.round(r.insertMs)} ms`);
  console.log(`catch-up of ${n}: "fleet connected" -> kernel holds all ${Math.round(r.tookMs)} ms; daemon CPU ${r.cpuMs} ms; RSS 2 s later ${r.rss.toFixed(1)} MB, peak ${r.peak.toFixed(1)} MB`);
  console.log(`RSS during the catch-up: highest ${r.top.rss.toFixed(1)} MB at ${Math.round(r.top.atMs)} ms (kernel holding ${r.top.held}); every 5 s: ${r.rssAt.join(', ')}`);
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
