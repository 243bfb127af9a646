/**
 * Ampere's benchmarks: `npm run bench` (all, writes BENCHMARKS.md), `npm run bench -- --quick`
 * (reduced, under a minute, prints only). Options:
 *   --quick            reduced sizes and runs
 *   --only=a,b         run only these sections (reaction, attempts, restore, packets, throughput, memory, fleet)
 *   --out=FILE         write the report there (default: BENCHMARKS.md for a full run, nothing for --quick)
 *   --profile=DIR      run the daemons with node --cpu-prof into DIR and log where their time went
 * Needs root (network namespaces, iptables, ipset), gcc, and the repository's node_modules.
 */
import { cpus, totalmem, release } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build, ROOT } from './lib/build';
import { findings, METHOD, RECONCILER_COST, targets } from './lib/notes';
import { table, type Row } from './lib/report';
import { installCleanup, sh } from './lib/sys';
import type { Ctx, Section } from './sections/common';
import { reactionSection } from './sections/reaction';
import { attemptsSection } from './sections/attempts';
import { restoreSection } from './sections/restore';
import { packetsSection } from './sections/packets';
import { throughputSection } from './sections/throughput';
import { memorySection } from './sections/memory';
import { stagesSection } from './sections/stages';
import { fleetSection } from './sections/fleet';

const SECTIONS: [string, Section][] = [
  ['reaction', reactionSection],
  ['attempts', attemptsSection],
  ['restore', restoreSection],
  ['packets', packetsSection],
  ['throughput', throughputSection],
  ['stages', stagesSection],
  ['memory', memorySection],
  ['fleet', fleetSection],
];

function arg(name: string): string | undefined {
  const a = process.argv.slice(2).find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  if (a === undefined) return undefined;
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : '';
}

/** A command's output for the report's header; '?' when it fails. */
async function said(cmd: string, args: string[]): Promise<string> {
  const r = await sh(cmd, args);
  return r.code === 0 ? r.stdout.trim() : '?';
}

async function main(): Promise<number> {
  const quick = arg('quick') !== undefined;
  const only = arg('only')?.split(',').filter(Boolean);
  const out = arg('out') ?? (quick || only ? undefined : join(ROOT, 'BENCHMARKS.md'));
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (network namespaces, iptables, ipset)');
    return 1;
  }
  installCleanup();
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${s}\n`);
  await build(log);
  const profileDir = arg('profile') || undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const ctx: Ctx = { quick, log, profileDir: profileDir && resolve(profileDir) };
  const rows: Row[] = [];
  const failed: string[] = [];
  for (const [name, fn] of SECTIONS) {
    if (only && !only.includes(name)) continue;
    log(`${name}...`);
    try {
      rows.push(...(await fn(ctx)));
    } catch (err) {
      // One broken section must not cost the others' figures.
      log(`${name} FAILED: ${err instanceof Error ? err.stack : String(err)}`);
      failed.push(name);
      rows.push({ section: name, measure: `**failed**: ${String(err instanceof Error ? err.message : err).split('\n')[0].slice(0, 200)}`, variant: '', value: NaN, unit: '', runs: 0, text: '–' });
    }
  }
  const md = table(rows);
  console.log(md);
  const seconds = Math.round((performance.now() - t0) / 1000);
  log(`done in ${seconds} s`);
  if (out !== undefined && out !== '') {
    const [iptables, ipset, commit, dirty] = await Promise.all([
      said('iptables', ['-V']), said('ipset', ['-v']), said('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']), said('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src']),
    ]);
    const head = [
      '# Benchmarks',
      '',
      'Ampere against the way the original Ampere worked (one iptables process and one rule per host), measured side by side. Regenerate with `npm run bench` (about 10 minutes, root); `npm run bench -- --quick` runs a reduced version in under a minute.',
      '',
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${Math.round(totalmem() / 2 ** 30)} GB, Linux ${release()}, Node ${process.version}, ${iptables}, ${ipset.split('\n')[0]}.`,
      `Date: ${new Date().toISOString()}. Command: \`npm run bench${process.argv.slice(2).length ? ' -- ' + process.argv.slice(2).join(' ') : ''}\` (${seconds} s). Code: ${commit}${dirty ? ' with uncommitted changes in src/' : ''}.`,
    ];
    writeFileSync(out, [head.join('\n'), md, targets(rows), findings(rows), RECONCILER_COST, METHOD].join('\n\n'));
    log(`wrote ${out}`);
  }
  // The report keeps the other sections' figures; the exit status says it is incomplete.
  if (failed.length) log(`failed: ${failed.join(', ')}`);
  return failed.length ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
