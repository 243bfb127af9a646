import { dirname, join } from 'node:path';

/** The data directory is the database's directory: the socket and status file live beside it. */
export const controlSocketPath = (db: string) => join(dirname(db), 'ampere.sock');

/** The status file the daemon rewrites every 5 s (read by `ampere health` when the socket cannot answer). */
export const statusPath = (db: string) => join(dirname(db), 'ampere.status.json');

/**
 * Left by a restore from a backup (docker/entrypoint.sh restore): the next start lets the kernel
 * follow the restored database instead of adopting the kernel bans it lacks.
 */
export const restoredMarkerPath = (db: string) => `${db}.restored`;
