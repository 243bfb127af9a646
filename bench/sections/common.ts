import { daemonEnv, PbxAgent, startDaemon, type DaemonProcess } from '../lib/procs';
import type { Row } from '../lib/report';
import { createLab, removeTempDir, tempDir, type Lab } from '../lib/sys';

export interface Ctx {
  quick: boolean;
  log: (s: string) => void;
  /** --profile: daemons run with --cpu-prof into this directory, summaries go to the log. */
  profileDir?: string;
}

/** node arguments for a daemon: a CPU profile per process when profiling. */
export function profArgs(ctx: Ctx, tag: string): string[] {
  return ctx.profileDir ? ['--cpu-prof', '--cpu-prof-interval=200', `--cpu-prof-dir=${ctx.profileDir}`, `--cpu-prof-name=${tag}-${Date.now()}.cpuprofile`] : [];
}

/** Logs the summary of the profiles written since `since` (ms epoch) whose name starts with tag. */
export function logProfiles(ctx: Ctx, tag: string): void {
  if (!ctx.profileDir) return;
  const { readdirSync } = require('node:fs') as typeof import('node:fs');
  const { summarizeProfile, formatSummary } = require('../lib/profile') as typeof import('../lib/profile');
  for (const f of readdirSync(ctx.profileDir).filter((x) => x.startsWith(`${tag}-`)).sort().slice(-1)) {
    ctx.log(`profile ${f}:\n${formatSummary(summarizeProfile(`${ctx.profileDir}/${f}`, 20))}`);
  }
}

export type Section = (ctx: Ctx) => Promise<Row[]>;

export type Backend = 'ipset' | 'rules';

/** A lab with the Asterisk stand-in and a running daemon connected to it. */
export interface Running {
  lab: Lab;
  agent: PbxAgent;
  daemon: DaemonProcess;
  dir: string;
  startedLine: Record<string, any>;
  close(): Promise<void>;
}

export async function startRunning(opts: {
  backend: Backend | 'dry-run';
  env?: Record<string, string>;
  attackers?: number;
  sipPort?: number;
  dir?: string;
  nodeArgs?: string[];
  /** false: Node's default heap limit instead of the launchers' (memory section's comparison). */
  launchHeap?: boolean;
}): Promise<Running> {
  const lab = await createLab(opts.attackers ?? 0);
  const ownDir = !opts.dir;
  const dir = opts.dir ?? tempDir('run');
  let agent: PbxAgent | undefined;
  let daemon: DaemonProcess | undefined;
  try {
    agent = await PbxAgent.start(lab.pbx, 5038, opts.sipPort ?? 0);
    daemon = startDaemon(lab.pbx, daemonEnv(dir, { AMPERE_BACKEND: opts.backend, ...opts.env }), opts.nodeArgs, opts.launchHeap);
    const started = daemon.next((l) => l.msg === 'ampere started', 300_000);
    const [startedLine] = await Promise.all([started, agent.waitLogin(1, 300_000)]);
    const a = agent;
    const d = daemon;
    return {
      lab, agent: a, daemon: d, dir, startedLine,
      close: async () => {
        await d.stop();
        await a.stop();
        await lab.destroy();
        if (ownDir) removeTempDir(dir);
      },
    };
  } catch (err) {
    await daemon?.stop();
    await agent?.stop();
    await lab.destroy();
    if (ownDir) removeTempDir(dir);
    throw err;
  }
}
