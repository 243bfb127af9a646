/*
 * netprobe: the packet side of Ampere's benchmarks (bench/run.ts builds it with gcc).
 * Every timestamp is CLOCK_MONOTONIC in nanoseconds, the clock Node's process.hrtime uses,
 * so times taken here and in the benchmark's Node processes can be subtracted.
 *
 *   netprobe probe PBX_NS ATK_NS DST4 DST6 PORT INTERVAL_US
 *     Reaction prober. One process, two namespaces: a raw socket opened in ATK_NS sends UDP
 *     datagrams with any (spoofed) source to DST:PORT, and a UDP socket opened in PBX_NS
 *     receives what the firewall lets through. Commands on stdin, one per line:
 *       P <src>   probe <src> every INTERVAL_US until its datagrams stop arriving. Prints
 *                 "O <src>" once the first one arrived (the path is open), then
 *                 "R <src> <last_ok_send_ns> <first_lost_send_ns> <sent> <ok>" once at least
 *                 GAP_N datagrams in a row and GAP_MS of time were lost, or
 *                 "T <src> <sent> <ok>" after 5 s without that (no ban), or
 *                 "X <src>" when nothing came through within 1 s (path closed from the start).
 *       Q         quit.
 *
 *   netprobe sink PORT SECONDS
 *     Counts UDP datagrams (IPv4) on PORT. Prints "ready", then, once traffic started and
 *     stopped for 300 ms (or SECONDS passed), "<count> <first_ns> <last_ns>".
 *
 *   netprobe blast SRC DST PORT SECONDS
 *     Sends 64-byte UDP datagrams from SRC as fast as sendmmsg allows. Prints "<sent> <ns>".
 *
 *   netprobe brute DST PORT PACE_US DURATION_MS SRC...
 *     Brute-force clients, one UDP socket per SRC. PACE_US = 0: closed loop, the next attempt
 *     leaves as soon as the answer to the previous one arrived (as fast as the server allows;
 *     an unanswered attempt is sent again after 20 ms). PACE_US > 0: one attempt every PACE_US
 *     whatever happens (a scanner's fixed pace). Prints "<src> <sent> <answered>" per SRC.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x414d504552453031ULL /* "AMPERE01" */
#define GAP_N 100
#define GAP_MS 5

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "netprobe: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void enter_ns(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "/run/netns/%s", name);
  int fd = open(path, O_RDONLY);
  if (fd < 0) die(path);
  if (setns(fd, CLONE_NEWNET) < 0) die("setns");
  close(fd);
}

struct payload {
  uint64_t magic;
  uint64_t seq;
  uint64_t send_ns;
};

static uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const void *data, size_t len) {
  const uint8_t *p = data;
  for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += (uint32_t)(p[len - 1] << 8);
  return sum;
}

/* ---------------------------------------------------------------- probe */

struct target {
  int family;
  struct in_addr src4, dst4;
  struct in6_addr src6, dst6;
};

static int build_packet(uint8_t *buf, const struct target *t, uint16_t port, const struct payload *pl) {
  if (t->family == 4) {
    struct iphdr *ip = (struct iphdr *)buf;
    struct udphdr *udp = (struct udphdr *)(buf + sizeof *ip);
    memset(ip, 0, sizeof *ip);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->saddr = t->src4.s_addr;
    ip->daddr = t->dst4.s_addr;
    ip->tot_len = htons(sizeof *ip + sizeof *udp + sizeof *pl); /* the kernel fills id and checksum */
    udp->source = htons(40000);
    udp->dest = htons(port);
    udp->len = htons(sizeof *udp + sizeof *pl);
    udp->check = 0; /* optional for IPv4 */
    memcpy(buf + sizeof *ip + sizeof *udp, pl, sizeof *pl);
    return (int)(sizeof *ip + sizeof *udp + sizeof *pl);
  }
  struct ip6_hdr *ip6 = (struct ip6_hdr *)buf;
  struct udphdr *udp = (struct udphdr *)(buf + sizeof *ip6);
  uint16_t ulen = sizeof *udp + sizeof *pl;
  memset(ip6, 0, sizeof *ip6);
  ip6->ip6_flow = htonl(6u << 28);
  ip6->ip6_plen = htons(ulen);
  ip6->ip6_nxt = IPPROTO_UDP;
  ip6->ip6_hlim = 64;
  ip6->ip6_src = t->src6;
  ip6->ip6_dst = t->dst6;
  udp->source = htons(40000);
  udp->dest = htons(port);
  udp->len = htons(ulen);
  udp->check = 0;
  memcpy(buf + sizeof *ip6 + sizeof *udp, pl, sizeof *pl);
  /* IPv6 requires the UDP checksum: pseudo-header + UDP header + payload. */
  uint32_t sum = 0;
  sum = csum_add(sum, &t->src6, 16);
  sum = csum_add(sum, &t->dst6, 16);
  sum += ulen;
  sum += IPPROTO_UDP;
  sum = csum_add(sum, udp, ulen);
  uint16_t c = csum_fold(sum);
  udp->check = htons(c ? c : 0xffff);
  return (int)(sizeof *ip6 + ulen);
}

