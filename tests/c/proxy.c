/*
 * A proxy hosted in C through libanytun's proxy mode (include/anytun.h,
 * anytun_proxy_*), as res_anytun hosts one inside Asterisk. Run by
 * tests/c_proxy.rs beside a standalone anytund it syncs with.
 *
 *   proxy_test STATE_DIR NODE_ID LISTEN SYNC_LISTEN PEER
 *       Makes the proxy from the struct fields (no config file; LISTEN
 *       shared with SO_REUSEPORT), prints
 *       its node key, starts it, waits until it is ready (serving and
 *       synced with PEER), prints READY, then obeys commands on stdin:
 *         status    print "STATUS dropped=N" (datagrams it dropped)
 *         waitcall  wait (at most 30 s) until it holds a call; print status
 *         reload    print the frames relayed so far; a reload with the same
 *                   settings (ANYTUN_OK, nothing restarts) and one that
 *                   cannot start (metrics on a TCP port held here:
 *                   ANYTUN_ERR_IO, naming it; the proxy restarts with its
 *                   old settings)
 *         stop      stop, free, print the thread counts, exit
 *   proxy_test errors
 *       Error paths from C: NULLs, struct sizes, bad settings, lifecycle.
 *
 * Prints "RESULT key=value" lines; exits 0 only when its own checks passed.
 */
#define _POSIX_C_SOURCE 200809L
#include "anytun.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failures++;
}

#define EXPECT(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)
#define EXPECT_CODE(expr, code) do { \
    int r_ = (expr); \
    if (r_ != (code)) { \
        char d_[512]; anytun_last_error(d_, sizeof d_, NULL); \
        fail("%s = %d (%s), expected %d [line %d] %s", #expr, r_, \
             anytun_strerror(r_), (code), __LINE__, d_); \
    } \
} while (0)

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void log_line(void *user, int level, const char *target,
                     const char *message)
{
    (void)user;
    fprintf(stderr, "log %d %s: %s\n", level, target, message);
}

static anytun_proxy_status status_of(anytun_proxy *p)
{
    anytun_proxy_status st;
    anytun_proxy_status_init(&st);
    EXPECT_CODE(anytun_proxy_get_status(p, &st), ANYTUN_OK);
    return st;
}

static void print_peers(anytun_proxy *p)
{
    anytun_proxy_peer_info peers[4];
    size_t n = 99, i;
    /* A size query, then too small, then enough. */
    EXPECT_CODE(anytun_proxy_peers(p, NULL, 0, &n), ANYTUN_ERR_BUFFER_TOO_SMALL);
    EXPECT(n == 1, "peers: count %zu, expected 1", n);
    EXPECT_CODE(anytun_proxy_peers(p, peers, 4, &n), ANYTUN_OK);
    for (i = 0; i < n; i++)
        printf("RESULT peer=%u,%d,%s\n", peers[i].node_id, peers[i].state,
               peers[i].address);
}

