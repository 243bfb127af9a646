import { writeSync } from 'node:fs';
import pino from 'pino';

export type Logger = pino.Logger;

/** One JSON logger for the whole daemon. Secrets are redacted wherever they appear by key. */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'ampere' },
      redact: { paths: ['pass', 'password', 'secret', '*.pass', '*.password', '*.secret'], censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/**
 * Where log lines go for a log_format: JSON through pino's own destination (null), or pretty,
 * one readable line per event from pino-pretty, written synchronously so that no line before
 * a crash is lost (pretty is for a terminal or journald, not for a flood).
 */
export function logDestination(format: 'json' | 'pretty', fd = 1): pino.DestinationStream | undefined {
  if (format === 'json') return undefined;
  // Required here: pino-pretty is 30 modules the JSON log never needs (see docs/notes/measurements.md, Launch flags).
  const { prettyFactory } = require('pino-pretty') as typeof import('pino-pretty');
  const pretty = prettyFactory({ colorize: false, singleLine: true, translateTime: 'SYS:standard', ignore: 'pid,hostname' });
  return {
    write(line: string) {
      try { writeSync(fd, pretty(line)); } catch { /* stdout is gone: nowhere left to say it */ }
    },
  };
}

/**
 * Write out every log line still buffered, synchronously: a path that ends the process
 * (a fatal error, an uncaught exception) calls it first, or the lines before the crash,
 * the ones that say why, are lost with the asynchronous destination's buffer.
 */
export function flushLogSync(log: Logger): void {
  const stream = (log as unknown as Record<symbol, { flushSync?: () => void } | undefined>)[pino.symbols.streamSym];
  try { stream?.flushSync?.(); } catch { /* nothing buffered, or stdout is gone: nothing more to save */ }
}
