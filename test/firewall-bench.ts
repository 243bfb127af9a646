/**
 * Firewall timings, each backend x flavour in a throwaway namespace (root only):
 *   node --import tsx test/firewall-bench.ts [count=100000]
 * The measuring process itself runs inside the namespace, so commands start the way the
 * daemon starts them (no `ip netns exec` prefix, which adds ~10 ms per command).
 */
import { spawnSync } from 'node:child_process';
import { createLogger } from '../src/log';
import { canonicalIp } from '../src/net/ip';
import { createBackend, FirewallQueue, type KernelBan } from '../src/firewall';
import { withNetns } from './helpers/netns';

const log = createLogger('silent');

function bans(n: number, now: number): KernelBan[] {
  const out: KernelBan[] = [];
  for (let i = 0; i < n; i++) {
    // 4 in 5 IPv4, the rest IPv6; a mix of permanent and timed bans.
    const until = i % 3 ? now + 3_600_000 + i : null;
    if (i % 5) out.push({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, family: 4, until });
    else out.push({ address: canonicalIp(`2001:db8:${(i >> 16).toString(16)}::${(i & 0xffff).toString(16)}`)!.address, family: 6, until });
  }
  return out;
}

const since = (t: number) => `${(performance.now() - t).toFixed(0)} ms`;
const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1].toFixed(1);

async function measure(kind: 'ipset' | 'rules', flavour: 'nft' | 'legacy', count: number): Promise<void> {
  const fw = await createBackend(kind, { chain: 'ampere', target: 'DROP', iptables: flavour }, log);
  await fw.init();
  const label = `${kind.padEnd(5)} ${flavour.padEnd(6)}`;
  const one: number[] = [];
  for (let i = 0; i < 21; i++) {
    const t = performance.now();
    await fw.add([{ address: `192.0.2.${i + 1}`, family: 4, until: Date.now() + 60_000 }], Date.now());
    one.push(performance.now() - t);
  }
  const q = new FirewallQueue(fw, log, { conntrack: null });
  const viaQueue: number[] = [];
  for (let i = 0; i < 21; i++) {
    const t = performance.now();
    await q.add([{ address: `198.51.100.${i + 1}`, family: 4, until: Date.now() + 60_000 }]);
    viaQueue.push(performance.now() - t);
  }
  console.log(`${label} one ban (small chain/set): add ${median(one)} ms, through the queue ${median(viaQueue)} ms (medians of 21)`);
  const list = bans(count, Date.now());
  let t = performance.now();
  await fw.setAll(list, Date.now());
  const first = since(t);
  t = performance.now();
  await fw.setAll(list, Date.now());
  const again = since(t);
  t = performance.now();
  const held = (await fw.list()).length;
  const listed = since(t);
  const oneMore: number[] = [];
  for (let i = 0; i < 7; i++) {
    const s = performance.now();
    await fw.add([{ address: `203.0.113.${i + 1}`, family: 4, until: null }], Date.now());
    oneMore.push(performance.now() - s);
  }
  console.log(`${label} setAll ${count}: ${first} (replacing them: ${again}); list ${held}: ${listed}; one more ban then: ${median(oneMore)} ms`);
}

async function main() {
  const [a, b, c] = process.argv.slice(2);
  const inside = process.env.AMPT_BENCH_NS;
  if (inside) {
    // Safety: only ever measure inside the namespace made for it, never the host's firewall.
    const here = spawnSync('ip', ['netns', 'identify', String(process.pid)], { encoding: 'utf8' }).stdout.trim();
    if (here !== inside) throw new Error(`not inside namespace ${inside} (here: ${here || 'host'}): refusing`);
    return measure(a as 'ipset' | 'rules', b as 'nft' | 'legacy', Number(c));
  }
  const count = Number(a ?? 100_000);
  for (const kind of ['ipset', 'rules'] as const) {
    for (const flavour of ['nft', 'legacy'] as const) {
      await withNetns(async (ns) => {
        const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, '--import', 'tsx', __filename, kind, flavour, String(count)], {
          stdio: 'inherit',
          env: { ...process.env, AMPT_BENCH_NS: ns.name },
        });
        if (r.status !== 0) throw new Error(`${kind}/${flavour} bench failed`);
      });
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
