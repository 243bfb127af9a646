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