static int cmd_probe(int argc, char **argv) {
  if (argc < 8) { fprintf(stderr, "usage: netprobe probe PBX_NS ATK_NS DST4 DST6 PORT INTERVAL_US\n"); return 2; }
  const char *pbx = argv[2], *atk = argv[3];
  struct target t;
  memset(&t, 0, sizeof t);
  if (inet_pton(AF_INET, argv[4], &t.dst4) != 1 || inet_pton(AF_INET6, argv[5], &t.dst6) != 1) { fprintf(stderr, "bad DST\n"); return 2; }
  uint16_t port = (uint16_t)atoi(argv[6]);
  uint64_t interval = (uint64_t)atoll(argv[7]) * 1000ULL;

  int self = open("/proc/self/ns/net", O_RDONLY);
  if (self < 0) die("own netns");
  enter_ns(pbx);
  int rx4 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  int rx6 = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (rx4 < 0 || rx6 < 0) die("socket rx");
  int one = 1, big = 4 << 20;
  setsockopt(rx6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  setsockopt(rx4, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  setsockopt(rx6, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
  struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any };
  if (bind(rx4, (struct sockaddr *)&a4, sizeof a4) < 0) die("bind rx4");
  if (bind(rx6, (struct sockaddr *)&a6, sizeof a6) < 0) die("bind rx6");
  enter_ns(atk);
  int tx4 = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  int tx6 = socket(AF_INET6, SOCK_RAW, IPPROTO_RAW);
  if (tx4 < 0 || tx6 < 0) die("socket raw");
  setsockopt(tx4, IPPROTO_IP, IP_HDRINCL, &one, sizeof one);
  if (setns(self, CLONE_NEWNET) < 0) die("setns back");

  setvbuf(stdout, NULL, _IOLBF, 0);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake on time: the probe interval is the resolution */
  char line[256];
  uint64_t *sent_at = malloc(sizeof(uint64_t) * 200000);
  while (fgets(line, sizeof line, stdin)) {
    if (line[0] == 'Q') break;
    if (line[0] != 'P') continue;
    char src[128];
    if (sscanf(line + 1, "%127s", src) != 1) continue;
    if (inet_pton(AF_INET, src, &t.src4) == 1) t.family = 4;
    else if (inet_pton(AF_INET6, src, &t.src6) == 1) t.family = 6;
    else { printf("E %s\n", src); continue; }
    uint64_t seq = 0, ok = 0, last_ok_seq = 0, last_ok_at = 0;
    int open_reported = 0, have_ok = 0;
    uint64_t start = now_ns(), next = start;
    for (;;) {
      uint64_t now = now_ns();
      if (now >= next) {
        struct payload pl = { MAGIC, seq, 0 };
        uint8_t pkt[128];
        pl.send_ns = now_ns();
        int len = build_packet(pkt, &t, port, &pl);
        ssize_t r;
        if (t.family == 4) {
          struct sockaddr_in d = { .sin_family = AF_INET, .sin_addr = t.dst4 };
          r = sendto(tx4, pkt, len, 0, (struct sockaddr *)&d, sizeof d);
        } else {
          struct sockaddr_in6 d = { .sin6_family = AF_INET6, .sin6_addr = t.dst6 };
          r = sendto(tx6, pkt, len, 0, (struct sockaddr *)&d, sizeof d);
        }
        if (r < 0 && errno != ENOBUFS && errno != EAGAIN) die("sendto");
        if (seq < 200000) sent_at[seq] = pl.send_ns;
        seq++;
        next += interval;
        if (next < now) next = now + interval; /* we were descheduled: do not burst */
      }
      /* Drain what arrived. */
      for (;;) {
        struct payload pl;
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(t.family == 4 ? rx4 : rx6, &pl, sizeof pl, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) break;
        if (n != sizeof pl || pl.magic != MAGIC) continue;
        int same = t.family == 4 ? ((struct sockaddr_in *)&from)->sin_addr.s_addr == t.src4.s_addr
                                 : memcmp(&((struct sockaddr_in6 *)&from)->sin6_addr, &t.src6, 16) == 0;
        if (!same || pl.seq >= seq) continue;
        ok++;
        if (!have_ok || pl.seq > last_ok_seq) { last_ok_seq = pl.seq; have_ok = 1; }
        last_ok_at = now_ns();
      }
      if (have_ok && !open_reported) { printf("O %s\n", src); open_reported = 1; }
      now = now_ns();
      if (!have_ok) {
        if (now - start > 1000000000ULL) { printf("X %s\n", src); break; }
      } else if (seq - 1 - last_ok_seq >= GAP_N && now - last_ok_at >= GAP_MS * 1000000ULL) {
        uint64_t lost = last_ok_seq + 1;
        printf("R %s %llu %llu %llu %llu\n", src, (unsigned long long)sent_at[last_ok_seq < 200000 ? last_ok_seq : 199999],
               (unsigned long long)sent_at[lost < 200000 ? lost : 199999], (unsigned long long)seq, (unsigned long long)ok);
        break;
      }
      if (now - start > 5000000000ULL) { printf("T %s %llu %llu\n", src, (unsigned long long)seq, (unsigned long long)ok); break; }
      /* Sleep until the next send, but wake for arrivals. */
      uint64_t wait = next > now ? next - now : 0;
      if (wait > 20000) {
        struct pollfd p = { .fd = t.family == 4 ? rx4 : rx6, .events = POLLIN };
        struct timespec ts = { 0, (long)(wait - 10000) };
        ppoll(&p, 1, &ts, NULL);
      }
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- sink / blast */

static int cmd_sink(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: netprobe sink PORT SECONDS\n"); return 2; }
  uint16_t port = (uint16_t)atoi(argv[2]);
  uint64_t limit = (uint64_t)(atof(argv[3]) * 1e9);
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 8 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  struct timeval tv = { 0, 100000 };
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  printf("ready\n");
  fflush(stdout);
  enum { B = 64 };
  static char bufs[B][128];
  struct mmsghdr msgs[B];
  struct iovec iov[B];
  uint64_t count = 0, first = 0, last = 0, begin = now_ns();
  for (;;) {
    for (int i = 0; i < B; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = sizeof bufs[i];
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(s, msgs, B, 0, NULL);
    uint64_t now = now_ns();
    if (n > 0) {
      if (!count) first = now;
      count += (uint64_t)n;
      last = now;
    }
    if (count && now - last > 300000000ULL) break;
    if (now - begin > limit) break;
  }
  printf("%llu %llu %llu\n", (unsigned long long)count, (unsigned long long)first, (unsigned long long)last);
  return 0;
}

static int cmd_blast(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: netprobe blast SRC DST PORT SECONDS\n"); return 2; }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[4])) };
  if (inet_pton(AF_INET, argv[2], &src.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &dst.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
  if (bind(s, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
  if (connect(s, (struct sockaddr *)&dst, sizeof dst) < 0) die("connect");
  uint64_t dur = (uint64_t)(atof(argv[5]) * 1e9);
  enum { B = 64 };
  static char payload[B][36];
  struct mmsghdr msgs[B];
  struct iovec iov[B];
  for (int i = 0; i < B; i++) {
    memset(payload[i], 'x', sizeof payload[i]);
    iov[i].iov_base = payload[i];
    iov[i].iov_len = sizeof payload[i]; /* 20 + 8 + 36 = 64-byte IP packets */
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t sent = 0, start = now_ns(), now = start;
  while ((now = now_ns()) - start < dur) {
    int n = sendmmsg(s, msgs, B, 0);
    if (n > 0) sent += (uint64_t)n;
    else if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) die("sendmmsg");
  }
  printf("%llu %llu\n", (unsigned long long)sent, (unsigned long long)(now - start));
  return 0;
}

/* ---------------------------------------------------------------- brute */

static int cmd_brute(int argc, char **argv) {
  if (argc < 7) { fprintf(stderr, "usage: netprobe brute DST PORT PACE_US DURATION_MS SRC...\n"); return 2; }
  struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3])) };
  if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) { fprintf(stderr, "bad DST\n"); return 2; }
  uint64_t pace = (uint64_t)atoll(argv[4]) * 1000ULL;
  uint64_t dur = (uint64_t)atoll(argv[5]) * 1000000ULL;
  int n = argc - 6;
  int *fd = calloc(n, sizeof *fd);
  uint64_t *sent = calloc(n, 8), *answered = calloc(n, 8), *due = calloc(n, 8);
  struct pollfd *pfd = calloc(n, sizeof *pfd);
  for (int i = 0; i < n; i++) {
    struct sockaddr_in src = { .sin_family = AF_INET };
    if (inet_pton(AF_INET, argv[6 + i], &src.sin_addr) != 1) { fprintf(stderr, "bad SRC %s\n", argv[6 + i]); return 2; }
    fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (bind(fd[i], (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    if (connect(fd[i], (struct sockaddr *)&dst, sizeof dst) < 0) die("connect");
    pfd[i].fd = fd[i];
    pfd[i].events = POLLIN;
  }
  char msg[160];
  uint64_t start = now_ns();
  for (int i = 0; i < n; i++) due[i] = start;
  for (;;) {
    uint64_t now = now_ns();
    if (now - start >= dur) break;
    uint64_t soonest = start + dur;
    for (int i = 0; i < n; i++) {
      if (now >= due[i]) {
        int len = snprintf(msg, sizeof msg, "REGISTER sip:100@bench SIP/2.0\r\nX-Attempt: %llu\r\n\r\n", (unsigned long long)sent[i] + 1);
        if (send(fd[i], msg, (size_t)len, 0) >= 0 || errno == ECONNREFUSED) sent[i]++;
        due[i] = pace ? due[i] + pace : now + 20000000ULL; /* closed loop: resend after 20 ms without answer */
        if (pace && due[i] < now) due[i] = now + pace;
      }
      if (due[i] < soonest) soonest = due[i];
    }
    now = now_ns();
    uint64_t wait = soonest > now ? soonest - now : 0;
    struct timespec ts = { (time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL) };
    int r = ppoll(pfd, (nfds_t)n, &ts, NULL);
    if (r <= 0) continue;
    for (int i = 0; i < n; i++) {
      if (!(pfd[i].revents & POLLIN)) continue;
      char buf[512];
      while (recv(fd[i], buf, sizeof buf, 0) > 0) {
        answered[i]++;
        if (!pace) due[i] = now_ns(); /* closed loop: the next attempt goes at once */
      }
    }
  }
  for (int i = 0; i < n; i++) printf("%s %llu %llu\n", argv[6 + i], (unsigned long long)sent[i], (unsigned long long)answered[i]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: netprobe probe|sink|blast|brute ...\n"); return 2; }
  if (!strcmp(argv[1], "probe")) return cmd_probe(argc, argv);
  if (!strcmp(argv[1], "sink")) return cmd_sink(argc, argv);
  if (!strcmp(argv[1], "blast")) return cmd_blast(argc, argv);
  if (!strcmp(argv[1], "brute")) return cmd_brute(argc, argv);
  fprintf(stderr, "netprobe: unknown mode %s\n", argv[1]);
  return 2;
}
