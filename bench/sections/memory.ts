/**
 * 6. Memory: the real daemon (ipset backend, default max_hosts) receives one InvalidAccountID
 * from each of N distinct (spoofed) sources, as fast as its socket takes them. Then its
 * resident memory (VmRSS, and the peak VmHWM) from /proc, and whether it still decides:
 * a new host is banned by its 3rd failure (kernel checked), and so is the last host of the
 * flood with 2 more (it already has one). The first host of the flood is no longer tracked
 * once more than max_hosts came after it (the penalty table is bounded by design).
 */
import { distinctSources } from '../lib/data';
import { fmtBytes, median, spread, type Row } from '../lib/report';
import { removeTempDir, sleep, tempDir } from '../lib/sys';
import { join } from 'node:path';
import { LAUNCH_NODE_FLAGS } from '../../src/cli/launch';
import { openSqlite } from '../../src/store/open';
import { startRunning, type Ctx, type Running } from './common';
import { memoryOf } from '../lib/procs';

const MARKER = '10.233.0.251';

async function banned(r: Running, address: string): Promise<boolean> {
  const set = address.includes(':') ? 'ampere-v6' : 'ampere-v4';
  return (await r.lab.pbx.exec('ipset', ['test', set, address])).code === 0;
}

async function failAndWait(r: Running, address: string, n: number): Promise<boolean> {
  const seen = r.daemon.next((l) => l.msg === 'ban' && l.address === address, 3000).then(() => true, () => false);
  await r.agent.call('fail', { addrs: [address], n });
  const logged = await seen;
  await sleep(50);
  return logged && (await banned(r, address));
}

interface MemRun { rss: number; peak: number; base: number; rate: number; fresh: boolean; last: boolean; first: boolean }

async function flood(ctx: Ctx, file: string, n: number, src: { last: string[]; first: string[] }, launchHeap: boolean): Promise<MemRun> {
  // A database the daemon has run on before (migrated), as after any restart: a first start
  // on an empty one also loads Drizzle's migrator (~8 MB more RSS).
  const dir = tempDir('memdb');
  openSqlite(join(dir, 'ampere.db')).close();
  const r = await startRunning({ backend: 'ipset', launchHeap, dir }).catch((err) => { removeTempDir(dir); throw err; });
  try {
    await sleep(300);
    const base = memoryOf(r.daemon.pid).rss;
    const done = r.daemon.next((l) => l.msg === 'ban' && l.address === MARKER, 900_000);
    const s = await r.agent.call('stream', { file }, 900_000);
    await r.agent.call('fail', { addrs: [MARKER], n: 3 });
    const line = await done;
    const rate = n / (Number(line.at - BigInt(s.t0)) / 1e9);
    await sleep(1500); // the last history batch and the status file
    const m = memoryOf(r.daemon.pid);
    const fresh = await failAndWait(r, '10.233.0.252', 3);
    const last = await failAndWait(r, src.last[0], 2);
    const first = await failAndWait(r, src.first[0], 2);
    const flags = launchHeap ? `${LAUNCH_NODE_FLAGS.join(' ')}, as launched` : "Node's defaults";
    ctx.log(`  memory (${flags}): ${n} sources at ${Math.round(rate)}/s; RSS ${fmtBytes(m.rss)} MB (peak ${fmtBytes(m.peak)} MB, at start ${fmtBytes(base)} MB); new host banned ${fresh}, last flood host banned ${last}, first flood host banned ${first}`);
    return { rss: m.rss, peak: m.peak, base, rate, fresh, last, first };
  } finally {
    await r.close();
    removeTempDir(dir);
  }
}

export async function memorySection(ctx: Ctx): Promise<Row[]> {
  const n = ctx.quick ? 100_000 : 1_000_000;
  const runs = ctx.quick ? 1 : 2;
  const dir = tempDir('mem');
  const rows: Row[] = [];
  const mb = (xs: number[]) => xs.map((x) => x / 1048576);
  try {
    const src = distinctSources(`${dir}/distinct.ami`, n);
    // The daemon as its launchers start it (the target's row), then with Node's default heap
    // limit for comparison (what `node dist/cli.js run` by hand gives).
    const configs = [
      { launchHeap: true, runs },
      ...(ctx.quick ? [] : [{ launchHeap: false, runs: 1 }]),
    ];
    for (const cfg of configs) {
      const res: MemRun[] = [];
      for (let k = 0; k < cfg.runs; k++) res.push(await flood(ctx, src.file, n, src, cfg.launchHeap));
      const rss = mb(res.map((x) => x.rss));
      const peak = mb(res.map((x) => x.peak));
      const rates = res.map((x) => x.rate);
      const correct = res.every((x) => x.fresh && x.last);
      const variant = cfg.launchHeap ? `ipset, as launched (${LAUNCH_NODE_FLAGS.join(' ')})` : "ipset, Node's default heap limit";
      const how = `daemon process on a migrated database, max_hosts 200,000 (default), ${n.toLocaleString('en-US')} events as fast as the socket takes them (${Math.round(median(rates)).toLocaleString('en-US')}/s); 1.5 s after the last`;
      // The target is the daemon's as launched; the other row is there to compare.
      const target = cfg.launchHeap ? { target: '≤ 150 MB', met: median(rss) <= 150 && correct } : {};
      rows.push({ section: '6 Memory', measure: `RSS after ${n.toLocaleString('en-US')} distinct sources, one failure each`, variant, value: median(rss), unit: 'MB', spread: spread(rss), runs: res.length, digits: 1, how, ...target });
      rows.push({ section: '6 Memory', measure: 'peak RSS during that flood (VmHWM)', variant, value: median(peak), unit: 'MB', spread: spread(peak), runs: res.length, digits: 1, how: `RSS at start ${median(mb(res.map((x) => x.base))).toFixed(1)} MB` });
      rows.push({ section: '6 Memory', measure: "still deciding afterwards: a new host and the flood's last host banned by their 3rd failure (kernel checked)", variant, value: correct ? 1 : 0, text: correct ? 'yes' : '**no**', unit: '', runs: res.length, how: `the flood's first host ${res.every((x) => !x.first) ? 'forgotten (the table holds the 200,000 most recent), as designed' : 'still tracked'}` });
    }
  } finally {
    removeTempDir(dir);
  }
  return rows;
}
