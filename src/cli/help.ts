import { EXIT, usageError } from './common';
import { flagsOf, USAGE_OF } from './usage';

/** `ampere help <command>`: that command's usage, as its own --help prints it. */
export async function helpCommand(args: string[]): Promise<number> {
  if (args.length !== 1) throw usageError(`help: give one command\nusage: ampere ${USAGE_OF.help}`);
  const usage = USAGE_OF[args[0]];
  if (usage === undefined) throw usageError(`help: unknown command ${JSON.stringify(args[0])}; commands: ${Object.keys(USAGE_OF).join(', ')}`);
  process.stdout.write(`usage: ampere ${usage}\n`);
  return EXIT.ok;
}

const words = (list: string[]) => list.join(' ');

/** Completion for bash: commands first, then the flags of the command being typed. */
export function bashCompletion(): string {
  const commands = Object.keys(USAGE_OF);
  const cases = commands.map((c) => `    ${c}) opts="${words(flagsOf(c))}${c === 'help' ? ` ${words(commands)}` : c === 'completion' ? ' bash zsh' : ''}" ;;`).join('\n');
  return `# ampere bash completion: eval "$(ampere completion bash)"
_ampere() {
  local cur=\${COMP_WORDS[COMP_CWORD]} opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${words(commands)}" -- "$cur"))
    return 0
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
    *) opts="" ;;
  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o default -F _ampere ampere
`;
}

/** Completion for zsh, through bashcompinit (one script to keep, same words). */
export function zshCompletion(): string {
  return `# ampere zsh completion: eval "$(ampere completion zsh)"
autoload -U +X bashcompinit && bashcompinit
${bashCompletion()}`;
}

/** `ampere completion bash|zsh`: prints the script to stdout. */
export async function completionCommand(args: string[]): Promise<number> {
  if (args[0] === '--help' || args[0] === '-h') { process.stdout.write(`usage: ampere ${USAGE_OF.completion}\n`); return EXIT.ok; }
  if (args.length !== 1 || (args[0] !== 'bash' && args[0] !== 'zsh')) throw usageError(`completion: give bash or zsh\nusage: ampere ${USAGE_OF.completion}`);
  process.stdout.write(args[0] === 'bash' ? bashCompletion() : zshCompletion());
  return EXIT.ok;
}

/** For a command that reads no options (run, health): `--help` prints its usage instead of running it. */
export function withHelp(name: string, command: (args: string[]) => Promise<number>) {
  return (args: string[]) => (args.includes('--help') || args.includes('-h') ? helpCommand([name]) : command(args));
}
