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
import { startRunning, type Ctx, type Running } from './common';

const MARKER = '10.233.0.251';

async function banned(r: Running, address: string): Promise<boolean> {
  const set = address.includes(':') ? 'ampere-v6' : 'ampere-v4';
  return (await r.lab.pbx.exec('ipset', ['test', set, address])).code === 0;
}

async function failAndWait(r: Running, address: string, n: number): Promise<boolean> {
  const seen = r.daemon.waitFor((l) => l.msg === 'ban' && l.address === address, 3000).then(() => true, () => false);
  await r.agent.call('fail', { addrs: [address], n });
  const logged = await seen;
  await sleep(50);
  return logged && (await banned(r, address));
}

export async function memorySection(ctx: Ctx): Promise<Row[]> {
  const n = ctx.quick ? 100_000 : 1_000_000;
  const runs = ctx.quick ? 1 : 2;
  const dir = tempDir('mem');
  const rows: Row[] = [];
  try {
    const src = distinctSources(`${dir}/distinct.ami`, n);
    const rss: number[] = [];
    const peak: number[] = [];
    const rates: number[] = [];
    const base: number[] = [];
    let correct = true;
    let firstForgotten = true;
    for (let k = 0; k < runs; k++) {
      const r = await startRunning({ backend: 'ipset' });
      try {
        await sleep(300);
        base.push(r.daemon.memory().rss);
        const done = r.daemon.waitFor((l) => l.msg === 'ban' && l.address === MARKER, 900_000);
        const s = await r.agent.call('stream', { file: src.file }, 900_000);
        await r.agent.call('fail', { addrs: [MARKER], n: 3 });
        const line = await done;
        rates.push(n / (Number(line.at - BigInt(s.t0)) / 1e9));
        await sleep(1000); // the last history batch and the status file
        const m = r.daemon.memory();
        rss.push(m.rss);
        peak.push(m.peak);
        const fresh = await failAndWait(r, '10.233.0.252', 3);
        const last = await failAndWait(r, src.last[0], 2);
        const first = await failAndWait(r, src.first[0], 2);
        ctx.log(`  memory run ${k + 1}: ${n} sources at ${Math.round(rates[k])}/s; RSS ${fmtBytes(m.rss)} MB (peak ${fmtBytes(m.peak)} MB, at start ${fmtBytes(base[k])} MB); new host banned ${fresh}, last flood host banned ${last}, first flood host banned ${first}`);
        correct &&= fresh && last;
        firstForgotten &&= !first;
      } finally {
        await r.close();
      }
    }
    const mb = (xs: number[]) => xs.map((x) => x / 1048576);
    const how = `daemon process, max_hosts 200,000 (default), ${n.toLocaleString('en-US')} events as fast as the socket takes them`;
    rows.push({ section: '6 Memory', measure: `RSS after ${n.toLocaleString('en-US')} distinct sources, one failure each`, variant: 'ipset', value: median(mb(rss)), unit: 'MB', spread: spread(mb(rss)), runs, digits: 1, how, target: '≤ 150 MB', met: median(mb(rss)) <= 150 && correct });
    rows.push({ section: '6 Memory', measure: 'peak RSS during that flood (VmHWM)', variant: 'ipset', value: median(mb(peak)), unit: 'MB', spread: spread(mb(peak)), runs, digits: 1, how: `RSS at start ${median(mb(base)).toFixed(1)} MB` });
    rows.push({ section: '6 Memory', measure: 'still deciding afterwards: a new host and the flood\'s last host banned by their 3rd failure', variant: 'ipset', value: correct ? 1 : 0, text: correct ? 'yes' : 'no', unit: '', runs, how: `the flood's first host ${firstForgotten ? 'forgotten (bounded table), as designed' : 'still tracked'}` });
    rows.push({ section: '6 Memory', measure: 'events/s during that flood', variant: 'ipset', value: median(rates), unit: '/s', spread: spread(rates), runs, digits: 0 });
  } finally {
    removeTempDir(dir);
  }
  return rows;
}