static int run_host(char **argv)
{
    anytun_proxy_config pc;
    anytun_proxy *p = NULL;
    anytun_proxy_status st;
    const char *peers[1];
    char key[ANYTUN_KEY_TEXT_SIZE], line[64], detail[512];
    size_t needed = 0;
    int before, running, after;
    double t;

    EXPECT_CODE(anytun_set_logger(log_line, NULL, ANYTUN_LOG_INFO), ANYTUN_OK);
    before = count_threads();
    anytun_proxy_config_init(&pc);
    pc.flags = ANYTUN_PROXY_REUSE_PORT;
    pc.state_dir = argv[1];
    pc.node_id = (uint32_t)atoi(argv[2]);
    pc.listen = argv[3];
    pc.sync_listen = argv[4];
    peers[0] = argv[5];
    pc.peers = peers;
    pc.n_peers = 1;
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_OK);
    if (!p)
        return 1;
    EXPECT_CODE(anytun_proxy_node_key(p, key, 4, &needed),
                ANYTUN_ERR_BUFFER_TOO_SMALL);
    EXPECT(needed == 45, "node key needs %zu bytes", needed);
    EXPECT_CODE(anytun_proxy_node_key(p, key, sizeof key, NULL), ANYTUN_OK);
    printf("RESULT node_key=%s\n", key);
    st = status_of(p);
    EXPECT(st.state == ANYTUN_PROXY_IDLE, "state %d before start", st.state);
    EXPECT_CODE(anytun_proxy_reload(p, &pc), ANYTUN_ERR_NOT_STARTED);
    EXPECT_CODE(anytun_proxy_start(p), ANYTUN_OK);
    EXPECT_CODE(anytun_proxy_start(p), ANYTUN_ERR_ALREADY_STARTED);
    t = now_s();
    for (;;) {
        st = status_of(p);
        if (st.state == ANYTUN_PROXY_SERVING && st.ready)
            break;
        if (st.state == ANYTUN_PROXY_FAILED || now_s() - t > 30) {
            fail("not ready: state %d, %u/%u peers synced: %s", st.state,
                 st.peers_synced, st.peers, st.detail);
            anytun_proxy_free(p);
            return 1;
        }
        sleep_ms(20);
    }
    running = count_threads();
    EXPECT(st.peers == 1 && st.peers_up == 1 && st.peers_synced == 1,
           "peers %u up %u synced %u", st.peers, st.peers_up, st.peers_synced);
    printf("RESULT ready_s=%.2f\n", now_s() - t);
    printf("RESULT udp_port=%u\n", st.udp_port);
    printf("RESULT network_key=%s\n", st.network_key);
    printf("READY\n");
    fflush(stdout);

    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "waitcall", 8) == 0) {
            t = now_s();
            do {
                st = status_of(p);
                if (st.calls >= 1)
                    break;
                sleep_ms(10);
            } while (now_s() - t < 30);
            printf("RESULT threads_in_call=%d\n", count_threads());
            printf("RESULT calls=%u\n", st.calls);
            printf("RESULT sessions=%u\n", st.sessions);
            printf("RESULT registrations=%u\n", st.registrations);
            print_peers(p);
            printf("DONE\n");
        } else if (strncmp(line, "status", 6) == 0) {
            st = status_of(p);
            printf("STATUS dropped=%llu\n", (unsigned long long)st.dropped);
        } else if (strncmp(line, "reload", 6) == 0) {
            char metrics[32];
            struct sockaddr_in sa = { .sin_family = AF_INET };
            socklen_t sl = sizeof sa;
            int held = socket(AF_INET, SOCK_STREAM, 0);

            st = status_of(p);
            /* Before any restart: a restarted proxy counts from 0. */
            printf("RESULT frames_relayed=%llu\n", (unsigned long long)st.frames_relayed);
            EXPECT_CODE(anytun_proxy_reload(p, &pc), ANYTUN_OK);
            EXPECT(status_of(p).frames_relayed == st.frames_relayed,
                   "a reload of the same settings restarted the proxy");
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            EXPECT(held >= 0 && bind(held, (struct sockaddr *)&sa, sizeof sa) == 0
                       && listen(held, 1) == 0
                       && getsockname(held, (struct sockaddr *)&sa, &sl) == 0,
                   "holding a TCP port");
            snprintf(metrics, sizeof metrics, "127.0.0.1:%u", ntohs(sa.sin_port));
            pc.metrics_listen = metrics;
            EXPECT_CODE(anytun_proxy_reload(p, &pc), ANYTUN_ERR_IO);
            anytun_last_error(detail, sizeof detail, NULL);
            EXPECT(strncmp(detail, "metrics_listen changed, but", 27) == 0
                       && strstr(detail, "runs again with its old settings"),
                   "reload said %s", detail);
            pc.metrics_listen = NULL;
            close(held);
            printf("DONE\n");
        } else if (strncmp(line, "stop", 4) == 0) {
            break;
        }
        fflush(stdout);
    }
    EXPECT_CODE(anytun_proxy_stop(p), ANYTUN_OK);
    st = status_of(p);
    EXPECT(st.state == ANYTUN_PROXY_STOPPED, "state %d after stop", st.state);
    EXPECT_CODE(anytun_proxy_start(p), ANYTUN_ERR_STOPPED);
    EXPECT_CODE(anytun_proxy_stop(p), ANYTUN_OK);
    EXPECT_CODE(anytun_proxy_free(p), ANYTUN_OK);
    after = count_threads();
    EXPECT_CODE(anytun_set_logger(NULL, NULL, 0), ANYTUN_OK);
    printf("RESULT threads=%d,%d,%d\n", before, running, after);
    printf("RESULT errors=%d\n", failures);
    return failures ? 1 : 0;
}

