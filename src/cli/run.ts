import { setPriority } from 'node:os';
import { getHeapStatistics } from 'node:v8';
import { ConfigError, loadConfig, type Config } from '../config';
import { createLogger, flushLogSync, logDestination, type Logger } from '../log';
import { ReloadRefused, startDaemon } from '../daemon';
import { HEAP_RESERVE_BYTES, maxHostsFor, tableHeapBytes } from './heap';

const MB = 1024 * 1024;

/**
 * A max_hosts whose full penalty table cannot fit Node's heap would let a flood of new sources
 * crash the daemon (out of memory), then crash it again after every restart: refuse to start
 * instead, naming the key, the limit and both ways out.
 */
export function heapProblem(cfg: Pick<Config, 'max_hosts' | 'loyalty'>, heapLimitBytes: number): string | null {
  const need = HEAP_RESERVE_BYTES + tableHeapBytes(cfg.max_hosts, cfg.loyalty);
  if (need <= heapLimitBytes) return null;
  const fits = maxHostsFor(heapLimitBytes, cfg.loyalty);
  const raise = Math.ceil(need / MB / 64) * 64;
  return `max_hosts=${cfg.max_hosts} does not fit Node's heap: at loyalty=${cfg.loyalty} a full penalty table can take ` +
    `${Math.ceil(tableHeapBytes(cfg.max_hosts, cfg.loyalty) / MB)} MB, and the heap limit is ${Math.floor(heapLimitBytes / MB)} MB ` +
    `(${HEAP_RESERVE_BYTES / MB} MB of it kept for the rest). Lower max_hosts to ${fits} or less, ` +
    `or raise the limit: NODE_OPTIONS=--max-old-space-size=${raise}`;
}

/**
 * The daemon's scheduling priority, set before it starts any process: the ipset shell that
 * makes each ban real inherits it (the conntrack helper runs 10 lower). On a busy machine a
 * woken daemon then runs sooner (docs/notes/measurements.md, Nice). 0 leaves the priority as launched. Raising it needs
 * CAP_SYS_NICE (root has it; docker-compose.yml adds it); without, the daemon says so and runs.
 */
export function applyNice(nice: number, log: Pick<Logger, 'info' | 'warn'>): void {
  if (nice === 0) return;
  try {
    setPriority(nice);
    log.info({ nice }, 'scheduling priority set');
  } catch (err) {
    log.warn({ nice, err: err instanceof Error ? err.message : String(err) }, 'could not set the scheduling priority (raising it needs CAP_SYS_NICE): running as launched');
  }
}

/**
 * An uncaught exception or unhandled rejection ends the daemon (its state is unknown; the
 * supervisor restarts it and the bans stay in the kernel), but never silently: the reason is
 * logged and every buffered log line written out before the exit.
 */
export function exitOnFault(log: Logger): void {
  const fatal = (what: string) => (err: unknown) => {
    log.fatal({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, what);
    flushLogSync(log);
    process.exit(1);
  };
  process.on('uncaughtException', fatal('uncaught exception: ampere stops'));
  process.on('unhandledRejection', fatal('unhandled promise rejection: ampere stops'));
}

/** `ampere run`: the daemon. A bad config ends it at once with one line naming the key. */
export async function runCommand(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) { console.error(`ampere: ${err.message}`); return 1; }
    throw err;
  }
  const heap = heapProblem(loaded.config, getHeapStatistics().heap_size_limit);
  if (heap) { console.error(`ampere: ${heap}`); return 1; }
  const log = createLogger(loaded.config.log_level, logDestination(loaded.config.log_format));
  exitOnFault(log);
  applyNice(loaded.config.nice, log);
  // Handlers first: until a listener exists the kernel's default for SIGTERM ends the process at
  // once, and a supervisor may signal as soon as it reads "ampere started". A signal during the
  // start is kept and answered when the start is done. "stopping" is logged in the handler
  // itself, so it is in the log even if a fault follows in the same tick.
  const stopSignal = new Promise<string>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => { log.info({ signal }, 'stopping'); resolve(signal); });
    }
  });
  let daemon: Awaited<ReturnType<typeof startDaemon>> | null = null;
  // SIGHUP reloads the configuration (a refusal is logged by reload) instead of ending the daemon.
  process.on('SIGHUP', () => {
    if (!daemon) { log.warn('SIGHUP during the start: nothing reloaded'); return; }
    daemon.reload().catch((err) => { if (!(err instanceof ReloadRefused)) log.error({ err: String(err) }, 'configuration reload failed'); });
  });
  try {
    daemon = await startDaemon(loaded, log);
  } catch (err) {
    log.fatal({ err: err instanceof Error ? err.message : String(err) }, 'ampere could not start');
    flushLogSync(log);
    // What the failed start left open (a timer, a socket) must not keep a daemon that does nothing alive.
    process.exit(1);
  }
  await stopSignal;
  try {
    await daemon.stop();
    return 0;
  } catch (err) {
    log.error({ err: String(err) }, 'unclean stop');
    return 1;
  } finally {
    flushLogSync(log);
  }
}
