/*
 * ampere-ipset-load: the adds and deletes of a large ipset batch, sent to the kernel over
 * netlink in messages of many elements each.
 *
 * Why it exists: `ipset restore` resolves every address through getaddrinfo (a stat of
 * /etc/resolv.conf per line) and batches only into a set it created in the same run, so it
 * costs ~4 CPU-seconds per million lines; this costs ~0.6 (BENCHMARKS.md, Findings). Ampere
 * falls back to `ipset restore` when this program is not built.
 *
 * Input (stdin), one command per line, a strict subset of `ipset restore`'s grammar:
 *   add <set> <address>[/<prefix>][ timeout <seconds>]
 *   del <set> <address>[/<prefix>]
 * Adding a present element refreshes it and deleting an absent one is no error (like -exist).
 * The first line that cannot be parsed or that the kernel refuses stops the run, which exits 1
 * with "Error in line N: <reason>" on stderr, the words `ipset restore` uses, so the caller
 * treats both alike. Lines before it may be applied in part (they go in messages of many), as
 * with `ipset restore`. Input is trusted no more than any other: every field is checked before
 * it is copied into a message.
 *
 * With --serve it stays running and takes batch after batch, each ended by a line "commit":
 * it answers each on stdout with "ok" or "Error in line N: <reason>" (N counted from the
 * batch's first line; the rest of a failed batch is read and dropped). The daemon keeps one
 * running, because every process it starts costs it a page fault on each page it writes
 * afterwards (fork marks them copy-on-write).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <linux/netfilter.h>
#include <linux/netfilter/ipset/ip_set.h>
#include <linux/netfilter/ipset/ip_set_hash.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The longest timeout ipset takes (seconds), as in Ampere's IPSET_MAX_TIMEOUT. */
#define MAX_TIMEOUT 2147483u
#define MSG_SIZE 65536
#define LINE_SIZE 256

static char msg[MSG_SIZE] __attribute__((aligned(4)));
static size_t used;
static struct nlattr *adt;
static int sock;
static uint32_t seq;
/* The message being filled: its command, set and family; lines[i] is the input line of element i+1. */
static int cur_cmd;
static char cur_set[IPSET_MAXNAMELEN];
static int cur_family;
static uint32_t lines[MSG_SIZE / 16];
static uint32_t elements;

/* --serve: a failure ends the batch, not the process; the message waits for its "commit". */
static int serving;
static jmp_buf batch_failed;
static char failure[160];

static void fail(uint32_t line, const char *reason) {
  if (serving) {
    snprintf(failure, sizeof failure, "Error in line %u: %s", line, reason);
    longjmp(batch_failed, 1);
  }
  fprintf(stderr, "ampere-ipset-load: Error in line %u: %s\n", line, reason);
  exit(1);
}

static struct nlattr *attr(uint16_t type, const void *data, size_t n) {
  struct nlattr *a = (struct nlattr *)(msg + used);
  a->nla_type = type;
  a->nla_len = NLA_HDRLEN + n;
  if (n) memcpy((char *)a + NLA_HDRLEN, data, n);
  used += NLA_ALIGN(a->nla_len);
  return a;
}

static void close_attr(struct nlattr *a) { a->nla_len = (uint16_t)((msg + used) - (char *)a); }

static void begin(int cmd, const char *set, int family) {
  memset(msg, 0, NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg)));
  struct nlmsghdr *h = (struct nlmsghdr *)msg;
  h->nlmsg_type = (NFNL_SUBSYS_IPSET << 8) | cmd;
  /* No NLM_F_EXCL: the kernel then takes an add of a present element, or a delete of an absent one, as done. */
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  h->nlmsg_seq = ++seq;
  struct nfgenmsg *g = (struct nfgenmsg *)(msg + NLMSG_HDRLEN);
  g->nfgen_family = family == 6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
  g->version = NFNETLINK_V0;
  used = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
  uint8_t protocol = IPSET_PROTOCOL;
  attr(IPSET_ATTR_PROTOCOL, &protocol, 1);
  attr(IPSET_ATTR_SETNAME, set, strlen(set) + 1);
  /* The kernel writes the failing element's line number here in its error reply. */
  uint32_t none = 0;
  attr(IPSET_ATTR_LINENO, &none, 4);
  adt = attr(IPSET_ATTR_ADT | NLA_F_NESTED, NULL, 0);
  cur_cmd = cmd;
  snprintf(cur_set, sizeof cur_set, "%s", set);
  cur_family = family;
  elements = 0;
}