static int run_errors(void)
{
    anytun_proxy_config pc;
    anytun_proxy *p = (anytun_proxy *)1;
    anytun_proxy_status st;
    anytun_proxy_peer_info info;
    size_t n;
    const char *bad_peers[1] = { "2 127.0.0.1:1" };
    char detail[256];

    EXPECT_CODE(anytun_proxy_config_init(NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_status_init(NULL), ANYTUN_ERR_NULL);
    anytun_proxy_config_init(&pc);
    EXPECT_CODE(anytun_proxy_new(&pc, NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_new(NULL, &p), ANYTUN_ERR_NULL);
    EXPECT(p == NULL, "*out not cleared on failure");
    /* Neither a file nor a state directory. */
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_INVALID);
    pc.state_dir = "/nonexistent-anytun-test";
    pc.struct_size = 8;
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_STRUCT_SIZE);
    anytun_proxy_config_init(&pc);
    pc.state_dir = "/nonexistent-anytun-test";
    pc.flags = 0x80;
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_STRUCT_SIZE);
    pc.flags = 0;
    pc.config_file = "/nonexistent-anytun-test/anytund.toml";
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_INVALID);
    pc.config_file = NULL;
    pc.node_id = 65535;
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_INVALID);
    pc.node_id = 1;
    pc.listen = "127.0.0.1";
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_INVALID);
    pc.listen = "127.0.0.1:0";
    pc.peers = bad_peers;
    pc.n_peers = 1;
    /* Peers without a sync_listen, then a peer entry of two fields. */
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_INVALID);
    pc.sync_listen = "127.0.0.1:0";
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_INVALID);
    anytun_last_error(detail, sizeof detail, NULL);
    EXPECT(strstr(detail, "peers[0]") != NULL, "detail: %s", detail);
    pc.peers = NULL;
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_ERR_NULL);
    pc.n_peers = 0;

    /* A good one, never started: everything on it, then free. */
    EXPECT_CODE(anytun_proxy_new(&pc, &p), ANYTUN_OK);
    anytun_proxy_status_init(&st);
    st.struct_size = 4;
    EXPECT_CODE(anytun_proxy_get_status(p, &st), ANYTUN_ERR_STRUCT_SIZE);
    EXPECT_CODE(anytun_proxy_get_status(p, NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_get_status(NULL, &st), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_peers(p, &info, 1, NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_peers(p, NULL, 0, &n), ANYTUN_OK);
    EXPECT(n == 0, "peers %zu", n);
    EXPECT_CODE(anytun_proxy_node_key(NULL, detail, sizeof detail, NULL),
                ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_reload(p, NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_start(NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_stop(NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_proxy_stop(p), ANYTUN_OK);
    EXPECT_CODE(anytun_proxy_start(p), ANYTUN_ERR_STOPPED);
    EXPECT_CODE(anytun_proxy_free(p), ANYTUN_OK);
    EXPECT_CODE(anytun_proxy_free(NULL), ANYTUN_OK);
    printf("RESULT errors=%d\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "errors") == 0)
        return run_errors();
    if (argc == 6)
        return run_host(argv);
    fprintf(stderr, "usage: %s errors | STATE_DIR NODE_ID LISTEN SYNC_LISTEN PEER\n",
            argv[0]);
    return 2;
}
