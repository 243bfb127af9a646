/**
 * The text around the table in BENCHMARKS.md: how each figure is measured, which targets were
 * met, and what the profiles showed (figures quoted from the same run's rows).
 */
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
(\`ampb-<pid>-<n>\`) and deletes at the end, also on an error or Ctrl-C; ones left by a killed
run are deleted at the next start. The lab: a "pbx" namespace (the daemon, the Asterisk
stand-in, Asterisk's UDP port) and an "attacker" namespace, joined by a veth pair, addresses from
10.233.0.0/16 and fd33::/64. Bulk addresses (stored bans, flood sources) come from 198.18.0.0/15
(the RFC 2544 benchmarking range) and fd33::/64; they exist only inside these namespaces.

The daemon is the real \`ampere run\`: src/ compiled as it is in the working tree (esbuild, one
CommonJS file per module, as \`tsc\` emits) and started as \`node cli.js run\` inside the pbx
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
   (an empty kernel, as after a reboot): from spawning the daemon to its "ampere started" line,
   which it writes only after the kernel load is done; the kernel's count is checked after.
   "restore step alone" is the daemon's own restoreMs. The "step alone" rows time each part
   of a restore in this process. The original's way: one \`iptables -w -A ampere -s <ip> -j
   REJECT\` process per host, sequentially (as its system() calls did), in a namespace; its
   per-call cost grows with the chain, so the extrapolation fits a + b·(rules in the chain) to
   the calls and sums it.
4. **Packet path**: 64-byte UDP datagrams from the attacker namespace to the pbx through
   Ampere's chain with 0, 10k and 100k IPv4 bans (none matching the sender), loaded by
   src/firewall's backends (no daemon running); sizes in rotation, short bursts, the ratio taken
   within each rotation. On a veth pair the receive path, netfilter included, runs in the
   sender's softirq, so the sent and delivered rates both carry the chain's cost.
5. **Throughput and CPU**: the stand-in replays the captures' events with the attackers'
   addresses spread over many sources (bench/lib/data.ts mixStream). The rate comes from
   marker hosts: the stream is cut into segments, each followed by the failures that ban a
   marker, with at most 4 segments unprocessed (the daemon always has work, but never more
   than about a second queued: a deeper backlog would delay its AMI Ping answer past the
   timeout and it would reconnect); events between the first and last marker / the time
   between their "ban" lines. CPU: the stream paced at 5,000 events/s, CPU time of the daemon
   process (/proc, all threads) and of its finished children over the window. The in-process
   stage rows time each stage alone on the same events, one core, no sockets.
6. **Memory**: N events, one InvalidAccountID from each of N distinct sources, as fast as the
   socket takes them; VmRSS 1.5 s after the last one was decided, and VmHWM (the peak); then a
   new host, and the flood's last host, must be banned by their 3rd failure (kernel checked).
   Two more runs with V8 options that trade speed for a smaller heap, as data for the start
   command (the daemon's code is the same).
`;

export function targets(rows: Row[]): string {
  const withTarget = rows.filter((r) => r.target);
  const line = (r: Row) => `- ${r.met ? 'met' : '**missed**'}: ${r.section.replace(/^\d+ /, '')}, ${r.measure}, ${r.variant}: ${r.text ?? `${fmt(r.value, r.digits ?? 2)} ${r.unit}`.trim()} (target ${r.target})`;
  return ['## Targets', '', ...withTarget.map(line), ''].join('\n');
}

export function findings(rows: Row[]): string {
  const ct = v(rows, '1', 'p99', 'ipset');
  const noct = v(rows, '1', 'p99', 'ipset, conntrack cleanup off');
  return `## Findings (profiles: \`npm run bench -- --profile=DIR\`, heap snapshots)

- **conntrack cleanup is the largest cost of a ban.** After each kernel batch the daemon runs
  \`conntrack -D -s <ip>\` once per banned address. Every such process start forks the Node
  daemon: on this VM a fork blocks its event loop for 5-10 ms (even a tiny process takes ~6 ms
  to start here), and the conntrack run competes for the two cores. CPU profiles of the daemon
  during section 1 put \`ChildProcess.spawn\` at about a quarter of its busy time. It shows in
  the reaction tail (p99 ${ct}, against ${noct} with the cleanup off, same runs), in the
  dozen-attacker rows of section 2, and it bounds the ban rate of section 5 (bans/s in a storm,
  and the children's CPU at 5,000 events/s). Fix belongs in src/firewall/conntrack.ts (not this
  issue's files): start the deletions from a small long-lived helper process (e.g. a shell loop
  reading addresses on stdin) so the daemon never forks per ban, or batch them.
- **WAL checkpoints land on bans.** SQLite copies its write-ahead log into the database (with
  an fsync, ~10 ms here) inside whichever commit takes the log past 1,000 pages, about every 65
  bans. With strace on the daemon, the biggest reaction outliers left with the conntrack
  cleanup off coincided with these checkpoints. Fix outside this issue's files (store/open.ts):
  \`wal_autocheckpoint\` off and PASSIVE checkpoints from a timer, better from a second
  connection in a worker thread, so no ban's commit pays for one. What remains of the tail is
  the shared two-core machine (other processes, GC pauses of 1-4 ms).
- **Events per second are bounded by ami-io.** In-process, ami-io's splitter and parser alone
  manage ${v(rows, '5', 'ami-io')} on one core; everything of ours after it together costs less
  than half of that (parse ${v(rows, '5', 'parse (toSecurityEvent)')}, scoring
  ${v(rows, '5', 'scoring')}, history ${v(rows, '5', 'history')}). The whole daemon, socket and
  all, reaches ${v(rows, '5', 'until it falls behind: scan, every source below loyalty')} on the
  no-ban mix. ≥ 50,000/s would need an AMI reader of our own instead of ami-io.
- **Bans per second are bounded by conntrack (above) and by the ban's database work**:
  \`banCount\` is built and prepared by Drizzle on every ban (~0.45 ms cold, about half of the
  ban path in-process; a prepared statement takes it to ~0.02 ms; Store.banCount is not in this
  issue's files) and each ban is its own transaction (~15 WAL pages).
- **Restore** (${v(rows, '3', 'step alone: read active bans')} to read the bans,
  ${v(rows, '3', 'step alone: allow-list')} for the allow-list checks, ${v(rows, '3', 'step alone: kernel load')}
  to load the kernel of which ${v(rows, '3', 'of which: ipset restore')} is \`ipset restore\` itself, for the
  biggest size of this run): Drizzle maps every row to an object (activeBans), AllowList.matches
  converts every address to a BigInt per allow entry, and each address is checked canonical
  three times on its way to the kernel (queue, setAll, addLines). None of these are this
  issue's files; a raw statement for activeBans, a precomputed integer match for IPv4 allow
  entries and one check per address would leave mostly Node's start and \`ipset restore\`.
- **Memory**: heap snapshots of the daemon after 200,000 distinct sources showed the penalty
  table's arrays (push() reserves 17 slots) and event strings that were views into whole 64 KB
  AMI chunks (V8 keeps substrings of 13+ characters as views) as the largest items; both fixed
  (heap objects 106.6 → 44.6 MB). A CPU profile of the 1,000,000-source flood then showed
  PenaltyTable.observe at 67% of the busy time: evicting the oldest host walked over all the
  deleted entries of the Map each time; fixed (60 → 1.5 µs per event, 11,500 → 41,800
  events/s for that flood). What remains above the live heap (~55 MB at 200,000 tracked hosts)
  is garbage V8 lets accumulate before a full collection: the node options rows show the RSS
  with a capped or size-optimised heap.
`;
}