static const char *kernel_reason(int err) {
  switch (err) {
    case IPSET_ERR_HASH_FULL: return "Hash is full, cannot add more elements";
    case ENOENT: return "The set with the given name does not exist";
    case IPSET_ERR_PROTOCOL: return "Kernel error received: ipset protocol error";
    case IPSET_ERR_INVALID_CIDR: return "The value of the CIDR parameter of the IP address is invalid";
    case IPSET_ERR_INVALID_FAMILY: return "The address family of the element does not match the set";
    case IPSET_ERR_TIMEOUT: return "Timeout cannot be used: set was created without timeout support";
    case IPSET_ERR_HASH_ELEM: return "Null-valued element, cannot be stored in a hash type of set";
    default: return NULL;
  }
}

/* Send the message and read the kernel's answer; a refusal names the line it refused. */
static void send_message(void) {
  if (elements == 0) return;
  close_attr(adt);
  ((struct nlmsghdr *)msg)->nlmsg_len = (uint32_t)used;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(sock, msg, used, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) fail(lines[0], strerror(errno));
  static char reply[MSG_SIZE + 1024] __attribute__((aligned(4)));
  for (;;) {
    ssize_t n = recv(sock, reply, sizeof reply, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < (ssize_t)NLMSG_HDRLEN) fail(lines[0], n < 0 ? strerror(errno) : "short answer from the kernel");
    struct nlmsghdr *h = (struct nlmsghdr *)reply;
    if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
    struct nlmsgerr *e = NLMSG_DATA(h);
    if (e->error == 0) { elements = 0; return; }
    int err = -e->error;
    /* The echoed request: its top-level LINENO holds the failing element's number. */
    uint32_t line = lines[0];
    size_t head = NLMSG_HDRLEN + sizeof(int) + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    for (size_t at = head; at + NLA_HDRLEN <= (size_t)n;) {
      struct nlattr *a = (struct nlattr *)(reply + at);
      if (a->nla_len < NLA_HDRLEN || at + a->nla_len > (size_t)n) break;
      if ((a->nla_type & NLA_TYPE_MASK) == IPSET_ATTR_LINENO && a->nla_len >= NLA_HDRLEN + 4) {
        uint32_t k;
        memcpy(&k, (char *)a + NLA_HDRLEN, 4);
        if (k >= 1 && k <= elements) line = lines[k - 1];
        break;
      }
      at += NLA_ALIGN(a->nla_len);
    }
    const char *why = kernel_reason(err);
    char text[96];
    if (!why) { snprintf(text, sizeof text, "Kernel error received: %s (%d)", strerror(err < 4096 ? err : 0), err); why = text; }
    fail(line, why);
  }
}

/* A set name as Ampere makes them: 1-31 of [A-Za-z0-9_.-]. */
static int valid_set(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= IPSET_MAXNAMELEN) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.')) return 0;
  }
  return 1;
}

/* Digits only, at most max; -1 otherwise. */
static long number(const char *s, unsigned long max) {
  if (*s == 0 || strlen(s) > 10) return -1;
  unsigned long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    v = v * 10 + (unsigned long)(*s - '0');
  }
  return v > max ? -1 : (long)v;
}

