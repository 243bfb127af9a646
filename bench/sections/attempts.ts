/**
 * 2. Attempts admitted: how many wrong-password attempts reach "Asterisk" from a brute-force
 * client before the kernel drops it, with loyalty 3 (ideal: exactly 3).
 *
 * Real datagrams through the veth pair: netprobe's brute clients (own source addresses in the
 * attacker namespace) send attempts to UDP 5060 of the pbx namespace. The Asterisk stand-in
 * counts every attempt that arrives, writes the two events Asterisk 22 raises for it
 * (ChallengeSent + ChallengeResponseFailed, replayed from the svcrack capture) to the daemon's
 * AMI socket, and answers 403. Modes:
 *   flood         closed loop: the next attempt leaves when the 403 arrives; the stand-in
 *                 answers at once, so this is far faster than any real Asterisk (worst case).
 *   Asterisk pace closed loop, 403 after 1 ms (a real Asterisk 22 answered a stdlib client's
 *                 attempts every 1-2 ms in the tcp capture).
 *   scanner pace  one attempt every 6.5 ms (svcrack against Asterisk 22: every 6-7 ms).
 */
import { NETPROBE } from '../lib/build';
import { median, spread, type Row } from '../lib/report';
import { sleep } from '../lib/sys';
import { startRunning, type Backend, type Ctx, type Running } from './common';

const LOYALTY = 3;

interface Mode { name: string; paceUs: number; replyDelayMs: number; durationMs: number }
const MODES: Mode[] = [
  { name: 'flood (stand-in answers at once)', paceUs: 0, replyDelayMs: 0, durationMs: 700 },
  { name: 'Asterisk pace (403 after 1 ms)', paceUs: 0, replyDelayMs: 1, durationMs: 700 },
  { name: 'scanner pace (1 per 6.5 ms)', paceUs: 6500, replyDelayMs: 0, durationMs: 400 },
];

interface Sample { admitted: number; sent: number; answered: number }

async function attack(r: Running, mode: Mode, srcs: string[]): Promise<Sample[]> {
  await r.agent.call('sip', { on: true, reset: true, replyDelayMs: mode.replyDelayMs });
  const res = await r.lab.atk.must(NETPROBE, ['brute', r.lab.pbx4, '5060', String(mode.paceUs), String(mode.durationMs), ...srcs]);
  await sleep(50); // late arrivals
  const { counts } = await r.agent.call('sipstats');
  await r.agent.call('sip', { on: false });
  const out: Sample[] = [];
  for (const line of res.trim().split('\n')) {
    const [src, sent, answered] = line.split(' ');
    out.push({ admitted: counts[src] ?? 0, sent: Number(sent), answered: Number(answered) });
  }
  return out;
}

export async function attemptsSection(ctx: Ctx): Promise<Row[]> {
  const runs = ctx.quick ? 1 : 5;
  const backends: Backend[] = ['ipset', 'rules'];
  const groups = [1, 12];
  const modes = ctx.quick ? MODES.filter((m) => m.paceUs === 0 && m.replyDelayMs === 0 || m.paceUs > 0) : MODES;
  const perBackend = modes.length * groups.reduce((a, b) => a + b, 0) * runs;
  const rows: Row[] = [];
  for (const backend of backends) {
    const r = await startRunning({ backend, env: { AMPERE_LOYALTY: String(LOYALTY) }, attackers: perBackend, sipPort: 5060 });
    let next = 0;
    const fresh = (n: number) => r.lab.attackers4.slice(next, (next += n));
    const results = new Map<string, Sample[][]>(); // key -> per run, per attacker
    try {
      for (let run = 0; run < runs; run++) {
        for (const mode of modes) {
          for (const g of groups) {
            const key = `${mode.name}|${g}`;
            const samples = await attack(r, mode, fresh(g));
            if (!results.has(key)) results.set(key, []);
            results.get(key)!.push(samples);
            await sleep(100);
          }
        }
      }
    } finally {
      await r.close();
    }
    for (const mode of modes) {
      for (const g of groups) {
        const perRun = results.get(`${mode.name}|${g}`)!;
        const all = perRun.flat();
        const admitted = all.map((s) => s.admitted);
        const worst = Math.max(...admitted);
        const rate = median(all.map((s) => (s.answered > 1 ? s.answered : NaN)).filter(Number.isFinite));
        ctx.log(`  attempts ${backend} ${mode.name} ×${g}: admitted ${JSON.stringify(perRun.map((x) => x.map((s) => s.admitted)))}`);
        rows.push({
          section: '2 Attempts', measure: `attempts reaching Asterisk before the drop, ${mode.name}`, variant: `${backend}, ${g === 1 ? '1 attacker' : `${g} attackers at once`}`,
          value: median(admitted), unit: '', spread: spread(admitted), runs: perRun.length, digits: 1,
          how: `${all.length} attacker runs; worst ${worst}; loyalty ${LOYALTY}${Number.isFinite(rate) ? `; ${rate} answered per attacker` : ''}`,
          target: `= ${LOYALTY}`, met: worst === LOYALTY,
        });
      }
    }
  }
  return rows;
}
