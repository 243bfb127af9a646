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

export function findings(rows: Row[]): string {
  const ct = v(rows, '1', 'p99', 'ipset');
  const noct = v(rows, '1', 'p99', 'ipset, conntrack cleanup off');
  return `## Findings (profiles: \`npm run bench -- --profile=DIR\`, heap snapshots, traces)

Fixed since the first full run (each commit has its before/after): conntrack deletions go
through one long-lived helper (a fixed \`sh\` script feeding \`conntrack -R -\` one line per
batch) instead of one process per ban, which forked the daemon for 5-17 ms each time; the
kernel command of a ban is written before its database commit, so the two overlap; WAL
checkpoints run on a worker thread instead of inside whichever ban's commit crossed 1,000
pages (recordBan p99.9 ~9 ms → ~1 ms); the penalty table keeps a one-failure host as a bare
number (251 → 147 bytes a host); bans decided in one burst all go to the ipset shell at once
(the queue pipelines into a channel that keeps order) and are stored together 20 ms after the
first; the launchers give Node a 256 MB heap limit; the restore loads lines SQLite rendered
and makes the daemon's in-memory set after the kernel holds them; SQLite's page cache is its
own 2 MB, not better-sqlite3's 16 MB; the launchers compile all JS at load and keep it
(--no-lazy --no-flush-bytecode). Since the previous full runs: the daemon runs at nice -10
(the \`nice\` key; its ipset shell inherits it, the conntrack helper runs 10 lower); the
conntrack helper sends at most one line per 50 ms; the CPU of the daemon's live helpers is
counted (the row "daemon + its child processes" showed only the processes that had
finished); the reaction section starts with an unrecorded warm-up run.

- **Reaction.** A trace inside the daemon (200 isolated bans, ipset, temporary instrumentation,
  not committed) put the median path at: event written → the daemon's socket read ~0.3 ms,
  ami-io's split and parse ~0.2-0.3 ms, decision and the ipset shell write ~0.2 ms, ipset's
  netlink add ~0.3-0.5 ms. What is left in the tail (p99 ${ct}; ${noct} with the conntrack
  cleanup off, same runs; p99s of single runs straddle 5 ms) is scheduling on a shared two-core
  VM: the daemon, the ipset shell,
  the Asterisk stand-in and the prober share two vCPUs, and a stalled wake-up of any of them
  shows directly. GC pauses were ruled out with --trace-gc (one 9 ms scavenge, at start), and
  again in a later trace of 300 bans (PerformanceObserver: no collection inside a slow ban).
  That trace split the tail between the daemon reading the deciding event late (p50 ~0.5 ms,
  p99 ~3-3.7 ms after it was written) and the ipset shell answering late. The first ban after
  a start was its run's slowest, 4.5-20 ms over five runs (marks inside the daemon: every step
  of the ban path several times slower than on later bans). V8 compiled that path on its first
  use; with --no-lazy (everything compiled at load) the first bans took 1.6-5 ms, so the
  launchers now give it, with --no-flush-bytecode so that a ban after a quiet spell does not
  compile it again (start ~15-20 ms longer, RSS ~1 MB). Since the tail is the daemon (and the
  ipset shell) woken late on a busy machine, the daemon now raises its own priority (nice -10,
  inherited by the shell): six alternating runs each in one hour gave per-run p99s of
  3.85-6.19 ms (median ~5.1) against 5.27-7.16 ms (~6.3) at nice 0, p50 unchanged.
- **Attempts.** At scanner pace an attempt comes every 6.5 ms, longer than the reaction, so
  one attacker gets exactly loyalty attempts in. Twelve at once used to get one more each:
  traced (temporary instrumentation, attempts' arrival at the stand-in against the daemon's
  decisions and the shell's answers), the other eleven bans waited for the first one's answer
  from the ipset shell, and the first ban's database commit held up reading the others'
  events. Now every ban of a burst is written to the shell as it is decided and the burst is
  committed 20 ms later; in targeted runs all twelve were held to loyalty in 14 of 15 runs.
  What still lets one through now and then is scheduling on two vCPUs shared by the stand-in,
  the senders, the daemon and ipset: the stand-in's events reach the daemon up to ~5 ms after
  the attempt. A later look (a 1 ms timer inside the stand-in, temporary, one section of five
  runs) found the stand-in itself stalled in the two attacks that let some through, 37-48 ms
  after the attack started, when the third attempts arrive: 3.5 and 3.3 ms where eleven of
  twelve got a fourth attempt in, 15.9 ms where four did; in the three that held all twelve,
  its stalls (3.0-5.4 ms) fell outside that window, and no collection took over 3.6 ms. Over
  ten full sections that evening 10 of 50 twelve-attacker runs let some through, all of them
  3rd-5th runs; but in two sections of scanner-pace attacks alone (10 runs each, no flood
  before) 5 of 20 did, first runs included, so it is not a build-up over a section. nice 0 or
  -10 made no difference (166 and 163 of 180 attackers held to 3), nor did turning the WAL
  checkpointer's worker off (three sections: misses in each). Why the stand-in stalls (its own
  work, or the two vCPUs shared with twelve senders, the daemon and ipset) is not found yet.
  A flood answered at once (thousands of attempts a second) gets in what arrives
  during the reaction. Only an in-kernel rate limit could stop those,
  which is not Ampere's job (it would also hit legitimate bursts). Against the real thing, the
  end-to-end test (test/e2e.test.ts: Debian sid's Asterisk 22, sipvicious svcrack guessing a
  phone's password over UDP, Ampere started as the image starts it) counts the guesses
  Asterisk's security log saw from svcrack before the ban: 3, exactly loyalty, in 5 of 5 runs
  on 2026-11-27 (its "e2e timings" line, svcrackFailuresBeforeBan).
- **Events per second are bounded by ami-io.** In-process, ami-io's splitter and parser alone
  manage ${v(rows, '5', 'ami-io')} on one core; everything of ours after it costs less
  (parse ${v(rows, '5', 'parse (toSecurityEvent)')}, scoring ${v(rows, '5', 'scoring')},
  history ${v(rows, '5', 'history')}). The whole daemon, socket and all, reaches
  ${v(rows, '5', 'until it falls behind: scan, every source below loyalty')} on the no-ban mix,
  close to the 50,000/s line, so runs on this shared VM fall on either side of it. A CPU
  profile puts ami-io's Message.parse alone at about a quarter of the daemon's busy time and the
  history writes (a host upsert and an event row per failure) at about a fifth. Clearly more
  would need an AMI reader of our own; the brief names ami-io, so it stays.
- **CPU with bans.** At 5,000 events/s with a ban every 42 events (~120 bans/s, far more new
  attackers a second than a real attack brings) the daemon used
  ${v(rows, '5', 'CPU at a steady 5,000 events/s: scan + brute force', 'ipset, daemon process')}
  (no bans: ${v(rows, '5', 'CPU at a steady 5,000 events/s: scan, every', 'ipset, daemon process')}), itself and its
  helpers ${v(rows, '5', 'CPU at a steady 5,000 events/s: scan + brute force', 'ipset, daemon + its child processes')}.
  Profiles of those runs against the no-ban runs put the daemon's extra ~0.8 ms a ban at the
  writes into the ipset shell's and the conntrack helper's pipes (each wakes the other process:
  about a third), SQLite (the ban count for escalation, the ban's three statements, its commit:
  about a quarter) and the ban's log line (about a tenth). The helpers' share is conntrack's:
  each \`conntrack -R\` run costs ~7.5 ms of CPU for the process, and each address in it ~2.7 ms
  of kernel time, because conntrack deletes through a dump that walks the whole conntrack hash
  table (262,144 buckets on this VM; the cost follows nf_conntrack_buckets). The helper now
  sends at most one line per 50 ms (its processes: 77 % → 52-57 % of a core in targeted runs);
  the walks remain, one per banned address: fewer would need deleting flows by their exact
  tuple over netlink, which the conntrack tool does not do (strace: a dump even then).
- **Restore** (100,000 bans: ${v(rows, '3', '100,000 bans: daemon start → kernel')} from spawn to
  a full kernel, ${v(rows, '3', "Node's own start")} of it before the daemon's code runs). Causes
  found and fixed, in order: \`ipset restore\` batches its netlink messages only into a set it
  made in the same run (~9 µs an element otherwise), so the loaders create the scratch sets
  themselves; each process start costs the loop 8-18 ms, so init reuses the filter tables
  flavour detection read; Drizzle is no longer loaded at start (~90 ms); and the daemon's own
  work per ban (split, allow-list check, in-memory set, the line: ~4-6 µs a ban inside the
  daemon, ~1.06 s in all at the last full run), which ipset waited on. For that last one the
  store now renders every ban as its load line in SQLite, one query per family (${v(rows, '3', 'load lines rendered')}
  in-process; the bans_active index holds the address, so no table lookup per row), two
  \`ipset restore\` processes load their halves (${v(rows, '3', 'kernel load (FirewallQueue.setAllLines')}
  in-process, ${v(rows, '3', 'of which: ipset restore of the same lines')} for one process
  alone), and the daemon makes its in-memory set once the kernel holds them
  (${v(rows, '3', 'after the load: the in-memory set')}; it delays "ampere started", not the
  kernel). Addresses allowed since their ban are lifted before the load, looked up by the allow
  list's text prefixes in the address index (${v(rows, '3', 'allowed addresses')}), so the
  load itself checks nothing and no allowed address reaches the kernel. The WAL checkpointer's
  worker starts after the load: its start-up (a second V8 isolate, ~90 ms of CPU) took a core
  from the loaders on two vCPUs. What is left: Node's start, the process starts (flavour
  detection, chains, loaders), SQLite building the text, and ipset's own parser.
- **Memory.** The table's compact form halved the live heap at 200,000 tracked hosts
  (heap after GC, in-process: 47.9 → 28.1 MB). With Node's default heap limit (~4 GB here) V8
  lets the heap grow 4x between full collections, so the garbage of a 1M-source flood piles up
  (RSS ${v(rows, '6', 'RSS after', "ipset, Node's default heap limit")}, peak
  ${v(rows, '6', 'peak RSS', "ipset, Node's default heap limit")}); at or below 256 MB it grows
  by 1.3x (V8's heap controller), which is why the launchers (npm start, the image) give the
  daemon --max-old-space-size=256, and \`ampere run\` refuses a max_hosts whose worst-case table
  (~450 bytes a host at loyalty 3, checked against a real table by a test) would not fit it.
  A smaller young generation (--max-semi-space-size=4 or 8) cut the peak by ~10 MB more but
  cost a third of the event rate, so it is not used. SQLite's page cache: better-sqlite3
  builds with a 16 MB default, which the flood filled with the hosts table's pages (malloc heap
  2 → 21 MB, /proc smaps); every connection now uses SQLite's own 2 MB (1M history writes
  in-process no slower), and the malloc heap stays at ~6 MB. After the flood the RSS is V8's
  heap (~80-95 MB of anonymous memory, varying with where the collector is when it is read),
  the node binary's pages (~38 MB), the rest of malloc, and the WAL checkpointer's worker
  thread (a second V8 isolate).
`;
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
