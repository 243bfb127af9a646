/**
 * The text around the table in BENCHMARKS.md: how each figure is measured, which targets were
 * met, and what the profiles showed (figures quoted from the same run's rows).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, type Row } from './report';

function find(rows: Row[], section: string, measure: string, variant?: string): Row | undefined {
  return rows.find((r) => r.section.startsWith(section) && r.measure.includes(measure) && (variant === undefined || r.variant === variant));
}

/** "12.3 ms" of a row, or "n/a" when that row was not measured in this run. */
function v(rows: Row[], section: string, measure: string, variant?: string): string {
  const r = find(rows, section, measure, variant);
  if (!r) return 'n/a';
  return r.text ?? `${fmt(r.value, r.digits ?? 2)}${r.unit === '×' || r.unit === '' ? r.unit : ` ${r.unit}`}`;
}

export const METHOD = `## How it is measured

Everything that touches a firewall runs in network namespaces the benchmark creates
(\`ampl-<pid>-<n>\`, tools/lab/netns.ts) and deletes at the end, also on an error or Ctrl-C; ones left by a killed
run are deleted at the next start. The lab: a "pbx" namespace (the daemon, the Asterisk
stand-in, Asterisk's UDP port) and an "attacker" namespace, joined by a veth pair, addresses from
10.233.0.0/16 and fd33::/64. Bulk addresses (stored bans, flood sources) come from 198.18.0.0/15
(the RFC 2544 benchmarking range) and fd33::/64; they exist only inside these namespaces.

The daemon is the real \`ampere run\`: src/ compiled as it is in the working tree (esbuild, one
CommonJS file per module, as \`tsc\` emits) and started as \`node <the launchers' flags> cli.js run\` inside the pbx
namespace, configured by environment only, so its iptables/ipset commands run there natively as
in production. "Asterisk" is bench/agent/pbx.ts: an AMI server speaking the wire format of the
Asterisk 22 captures in test/fixtures/ami (banner, Login, Ping; the events are the captures'
blocks with addresses replaced) and, for section 2, a SIP port that turns every attempt into the
two events Asterisk 22 raises for a wrong password and answers 403. Packets are sent and
counted by bench/c/netprobe.c (C; raw sockets for spoofed sources, sendmmsg/recvmmsg). Node's
dgram would measure itself: it manages a tenth of these packet rates here. All times are
CLOCK_MONOTONIC, shared by all processes.

Each figure is the median over the runs shown, with the lowest and highest run; ratios are
taken between measurements of the same run, because the machine is shared and its load drifts.

1. **Reaction**: for each ban, loyalty-1 failures from a fresh spoofed source, then netprobe
   starts sending that source's UDP datagrams every 50 µs from the attacker namespace to the
   pbx, then the stand-in writes the deciding failure to the AMI socket (time T0). The ban is
   effective at the first datagram that is dropped with all after it (100 in a row and 5 ms):
   the figure is that datagram's send time − T0, an upper bound within one probe interval
   (~0.1 ms in practice). Bans are 15-30 ms apart (after the previous one took effect), so each is measured alone; clustered bans
   are section 2. Every 10th source is IPv6. "conntrack cleanup off" is the same daemon with
   conntrack left out of its PATH, a diagnosis (see findings).
2. **Attempts admitted**: netprobe brute clients (real sockets, own addresses, 1 or 12 at
   once) send wrong-password attempts to the stand-in's SIP port through the veth pair; the
   stand-in counts what arrives per source. *flood*: the next attempt leaves as soon as the 403
   arrives, and the stand-in answers at once, far faster than any Asterisk (the worst case);
   *Asterisk pace*: the 403 comes after 1 ms (a real Asterisk 22 answered a stdlib client's
   attempts every 1-2 ms in the tcp capture); *scanner pace*: one attempt every 6.5 ms whatever
   comes back (svcrack against Asterisk 22: every 6-7 ms in the svcrack capture).
3. **Restore**: a database holding N active bans (every 10th IPv6) and a fresh namespace
   (an empty kernel, as after a reboot): from spawning the daemon to its "bans restored" line,
   which it writes once the kernel load is done (and in sync); the kernel's count is checked
   after. A second row runs on to "ampere started" (AMI connecting, control socket open).
   "restore step alone" is the daemon's own restoreMs. The "step alone" rows time each part
   of a restore in this process. The original's way: one \`iptables -w -A ampere -s <ip> -j
   REJECT\` process per host, sequentially (as its system() calls did), in a namespace; its
   per-call cost grows with the chain, so the extrapolation fits a + b·(rules in the chain) to
   the calls and sums it.
4. **Packet path**: 64-byte UDP datagrams from the attacker namespace to the pbx through
   Ampere's chain with 0, 10k and 100k IPv4 bans (none matching the sender), loaded by
   src/firewall's backends (no daemon running); sizes in rotation, short bursts, the ratio taken
   within each rotation. On a veth pair the receive path, netfilter included, runs in the
   sender's softirq, so the sent and delivered rates both carry the chain's cost. Sender and
   receiver are pinned to the first and last CPU (taskset): unpinned, the scheduler's
   placement switched whole bursts between ~100k and ~300k datagrams/s whatever the bans.
5. **Throughput and CPU**: the stand-in replays the captures' events with the attackers'
   addresses spread over many sources (bench/lib/data.ts mixStream). The rate comes from
   marker hosts: the stream is cut into segments, each followed by the failures that ban a
   marker, with at most 4 segments unprocessed (the daemon always has work, but never more
   than about a second queued: a deeper backlog would delay its AMI Ping answer past the
   timeout and it would reconnect); events between the first and last marker / the time
   between their "ban" lines. CPU: the stream paced at 5,000 events/s, CPU time of the daemon
   process (/proc, all threads) and of its child processes (the long-lived ipset shell and
   conntrack helper, and any that finished) over the window. The in-process
   stage rows time each stage alone on the same events, one core, no sockets.
6. **Memory**: N events, one InvalidAccountID from each of N distinct sources, as fast as the
   socket takes them; VmRSS 1.5 s after the last one was decided, and VmHWM (the peak); then a
   new host, and the flood's last host, must be banned by their 3rd failure (kernel checked).
   The daemon runs as its launchers start it (--max-old-space-size=256 --no-lazy
   --no-flush-bytecode, as in every section), on a database it has
   run on before; one more run with Node's default heap limit, for comparison.
`;

