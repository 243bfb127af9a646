import { ConfigError, loadConfig } from '../config';
import { createLogger } from '../log';
import { startDaemon } from '../main';

/** `ampere run`: the daemon. A bad config ends it at once with one line naming the key. */
export async function runCommand(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) { console.error(`ampere: ${err.message}`); return 1; }
    throw err;
  }
  const log = createLogger(loaded.config.log_level);
  let daemon;
  try {
    daemon = await startDaemon(loaded, log);
  } catch (err) {
    log.fatal({ err: err instanceof Error ? err.message : String(err) }, 'ampere could not start');
    log.flush();
    return 1;
  }
  return new Promise<number>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, 'stopping');
      daemon.stop().then(() => { log.flush(); resolve(0); }, (err) => { log.error({ err: String(err) }, 'unclean stop'); log.flush(); resolve(1); });
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
}
