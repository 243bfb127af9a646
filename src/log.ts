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
 * Write out every log line still buffered, synchronously: a path that ends the process
 * (a fatal error, an uncaught exception) calls it first, or the lines before the crash,
 * the ones that say why, are lost with the asynchronous destination's buffer.
 */
export function flushLogSync(log: Logger): void {
  const stream = (log as unknown as Record<symbol, { flushSync?: () => void } | undefined>)[pino.symbols.streamSym];
  try { stream?.flushSync?.(); } catch { /* nothing buffered, or stdout is gone: nothing more to save */ }
}