static void parse_line(char *line, uint32_t number_of_line) {
  char *word[6];
  int words = 0;
  for (char *save = NULL, *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    if (words == 6) fail(number_of_line, "too many words");
    word[words++] = w;
  }
  if (words == 0) return; /* an empty line, as ipset restore allows */
  int cmd = strcmp(word[0], "add") == 0 ? IPSET_CMD_ADD : strcmp(word[0], "del") == 0 ? IPSET_CMD_DEL : -1;
  if (cmd < 0) fail(number_of_line, "only add and del lines are taken");
  if (words != 3 && !(cmd == IPSET_CMD_ADD && words == 5)) fail(number_of_line, "expected: add|del <set> <address>[/<prefix>] [timeout <seconds>]");
  if (!valid_set(word[1])) fail(number_of_line, "not a set name");
  long timeout = -1;
  if (words == 5) {
    if (strcmp(word[3], "timeout") != 0) fail(number_of_line, "only the timeout option is taken");
    timeout = number(word[4], MAX_TIMEOUT);
    if (timeout < 0) fail(number_of_line, "timeout is not a number of seconds within ipset's limit");
  }
  char *slash = strchr(word[2], '/');
  long prefix = -1;
  if (slash) { *slash = 0; prefix = number(slash + 1, 128); if (prefix < 0) fail(number_of_line, "not a prefix length"); }
  int family = strchr(word[2], ':') ? 6 : 4;
  unsigned char address[16];
  if (strlen(word[2]) > 45 || inet_pton(family == 6 ? AF_INET6 : AF_INET, word[2], address) != 1) fail(number_of_line, "not an IP address");
  if (prefix > (family == 6 ? 128 : 32)) fail(number_of_line, "prefix longer than the address");
  if (elements > 0 && (cmd != cur_cmd || family != cur_family || strcmp(word[1], cur_set) != 0)) send_message();
  if (elements > 0 && used + 96 > MSG_SIZE) send_message();
  if (elements == 0) begin(cmd, word[1], family);
  lines[elements++] = number_of_line;
  struct nlattr *data = attr(IPSET_ATTR_DATA | NLA_F_NESTED, NULL, 0);
  struct nlattr *ip = attr(IPSET_ATTR_IP | NLA_F_NESTED, NULL, 0);
  attr((family == 6 ? IPSET_ATTR_IPADDR_IPV6 : IPSET_ATTR_IPADDR_IPV4) | NLA_F_NET_BYTEORDER, address, family == 6 ? 16 : 4);
  close_attr(ip);
  if (prefix >= 0) { uint8_t cidr = (uint8_t)prefix; attr(IPSET_ATTR_CIDR, &cidr, 1); }
  if (timeout >= 0) { uint32_t t = htonl((uint32_t)timeout); attr(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, &t, 4); }
  attr(IPSET_ATTR_LINENO, &elements, 4);
  close_attr(data);
}

/* A line read: its newline dropped; too long or holding a NUL byte is an error of that line. */
static void check_line(char *line, ssize_t *len, uint32_t n) {
  if (*len > 0 && line[*len - 1] == '\n') line[--*len] = 0;
  if (*len > LINE_SIZE) fail(n, "line too long");
  if (strlen(line) != (size_t)*len) fail(n, "a NUL byte in the line");
}

/* --serve: batches ended by "commit", each answered on stdout. */
static int serve(void) {
  serving = 1;
  char *line = NULL;
  size_t size = 0;
  /* Static: a longjmp back into this loop must find them as they were. */
  static uint32_t n;
  static int dropping; /* the batch failed: its lines are read up to its "commit" */
  for (ssize_t len; (len = getline(&line, &size, stdin)) >= 0;) {
    int commit = len >= 6 && strncmp(line, "commit", 6) == 0 && (len == 6 || (len == 7 && line[6] == '\n'));
    if (commit) {
      if (!dropping) {
        if (setjmp(batch_failed) == 0) { send_message(); snprintf(failure, sizeof failure, "ok"); }
      }
      elements = 0;
      printf("%s\n", failure);
      if (fflush(stdout) != 0) return 1;
      n = 0;
      dropping = 0;
      continue;
    }
    if (dropping) continue;
    n++;
    if (setjmp(batch_failed) != 0) { dropping = 1; elements = 0; continue; }
    check_line(line, &len, n);
    parse_line(line, n);
  }
  free(line);
  return ferror(stdin) ? 1 : 0;
}

int main(int argc, char **argv) {
  sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (sock < 0) { fprintf(stderr, "ampere-ipset-load: netlink socket: %s\n", strerror(errno)); return 1; }
  struct sockaddr_nl self = {.nl_family = AF_NETLINK};
  if (bind(sock, (struct sockaddr *)&self, sizeof self) < 0) { fprintf(stderr, "ampere-ipset-load: netlink bind: %s\n", strerror(errno)); return 1; }
  if (argc == 2 && strcmp(argv[1], "--serve") == 0) return serve();
  if (argc != 1) { fprintf(stderr, "usage: ampere-ipset-load [--serve] < lines\n"); return 2; }
  char *line = NULL;
  size_t size = 0;
  uint32_t n = 0;
  for (ssize_t len; (len = getline(&line, &size, stdin)) >= 0;) {
    n++;
    check_line(line, &len, n);
    parse_line(line, n);
  }
  if (ferror(stdin)) { fprintf(stderr, "ampere-ipset-load: reading stdin: %s\n", strerror(errno)); return 1; }
  free(line);
  send_message();
  return 0;
}
