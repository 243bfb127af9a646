/**
 * 4. Packet path: UDP datagrams per second from the attacker namespace to the pbx namespace,
 * through Ampere's chain holding 0, 10k or 100k bans (IPv4, none matching the sender), per
 * backend, and 1M for ipset (issue 15's scale), plus the same path with no Ampere chain at all.
 *
 * netprobe blast sends 64-byte datagrams with sendmmsg from one socket for the given time;
 * netprobe sink counts them with recvmmsg. On a veth pair the receive path (netfilter
 * included) runs in the sender's softirq, so both the sent and the delivered rates carry the
 * chain's cost. The chain is loaded by src/firewall's backends (init + setAll, commands via
 * `ip netns exec`); no daemon runs. Sizes are measured in rotation, several times, and each
 * ratio is taken within one rotation; sender and receiver are pinned to fixed CPUs (pinned).
 * Node's dgram is not used: it manages about a tenth of these rates here, so it would measure
 * itself.
 */
import { cpus } from 'node:os';
import { createBackend, type FirewallBackend, type KernelBan } from '../../src/firewall';
import { createLogger } from '../../src/log';
import { NETPROBE } from '../lib/build';
import { banList, V4_BULK, wide4 } from '../lib/data';
import { LineProc } from '../lib/procs';
import { median, spread, type Row } from '../lib/report';
import { createLab, sleep, type Lab } from '../lib/sys';
import type { Backend, Ctx } from './common';

const PORT = 5099;

interface Pps { delivered: number; sent: number }

/**
 * A command pinned to one CPU (taskset): the sender to the first, the receiver to the last.
 * Unpinned, the scheduler's placement of the two (together or apart) switched whole bursts
 * between ~100k and ~300k datagrams/s whatever the bans, and the per-rotation ratio of one
 * full run spread over 0.32-2.8; pinned, over 0.80-1.06 and 0.95-1.04 (two runs each).
 */
function pinned(cpu: 'first' | 'last', cmd: string[]): [string, string[]] {
  return ['taskset', ['-c', String(cpu === 'first' ? 0 : cpus().length - 1), ...cmd]];
}

async function blast(lab: Lab, seconds: number): Promise<Pps> {
  const sink = new LineProc(lab.pbx.spawn(...pinned('last', [NETPROBE, 'sink', String(PORT), String(seconds + 5)])), 'sink');
  await sink.next((l) => l === 'ready');
  const sent = await lab.atk.must(...pinned('first', [NETPROBE, 'blast', '10.233.0.2', lab.pbx4, String(PORT), String(seconds)]));
  const got = await sink.next(() => true, (seconds + 10) * 1000);
  await sink.exited;
  const [count, first, last] = got.split(' ').map(Number);
  const [n, ns] = sent.trim().split(' ').map(Number);
  return { delivered: count / ((last - first) / 1e9), sent: n / (ns / 1e9) };
}

function bans(n: number): KernelBan[] {
  const until = Date.now() + 86_400_000;
  if (n <= V4_BULK) return banList(n, 0).map((b) => ({ address: b.address, family: 4, until }));
  return Array.from({ length: n }, (_, i) => ({ address: wide4(i), family: 4, until }));
}

export async function packetsSection(ctx: Ctx): Promise<Row[]> {
  // Short bursts in many rotations: the machine is shared, and its load drifts over seconds.
  const runs = ctx.quick ? 2 : 7;
  const seconds = ctx.quick ? 0.2 : 0.4;
  const log = createLogger('silent');
  const rows: Row[] = [];
  for (const backend of ['ipset', 'rules'] as Backend[]) {
    // A million rules would take hours to load (section 3): the rules backend stops at 100k.
    const sizes = ctx.quick ? [0, 10_000] : backend === 'ipset' ? [0, 10_000, 100_000, 1_000_000] : [0, 10_000, 100_000];
    // One lab per size, loaded once; the rotation below then only measures.
    const labs: { n: number; lab: Lab; fw: FirewallBackend }[] = [];
    try {
      for (const n of sizes) {
        const lab = await createLab();
        const fw = await createBackend(backend, { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: lab.pbx.name }, log);
        labs.push({ n, lab, fw });
        await fw.init();
        const t = performance.now();
        await fw.setAll(bans(n), Date.now());
        if (n) ctx.log(`  packets ${backend}: loaded ${n} bans in ${Math.round(performance.now() - t)} ms`);
      }
      const res = new Map<number, Pps[]>(sizes.map((n) => [n, []]));
      const none: Pps[] = [];
      for (let r = 0; r < runs; r++) {
        for (const { n, lab } of r % 2 ? [...labs].reverse() : labs) res.get(n)!.push(await blast(lab, seconds));
        if (backend === 'ipset') {
          // The same path without Ampere: the jump out of INPUT removed for a moment.
          const l0 = labs[0].lab;
          await l0.pbx.must('iptables', ['-w', '-D', 'INPUT', '-j', 'ampere']);
          none.push(await blast(l0, seconds));
          await l0.pbx.must('iptables', ['-w', '-I', 'INPUT', '1', '-j', 'ampere']);
        }
        await sleep(100);
      }
      const kpps = (xs: Pps[], k: keyof Pps) => xs.map((x) => x[k] / 1000);
      if (none.length) {
        rows.push({ section: '4 Packet path', measure: 'UDP datagrams/s delivered, no Ampere chain', variant: 'baseline', value: median(kpps(none, 'delivered')), unit: 'k/s', spread: spread(kpps(none, 'delivered')), runs: none.length, digits: 0, how: `C sender → C receiver over veth, 64-byte packets; ${seconds} s each` });
      }
      for (const n of sizes) {
        const xs = res.get(n)!;
        ctx.log(`  packets ${backend} ${n}: delivered ${kpps(xs, 'delivered').map((x) => x.toFixed(0)).join(', ')} k/s; sent ${kpps(xs, 'sent').map((x) => x.toFixed(0)).join(', ')} k/s`);
        rows.push({ section: '4 Packet path', measure: `UDP datagrams/s delivered through the chain, ${n.toLocaleString('en-US')} bans`, variant: backend, value: median(kpps(xs, 'delivered')), unit: 'k/s', spread: spread(kpps(xs, 'delivered')), runs: xs.length, digits: 0, how: `sent ${median(kpps(xs, 'sent')).toFixed(0)} k/s` });
      }
      for (const top of sizes.filter((n) => n >= 100_000 || n === sizes[sizes.length - 1]).filter((n) => n > 0)) {
        const ratios = res.get(top)!.map((x, i) => x.delivered / res.get(0)![i].delivered);
        const target = backend === 'ipset' && top >= 100_000 ? { target: '≥ 0.95', met: median(ratios) >= 0.95 } : {};
        const label = top >= 1_000_000 ? `${top / 1_000_000}M` : `${top / 1000}k`;
        rows.push({ section: '4 Packet path', measure: `ratio ${label} bans / 0 bans (delivered)`, variant: backend, value: median(ratios), unit: '', spread: spread(ratios), runs: ratios.length, digits: 3, how: 'per rotation', ...target });
      }
    } finally {
      for (const { lab } of labs) await lab.destroy();
    }
  }
  return rows;
}
