/**
 * The helper's whole program: a fixed string, never built from data. It reads one line per
 * batch on stdin (addresses separated by spaces), deletes their conntrack entries with ONE
 * `conntrack -R -` fed a `-D -f ipv4|ipv6 -s ADDR` line per address, and answers one line:
 * `done <n>` or `fail <exit code> <message>`. $1 is the conntrack binary.
 *
 * `conntrack -R` applies its lines only at end of input, hence one run per batch (a fork of
 * this small shell, not of the daemon). Its input must be a pipe, as here: it opens /dev/stdin,
 * which fails on the socket that Node gives a child as stdin. An address without entries is exit 0 there (unlike a
 * lone `conntrack -D`, which exits 1 with "0 flow entries have been deleted"); a real failure
 * (no CAP_NET_ADMIN, a line it cannot parse) exits non-zero with a message on stderr.
 * set -f and the character check keep `set -- $line` from globbing or passing options:
 * the daemon only ever writes checked canonical addresses, this is defence in depth.
 */
export const SCRIPT = `set -f
ct=$1
nl='
'
IFS=' '
while read -r line; do
  set -- $line
  n=$#
  for a in "$@"; do
    case $a in
      *[!0-9a-f.:]*) n=-1 ;;
    esac
  done
  if [ "$n" -lt 0 ]; then
    echo 'fail 2 refused a line that is not a list of canonical addresses'
    continue
  fi
  if [ "$n" -eq 0 ]; then
    echo 'done 0'
    continue
  fi
  err=$(
    for a in "$@"; do
      case $a in
        *:*) printf -- '-D -f ipv6 -s %s\\n' "$a" ;;
        *) printf -- '-D -f ipv4 -s %s\\n' "$a" ;;
      esac
    done | "$ct" -R - 2>&1 >/dev/null
  )
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "done $n"
  else
    IFS=$nl
    set -- $err
    IFS=' '
    echo "fail $rc $*"
  fi
done
`;