export function targets(rows: Row[]): string {
  const withTarget = rows.filter((r) => r.target);
  const line = (r: Row) => `- ${r.met ? 'met' : '**missed**'}: ${r.section.replace(/^\d+ /, '')}, ${r.measure}, ${r.variant}: ${r.text ?? `${fmt(r.value, r.digits ?? 2)} ${r.unit}`.trim()} (target ${r.target})`;
  return ['## Targets', '', ...withTarget.map(line), ''].join('\n');
}

/**
 * The findings (bench/findings.md, prose kept as markdown): each {{section|measure|variant}} in
 * it is replaced by that row's figure from this run ("n/a" when not measured).
 */
export function findings(rows: Row[]): string {
  const text = readFileSync(join(__dirname, '..', 'findings.md'), 'utf8');
  return text.replace(/\{\{([^}|]+)\|([^}|]+)(?:\|([^}]+))?\}\}/g, (_m, section: string, measure: string, variant?: string) => v(rows, section, measure, variant));
}

/** The reconciler's cost, measured by bench/reconciler-cost.ts (a separate script): kept in the report. */
export const RECONCILER_COST = `## Reconciler cost

\`node --import tsx bench/reconciler-cost.ts\` (not part of \`npm run bench\`): the real daemon,
idle, 100,000 bans in the kernel (every 10th IPv6), ipset backend, its CPU over 60 s (its own
threads, the processes it started, the live ipset shell and the xtables-monitor) with
\`verify_interval\` at its default (2s: a check every second) and off, alternating, two runs
each (2026-12-04, 2 vCPUs shared with other work, iptables-nft):

- off: 0.58 and 0.53 % of a core; on: 0.98 and 0.97 %: **the checks cost 0.42 % of a core**
  (target ≤ 1 %: met), 60 checks a minute, no drift found. Per check: \`ipset list -t\`
  through the live shell; \`iptables -S\` of both families only when \`xtables-monitor\` reported
  a change of the ruleset. Before that (both tables listed at every check, a check every
  1.5 s) the cost was 2.0 % of a core: two process starts a check, about half of it the fork of
  a daemon holding 100k bans.
- With legacy iptables (\`--iptables=legacy\`, no change events: both tables listed at every
  check) one 30 s run: 0.63 % off, 3.67 % on, **3.0 % of a core: the target is missed there**.
- Repair with 100,000 bans: \`ipset flush ampere-v4\` (90,000 members) → reloaded 1,548 and
  1,749 ms after the flush (the repair itself 467 and 722 ms: the start's load of lines SQLite
  renders); \`iptables -D INPUT -j ampere\` → the jump back 460 and 651 ms after the deletion
  (the chain and the jump are made again before the sets are reloaded).
`;
