/**
 * The benchmark's lab on top of tools/lab (namespaces, processes and temporary files with one
 * cleanup that always runs): two namespaces joined by a veth pair, and spoofed sources.
 */
import { must, Netns } from '../../tools/lab/netns';

export { installCleanup, must, removeTempDir, sh, spawnTracked, tempDir, track, Netns, type ExecResult } from '../../tools/lab/netns';

/**
 * The lab: "pbx" (the daemon, its AMI server, Asterisk's SIP port) and "atk" (attackers),
 * joined by a veth pair. Addresses only from 10.233.0.0/16 and fd33::/64.
 *   pbx 10.233.0.1/16, fd33::1/64; atk 10.233.0.2, fd33::2, plus attacker addresses 10.233.1.1, ...
 * Spoofed probe sources come from 10.233.128.0/17 and fd33::8000:0:0/96 (on-link, no replies needed).
 */
export interface Lab {
  pbx: Netns;
  atk: Netns;
  pbx4: string;
  pbx6: string;
  attackers4: string[];
  destroy(): Promise<void>;
}

export async function createLab(attackers = 0): Promise<Lab> {
  const pbx = await Netns.create();
  let atk: Netns | undefined;
  try {
    atk = await Netns.create();
    const id = `${process.pid % 100000}x${pbx.name.slice(pbx.name.lastIndexOf('-') + 1)}`;
    const [h, a] = [`bp${id}`, `ba${id}`].map((n) => n.slice(0, 15));
    await must('ip', ['link', 'add', h, 'netns', pbx.name, 'type', 'veth', 'peer', 'name', a, 'netns', atk.name]);
    const script = (lines: string[]) => lines.join('\n') + '\n';
    await pbx.must('ip', ['-batch', '-'], script([
      `addr add 10.233.0.1/16 dev ${h}`, `addr add fd33::1/64 dev ${h} nodad`, `link set ${h} up`,
    ]));
    const extra = Array.from({ length: attackers }, (_, i) => `10.233.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`);
    await atk.must('ip', ['-batch', '-'], script([
      `addr add 10.233.0.2/16 dev ${a}`, `addr add fd33::2/64 dev ${a} nodad`, `link set ${a} up`,
      ...extra.map((x) => `addr add ${x}/16 dev ${a}`),
    ]));
    // Spoofed sources: no reverse-path check in the pbx (they are routed back over the veth anyway).
    for (const k of ['all', 'default', h]) await pbx.must('sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=0`]);
    const lab: Lab = {
      pbx, atk, pbx4: '10.233.0.1', pbx6: 'fd33::1', attackers4: extra,
      destroy: async () => { await atk!.destroy(); await pbx.destroy(); },
    };
    return lab;
  } catch (err) {
    await atk?.destroy();
    await pbx.destroy();
    throw err;
  }
}

/** Spoofed source number i (0-based): IPv4 from 10.233.128.0/17, every 10th IPv6 from fd33::8000:0:0/96. */
export function spoofed(i: number, v6Every = 10): string {
  if (v6Every > 0 && i % v6Every === v6Every - 1) return `fd33::8000:${((i >> 16) & 0xffff).toString(16)}:${(i & 0xffff).toString(16)}`;
  const k = i % (128 * 254);
  return `10.233.${128 + Math.floor(k / 254)}.${1 + (k % 254)}`;
}

/** A standalone script's `--name=value` option, or dflt. */
export const scriptArg = (name: string, dflt: string): string => process.argv.slice(2).find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** CLOCK_MONOTONIC in ns, the clock netprobe stamps with. */
export const monoNs = () => process.hrtime.bigint();
