#!/usr/bin/env node
import { runCommand } from './cli/run';
import { healthCommand } from './cli/health';

/** `ampere <command>`: each command is one module under src/cli/. Exit codes: 0 ok, 1 failure, 2 usage. */
const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: runCommand,
  health: healthCommand,
};

const USAGE = `usage: ampere <command> [options]
commands:
  run        run the daemon (what npm start and the container run)
  health     exit 0 when the running daemon is connected to AMI and its firewall is in sync`;

async function main(argv: string[]): Promise<number> {
  const [name = 'run', ...args] = argv;
  if (name === '-h' || name === '--help' || name === 'help') { console.log(USAGE); return 0; }
  const cmd = COMMANDS[name];
  if (!cmd) { console.error(`ampere: unknown command "${name}"\n${USAGE}`); return 2; }
  return cmd(args);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`ampere: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);
