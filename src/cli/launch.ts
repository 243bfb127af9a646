import { LAUNCH_HEAP_LIMIT_MB, LAUNCH_SEMI_SPACE_MB } from './heap';

/**
 * How V8 compiles the daemon, given by its launchers (`npm start`, docker/entrypoint.sh for
 * `run`): every function compiled when its module loads, and kept.
 * - `--no-lazy`: V8 otherwise compiles a function on its first call, and a ban's path
 *   (decision, queue, ipset shell) first runs on the first ban, which then waits for the
 *   compiler (docs/notes/measurements.md, Launch flags).
 * - `--no-flush-bytecode`: V8 otherwise drops the bytecode of functions not run for a while,
 *   and the first ban after a quiet spell would compile its path again.
 */
export const LAUNCH_COMPILE_FLAGS = ['--no-lazy', '--no-flush-bytecode'];

/** The heap's size: its limit and its young generation's semi-space (src/cli/heap.ts). */
export const LAUNCH_HEAP_FLAGS = [`--max-old-space-size=${LAUNCH_HEAP_LIMIT_MB}`, `--max-semi-space-size=${LAUNCH_SEMI_SPACE_MB}`];

/**
 * Every Node flag the launchers give the daemon: the heap's size (each of which the entrypoint
 * leaves to NODE_OPTIONS when those set it) and the compile flags. Tests hold package.json and
 * the entrypoint to this list; the benchmark starts the daemon with it.
 */
export const LAUNCH_NODE_FLAGS = [...LAUNCH_HEAP_FLAGS, ...LAUNCH_COMPILE_FLAGS];
