/*
 * A phone in C on libanytun (include/anytun.h), run by tests/c_abi.rs.
 *
 *   call_test errors
 *       Error paths of the C ABI: NULL pointers, buffers too small, calls
 *       on handles not started or stopped, unknown codes, the logger.
 *   call_test answer KEYFILE NETWORK_KEY PROXY NAME CODEC FRAMES
 *       Registers NAME, answers one call with CODEC, sends DTMF "9*" and
 *       FRAMES frames of a 1000 Hz tone, checks the caller's frames sample
 *       for sample, and reports when the caller hangs up.
 *   call_test call KEYFILE NETWORK_KEY PROXY NAME FRAMES CODEC...
 *       Calls NAME offering CODEC..., sends FRAMES frames of a 440 Hz tone,
 *       sends DTMF "123#" from inside its voice callback, checks the
 *       callee's frames, and hangs up from inside its voice callback when
 *       the last frame arrives.
 *
 * With ANYTUN_TEST_BIND=IP:PORT in the environment, answer and call bind
 * their socket there.
 *
 * Both print "RESULT key=value" lines for the harness and exit 0 only when
 * their own checks passed. Both check that stopping the client joins its
 * thread (/proc/self/task before start, while running, after stop).
 */
#define _POSIX_C_SOURCE 200809L
#include "anytun.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SAMPLES 160
#define PI 3.14159265358979323846
#define MAX_FRAMES 2000

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
        char d_[256]; anytun_last_error(d_, sizeof d_, NULL); \
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

/* ---- audio: a tone, encoded per codec; both sides compute the same bytes */

static unsigned char ulaw_encode(int s)
{
    int sign = 0, exponent = 7, mantissa, mag;
    if (s < 0) { sign = 0x80; s = -s; }
    mag = (s > 32635 ? 32635 : s) + 0x84;
    while (exponent > 0 && !(mag & (0x4000 >> (7 - exponent))))
        exponent--;
    mantissa = (mag >> (exponent + 3)) & 0x0F;
    return (unsigned char)~(sign | (exponent << 4) | mantissa);
}

static int ulaw_decode(unsigned char b)
{
    int mag;
    b = (unsigned char)~b;
    mag = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84;
    return (b & 0x80) ? -mag : mag;
}

/* Frame seq of a tone of freq Hz, encoded in codec; returns its length. */
static size_t tone_frame(const char *codec, double freq, unsigned seq,
                         unsigned char *out)
{
    int i;
    for (i = 0; i < SAMPLES; i++) {
        double t = (double)(seq * SAMPLES + i) / 8000.0;
        int s = (int)lrint(8000.0 * sin(2.0 * PI * freq * t));
        if (strcmp(codec, "slin") == 0) {
            out[2 * i] = (unsigned char)((s >> 8) & 0xFF);
            out[2 * i + 1] = (unsigned char)(s & 0xFF);
        } else {
            out[i] = ulaw_encode(s);
        }
    }
    return strcmp(codec, "slin") == 0 ? 2 * SAMPLES : SAMPLES;
}

static int sample_at(const char *codec, const unsigned char *frame, int i)
{
    if (strcmp(codec, "slin") == 0)
        return (short)((frame[2 * i] << 8) | frame[2 * i + 1]);
    return ulaw_decode(frame[i]);
}

/* ---- the phone's state, shared by its callbacks and its main thread ---- */

struct phone {
    pthread_mutex_t lock;
    anytun_client *client;
    const char *role;
    double expect_freq;       /* the other side's tone */
    unsigned frames_expected;
    int connected, registered, answered, ended, end_cause;
    uint64_t call;
    char codec[ANYTUN_MAX_CODEC_NAME + 1];
    char offer0[ANYTUN_MAX_CODEC_NAME + 1];
    unsigned offer_n;
    char digits[64];
    unsigned frames_ok, frames_bad, frames_dup, frames_extra;
    int sent_all, hung_up;
    unsigned char seen[MAX_FRAMES];
    int samples[MAX_FRAMES * SAMPLES];
    int dtmf_sent_inside, hangup_inside, answer_inside;
};

static void on_log(void *user, int level, const char *target, const char *msg)
{
    (void)user;
    fprintf(stderr, "log %d %s: %s\n", level, target, msg);
}

static void on_session(void *user, int state, int error, const char *detail)
{
    struct phone *p = user;
    pthread_mutex_lock(&p->lock);
    if (state == ANYTUN_SESSION_CONNECTED)
        p->connected = 1;
    pthread_mutex_unlock(&p->lock);
    fprintf(stderr, "%s: session %d (%d) %s\n", p->role, state, error, detail);
}

static void on_registration(void *user, const char *name, int ok,
                            uint32_t expires_s)
{
    struct phone *p = user;
    pthread_mutex_lock(&p->lock);
    if (ok && expires_s > 0)
        p->registered = 1;
    pthread_mutex_unlock(&p->lock);
    fprintf(stderr, "%s: registered %s ok=%d for %u s\n", p->role, name, ok,
            expires_s);
}

static void on_incoming_call(void *user, uint64_t call, const char *from,
                             const char *to, const char *const *codecs,
                             size_t n_codecs)
{
    struct phone *p = user;
    int r;
    fprintf(stderr, "%s: call %llu from %s to %s, %zu codecs\n", p->role,
            (unsigned long long)call, from, to, n_codecs);
    pthread_mutex_lock(&p->lock);
    p->call = call;
    snprintf(p->offer0, sizeof p->offer0, "%s", codecs[0]);
    p->offer_n = (unsigned)n_codecs;
    pthread_mutex_unlock(&p->lock);
    /* Answer from inside the callback. */
    r = anytun_client_answer(p->client, call, p->codec);
    pthread_mutex_lock(&p->lock);
    p->answer_inside = r;
    if (r == ANYTUN_OK)
        p->answered = 1;
    pthread_mutex_unlock(&p->lock);
}

static void on_call_state(void *user, uint64_t call, int event, int cause,
                          const char *codec)
{
    struct phone *p = user;
    fprintf(stderr, "%s: call %llu event %d cause %d codec %s\n", p->role,
            (unsigned long long)call, event, cause, codec);
    pthread_mutex_lock(&p->lock);
    if (event == ANYTUN_CALL_ANSWERED) {
        p->answered = 1;
        snprintf(p->codec, sizeof p->codec, "%s", codec);
    } else if (event == ANYTUN_CALL_ENDED) {
        p->ended = 1;
        p->end_cause = cause;
    }
    pthread_mutex_unlock(&p->lock);
}

static void on_voice(void *user, uint64_t call, uint32_t seq,
                     uint32_t timestamp, const uint8_t *payload, size_t len)
{
    struct phone *p = user;
    unsigned char want[2 * SAMPLES];
    size_t n;
    int i, first = 0, last = 0;
    pthread_mutex_lock(&p->lock);
    n = tone_frame(p->codec, p->expect_freq, seq, want);
    if (seq >= p->frames_expected) {
        p->frames_extra++; /* the callee keeps talking until hung up */
    } else if (timestamp != seq * SAMPLES || len != n ||
               memcmp(payload, want, n) != 0) {
        p->frames_bad++;
    } else if (p->seen[seq]) {
        p->frames_dup++;
    } else {
        p->seen[seq] = 1;
        p->frames_ok++;
        for (i = 0; i < SAMPLES; i++)
            p->samples[seq * SAMPLES + i] = sample_at(p->codec, payload, i);
        first = p->frames_ok == 1;
    }
    /* Hang up once every frame came both ways (this side's sent, the other
     * side's received). */
    if (p->frames_ok == p->frames_expected && p->sent_all && !p->hung_up) {
        p->hung_up = 1;
        last = 1;
    }
    pthread_mutex_unlock(&p->lock);
    /* The caller acts from inside its voice callback: DTMF on the first
     * frame, hang up on the last. Neither may deadlock. */
    if (strcmp(p->role, "caller") == 0) {
        if (first) {
            int r = ANYTUN_OK;
            const char *d;
            for (d = "123#"; *d && r == ANYTUN_OK; d++)
                r = anytun_client_send_dtmf(p->client, call, *d, 100);
            pthread_mutex_lock(&p->lock);
            p->dtmf_sent_inside = r == ANYTUN_OK;
            pthread_mutex_unlock(&p->lock);
        }
        if (last) {
            int r = anytun_client_hangup(p->client, call, ANYTUN_CAUSE_NORMAL);
            pthread_mutex_lock(&p->lock);
            p->hangup_inside = r == ANYTUN_OK;
            p->ended = 1;
            p->end_cause = ANYTUN_CAUSE_NORMAL;
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void on_dtmf(void *user, uint64_t call, char digit, uint16_t ms)
{
    struct phone *p = user;
    size_t n;
    (void)call;
    (void)ms;
    pthread_mutex_lock(&p->lock);
    n = strlen(p->digits);
    if (n + 1 < sizeof p->digits) {
        p->digits[n] = digit;
        p->digits[n + 1] = 0;
    }
    pthread_mutex_unlock(&p->lock);
}

/* Zero crossings over the frames received, as a frequency in Hz. */
static double measured_freq(struct phone *p)
{
    unsigned f, crossings = 0, samples = 0;
    int prev = 0, i;
    for (f = 0; f < p->frames_expected && f < MAX_FRAMES; f++) {
        if (!p->seen[f])
            continue;
        for (i = 0; i < SAMPLES; i++) {
            int s = p->samples[f * SAMPLES + i];
            if (samples > 0 && ((prev < 0 && s >= 0) || (prev >= 0 && s < 0)))
                crossings++;
            prev = s;
            samples++;
        }
    }
    return samples ? crossings / 2.0 / (samples / 8000.0) : 0.0;
}

static char *read_key(const char *path)
{
    static char buf[256];
    FILE *f = fopen(path, "r");
    size_t n;
    if (!f) {
        perror(path);
        exit(2);
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = 0;
    return buf;
}

/* Waits until *flag is set (under the phone's lock) or secs pass. */
static int wait_flag(struct phone *p, int *flag, double secs)
{
    double end = now_s() + secs;
    for (;;) {
        int v;
        pthread_mutex_lock(&p->lock);
        v = *flag;
        pthread_mutex_unlock(&p->lock);
        if (v)
            return 1;
        if (now_s() > end)
            return 0;
        sleep_ms(5);
    }
}

static anytun_client *make_client(struct phone *p, const char *keyfile,
                                  const char *network, const char *proxy)
{
    anytun_client_config cfg;
    anytun_client_callbacks cb;
    anytun_client *c = NULL;
    EXPECT_CODE(anytun_client_config_init(&cfg), ANYTUN_OK);
    cfg.private_key = read_key(keyfile);
    cfg.network_key = network;
    cfg.proxy = proxy;
    /* A fixed local address, for tests that pick which of several proxies
     * sharing one port (SO_REUSEPORT) serves this phone. */
    cfg.bind = getenv("ANYTUN_TEST_BIND");
    EXPECT_CODE(anytun_client_callbacks_init(&cb), ANYTUN_OK);
    cb.user = p;
    cb.on_session = on_session;
    cb.on_registration = on_registration;
    cb.on_incoming_call = on_incoming_call;
    cb.on_call_state = on_call_state;
    cb.on_voice = on_voice;
    cb.on_dtmf = on_dtmf;
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_OK);
    if (!c)
        exit(1);
    return c;
}

/* Sends frames 0..n-1 of a tone on the call, one per 20 ms. */
static void send_tone(struct phone *p, double freq, unsigned n)
{
    unsigned seq;
    unsigned char frame[2 * SAMPLES];
    double t0 = now_s();
    for (seq = 0; seq < n; seq++) {
        size_t len = tone_frame(p->codec, freq, seq, frame);
        int r = anytun_client_send_voice(p->client, p->call, seq,
                                         seq * SAMPLES, frame, len);
        if (r == ANYTUN_ERR_UNKNOWN_CALL)
            break; /* the other side ended it */
        EXPECT(r == ANYTUN_OK, "send_voice %u: %s", seq, anytun_strerror(r));
        /* Paced on the clock, not on the sleeps. */
        while (now_s() < t0 + (seq + 1) * 0.020)
            sleep_ms(1);
    }
}

static void report(struct phone *p, int before, int running, int after)
{
    printf("RESULT role=%s\n", p->role);
    printf("RESULT codec=%s\n", p->codec);
    printf("RESULT frames_ok=%u\n", p->frames_ok);
    printf("RESULT frames_bad=%u\n", p->frames_bad);
    printf("RESULT frames_dup=%u\n", p->frames_dup);
    printf("RESULT frames_extra=%u\n", p->frames_extra);
    printf("RESULT freq=%.1f\n", measured_freq(p));
    printf("RESULT digits=%s\n", p->digits);
    printf("RESULT end_cause=%d\n", p->end_cause);
    printf("RESULT threads=%d,%d,%d\n", before, running, after);
    EXPECT(running == before + 1, "threads while running %d, before %d",
           running, before);
    EXPECT(after == before, "threads after stop %d, before %d", after, before);
    EXPECT(p->frames_ok == p->frames_expected, "%u of %u frames",
           p->frames_ok, p->frames_expected);
    EXPECT(p->frames_bad == 0 && p->frames_dup == 0, "%u bad, %u duplicate",
           p->frames_bad, p->frames_dup);
    EXPECT(fabs(measured_freq(p) - p->expect_freq) < p->expect_freq * 0.02,
           "tone %.1f Hz, expected %.0f", measured_freq(p), p->expect_freq);
}

static int run_phone(int answer, int argc, char **argv)
{
    struct phone *p = calloc(1, sizeof *p);
    int before, running, after;
    unsigned frames;
    pthread_mutex_init(&p->lock, NULL);
    p->role = answer ? "callee" : "caller";
    if (argc < 8 || !p)
        return 2;
    frames = (unsigned)atoi(argv[answer ? 7 : 6]);
    if (frames == 0 || frames > MAX_FRAMES)
        return 2;
    p->frames_expected = frames;
    p->expect_freq = answer ? 440.0 : 1000.0;
    EXPECT_CODE(anytun_set_logger(on_log, NULL, ANYTUN_LOG_INFO), ANYTUN_OK);
    if (answer)
        snprintf(p->codec, sizeof p->codec, "%s", argv[6]);
    p->client = make_client(p, argv[2], argv[3], argv[4]);
    before = count_threads();
    EXPECT_CODE(anytun_client_start(p->client), ANYTUN_OK);
    running = count_threads();
    if (answer) {
        EXPECT_CODE(anytun_client_register(p->client, argv[5], 300), ANYTUN_OK);
        EXPECT(wait_flag(p, &p->registered, 10), "not registered");
        printf("READY\n");
        fflush(stdout);
        EXPECT(wait_flag(p, &p->answered, 20), "no call to answer");
        EXPECT_CODE(p->answer_inside, ANYTUN_OK);
        printf("RESULT offer=%s/%u\n", p->offer0, p->offer_n);
        /* Talks at once: across two proxies a frame can overtake the
         * answer (it reaches the caller through the peer link); the
         * caller's library holds such frames until the answer is there. */
        {
            const char *d;
            for (d = "9*"; *d; d++)
                EXPECT_CODE(anytun_client_send_dtmf(p->client, p->call, *d, 120),
                            ANYTUN_OK);
        }
        /* Talks until the caller hangs up (which it does once it has
         * sent its frames and heard the first FRAMES of these). */
        send_tone(p, 1000.0, MAX_FRAMES);
        EXPECT(wait_flag(p, &p->ended, 20), "the caller never hung up");
    } else {
        const char *codecs[ANYTUN_MAX_CODECS];
        int i, n = 0;
        for (i = 7; i < argc && n < ANYTUN_MAX_CODECS; i++)
            codecs[n++] = argv[i];
        EXPECT(wait_flag(p, &p->connected, 10), "never connected");
        EXPECT_CODE(anytun_client_call(p->client, argv[5], NULL, codecs,
                                       (size_t)n, &p->call), ANYTUN_OK);
        EXPECT(wait_flag(p, &p->answered, 10), "not answered");
        send_tone(p, 440.0, frames);
        pthread_mutex_lock(&p->lock);
        p->sent_all = 1;
        pthread_mutex_unlock(&p->lock);
        EXPECT(wait_flag(p, &p->ended, 20), "the callee's frames never all came");
        EXPECT(p->dtmf_sent_inside, "DTMF from inside the voice callback failed");
        EXPECT(p->hangup_inside, "hangup from inside the voice callback failed");
        /* The callee's digits came before its frames; a last look. */
        {
            double end = now_s() + 2;
            size_t got = 0;
            while (now_s() < end && got < 2) {
                pthread_mutex_lock(&p->lock);
                got = strlen(p->digits);
                pthread_mutex_unlock(&p->lock);
                sleep_ms(5);
            }
        }
    }
    EXPECT_CODE(anytun_client_stop(p->client), ANYTUN_OK);
    after = count_threads();
    /* After stop: refused, not crashed. */
    EXPECT_CODE(anytun_client_send_dtmf(p->client, p->call, '1', 100),
                ANYTUN_ERR_STOPPED);
    report(p, before, running, after);
    EXPECT_CODE(anytun_client_free(p->client), ANYTUN_OK);
    EXPECT_CODE(anytun_set_logger(NULL, NULL, 0), ANYTUN_OK);
    free(p);
    return failures ? 1 : 0;
}

/* ---- error paths ------------------------------------------------------- */

struct log_count {
    pthread_mutex_t lock;
    int lines;
    int warned;
    /* The log callback calls into this client: the library must not log
     * while holding a lock of the client's. */
    anytun_client *client;
    int status_calls, status_failures;
};

static void count_log(void *user, int level, const char *target,
                      const char *msg)
{
    struct log_count *l = user;
    anytun_client *c;
    (void)target;
    pthread_mutex_lock(&l->lock);
    l->lines++;
    if (level == ANYTUN_LOG_WARN && strstr(msg, "no authenticated answer"))
        l->warned = 1;
    c = l->client;
    pthread_mutex_unlock(&l->lock);
    if (c) {
        anytun_client_status st;
        int r;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        r = anytun_client_get_status(c, &st);
        pthread_mutex_lock(&l->lock);
        l->status_calls++;
        if (r != ANYTUN_OK)
            l->status_failures++;
        pthread_mutex_unlock(&l->lock);
    }
}

struct session_seen {
    pthread_mutex_t lock;
    int disconnected;
    int error;
};

static void errors_session(void *user, int state, int error, const char *detail)
{
    struct session_seen *s = user;
    (void)detail;
    pthread_mutex_lock(&s->lock);
    if (state == ANYTUN_SESSION_DISCONNECTED) {
        s->disconnected = 1;
        s->error = error;
    }
    pthread_mutex_unlock(&s->lock);
}

static int run_errors(void)
{
    char priv[ANYTUN_KEY_TEXT_SIZE], pub[ANYTUN_KEY_TEXT_SIZE], again[64];
    char small[8], detail[256];
    size_t needed = 0, count = 99;
    int code, before, after;
    uint64_t call = 0;
    const char *ulaw[] = { "ulaw" };
    anytun_client_config cfg;
    anytun_client_callbacks cb;
    anytun_client *c = NULL;
    anytun_client_status st;
    anytun_call_info info[2];
    struct log_count logs = { PTHREAD_MUTEX_INITIALIZER, 0, 0, NULL, 0, 0 };
    struct session_seen seen = { PTHREAD_MUTEX_INITIALIZER, 0, 0 };
    double t0;

    /* Codes and texts. */
    EXPECT(strcmp(anytun_strerror(ANYTUN_OK), "success") == 0, "strerror(0)");
    EXPECT(strcmp(anytun_strerror(12345), "unknown anytun error code") == 0,
           "strerror(12345) = %s", anytun_strerror(12345));
    EXPECT(strcmp(anytun_strerror(-18), "unknown anytun error code") == 0,
           "strerror(-18)");
    for (code = ANYTUN_ERR_NULL; code >= ANYTUN_ERR_INTERNAL; code--) {
        int other;
        EXPECT(strcmp(anytun_strerror(code), "unknown anytun error code") != 0,
               "strerror(%d) unknown", code);
        for (other = code - 1; other >= ANYTUN_ERR_INTERNAL; other--)
            EXPECT(strcmp(anytun_strerror(code), anytun_strerror(other)) != 0,
                   "codes %d and %d share a text", code, other);
    }
    EXPECT(strncmp(anytun_version(), "anytun ", 7) == 0, "version %s",
           anytun_version());
    EXPECT(anytun_abi_version() == ANYTUN_ABI_VERSION, "abi version");

    /* Keys and buffers. */
    memset(small, 'x', sizeof small);
    EXPECT_CODE(anytun_keygen(small, sizeof small, pub, sizeof pub, &needed),
                ANYTUN_ERR_BUFFER_TOO_SMALL);
    EXPECT(needed == 53, "keygen needs %zu", needed);
    EXPECT(small[0] == 'x' && small[7] == 'x', "a small buffer was written");
    EXPECT_CODE(anytun_keygen(NULL, 64, pub, sizeof pub, NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_keygen(priv, sizeof priv, pub, sizeof pub, &needed),
                ANYTUN_OK);
    EXPECT(strncmp(priv, "private:", 8) == 0, "private key text");
    EXPECT_CODE(anytun_public_key(priv, again, sizeof again, NULL), ANYTUN_OK);
    EXPECT(strcmp(again, pub) == 0, "public key of the private key");
    EXPECT_CODE(anytun_public_key("garbage", again, sizeof again, NULL),
                ANYTUN_ERR_INVALID);
    EXPECT_CODE(anytun_public_key(priv, again, 44, &needed),
                ANYTUN_ERR_BUFFER_TOO_SMALL);
    EXPECT(needed == 45, "public key needs %zu", needed);

    /* Configs. */
    EXPECT_CODE(anytun_client_config_init(NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_client_config_init(&cfg), ANYTUN_OK);
    EXPECT_CODE(anytun_client_callbacks_init(&cb), ANYTUN_OK);
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_ERR_NULL);
    EXPECT(c == NULL, "out set on failure");
    anytun_last_error(detail, sizeof detail, NULL);
    EXPECT(strstr(detail, "private_key is NULL") != NULL, "detail: %s", detail);
    EXPECT_CODE(anytun_last_error(small, sizeof small, &needed),
                ANYTUN_ERR_BUFFER_TOO_SMALL);
    EXPECT(needed == strlen(detail) + 1, "last_error needs %zu", needed);
    cfg.private_key = priv;
    cfg.network_key = priv; /* a private key where the public one belongs */
    cfg.proxy = "127.0.0.1:9";
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_ERR_INVALID);
    anytun_last_error(detail, sizeof detail, NULL);
    EXPECT(strstr(detail, priv + 8) == NULL, "the key is printed: %s", detail);
    cfg.network_key = pub;
    cfg.struct_size = 4;
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_ERR_STRUCT_SIZE);
    cfg.struct_size = sizeof cfg;
    cfg.reserved_u32[0] = 1;
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_ERR_STRUCT_SIZE);
    cfg.reserved_u32[0] = 0;
    cfg.proxy = "no port";
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_ERR_INVALID);
    cfg.proxy = "127.0.0.1:9"; /* discard: nobody answers */
    cfg.handshake_attempts = 1;
    cb.user = &seen;
    cb.on_session = errors_session;
    EXPECT_CODE(anytun_client_new(&cfg, &cb, NULL), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_client_new(&cfg, &cb, &c), ANYTUN_OK);
    if (!c)
        return 1;

    /* Calls on a handle not started. */
    EXPECT_CODE(anytun_client_call(c, "bob", NULL, ulaw, 1, &call),
                ANYTUN_ERR_NOT_STARTED);
    EXPECT_CODE(anytun_client_register(c, "not a name", 60), ANYTUN_ERR_INVALID);
    EXPECT_CODE(anytun_client_register(c, NULL, 60), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_client_register(c, "alice", 60), ANYTUN_OK);
    EXPECT_CODE(anytun_client_public_key(c, small, sizeof small, &needed),
                ANYTUN_ERR_BUFFER_TOO_SMALL);
    EXPECT(needed == 45, "client public key needs %zu", needed);
    EXPECT_CODE(anytun_client_calls(c, NULL, 0, &count), ANYTUN_OK);
    EXPECT(count == 0, "%zu calls", count);
    EXPECT_CODE(anytun_client_calls(c, info, 2, NULL), ANYTUN_ERR_NULL);

    /* Started towards a silent address: the logger hears the give-up. */
    EXPECT_CODE(anytun_set_logger(count_log, &logs, 99), ANYTUN_ERR_INVALID);
    logs.client = c;
    EXPECT_CODE(anytun_set_logger(count_log, &logs, ANYTUN_LOG_INFO), ANYTUN_OK);
    before = count_threads();
    EXPECT_CODE(anytun_client_start(c), ANYTUN_OK);
    EXPECT_CODE(anytun_client_start(c), ANYTUN_ERR_ALREADY_STARTED);
    EXPECT(count_threads() == before + 1, "one thread per client");
    EXPECT_CODE(anytun_client_call(c, "bob", NULL, ulaw, 1, &call),
                ANYTUN_ERR_NOT_CONNECTED);
    EXPECT_CODE(anytun_client_call(c, "bob", NULL, ulaw, 0, &call),
                ANYTUN_ERR_INVALID);
    EXPECT_CODE(anytun_client_call(c, "bob", NULL, NULL, 1, &call),
                ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_client_hangup(c, 42, ANYTUN_CAUSE_NORMAL),
                ANYTUN_ERR_UNKNOWN_CALL);
    /* No Q.850 cause: taken as 127 and counted, never a refusal. */
    EXPECT_CODE(anytun_client_hangup(c, 42, 300), ANYTUN_ERR_UNKNOWN_CALL);
    EXPECT_CODE(anytun_client_send_voice(c, 42, 0, 0, NULL, 160), ANYTUN_ERR_NULL);
    EXPECT_CODE(anytun_client_send_voice(c, 42, 0, 0, (const uint8_t *)priv, 0),
                ANYTUN_ERR_INVALID);
    {
        static uint8_t big[ANYTUN_MAX_VOICE_PAYLOAD + 1];
        EXPECT_CODE(anytun_client_send_voice(c, 42, 0, 0, big, sizeof big),
                    ANYTUN_ERR_TOO_LARGE);
    }
    t0 = now_s();
    while (now_s() < t0 + 5) {
        int d;
        pthread_mutex_lock(&seen.lock);
        d = seen.disconnected;
        pthread_mutex_unlock(&seen.lock);
        if (d)
            break;
        sleep_ms(10);
    }
    EXPECT(seen.disconnected && seen.error == ANYTUN_ERR_NOT_CONNECTED,
           "no DISCONNECTED after one silent attempt (%d)", seen.error);
    EXPECT(logs.warned, "the give-up was not logged (%d lines)", logs.lines);
    EXPECT(logs.status_calls > 0 && logs.status_failures == 0,
           "status from inside the log callback: %d calls, %d failed",
           logs.status_calls, logs.status_failures);
    EXPECT_CODE(anytun_set_logger(NULL, NULL, ANYTUN_LOG_OFF), ANYTUN_OK);

    /* Stopped. */
    EXPECT_CODE(anytun_client_stop(c), ANYTUN_OK);
    after = count_threads();
    EXPECT(after == before, "threads: %d before start, %d after stop", before,
           after);
    EXPECT_CODE(anytun_client_stop(c), ANYTUN_OK);
    EXPECT_CODE(anytun_client_start(c), ANYTUN_ERR_STOPPED);
    EXPECT_CODE(anytun_client_call(c, "bob", NULL, ulaw, 1, &call),
                ANYTUN_ERR_STOPPED);
    EXPECT_CODE(anytun_client_answer(c, 1, "ulaw"), ANYTUN_ERR_STOPPED);
    EXPECT_CODE(anytun_client_register(c, "alice", 60), ANYTUN_ERR_STOPPED);
    memset(&st, 0, sizeof st);
    EXPECT_CODE(anytun_client_get_status(c, &st), ANYTUN_ERR_STRUCT_SIZE);
    st.struct_size = sizeof st;
    EXPECT_CODE(anytun_client_get_status(c, &st), ANYTUN_OK);
    EXPECT(st.state == ANYTUN_SESSION_STOPPED, "state %d", st.state);
    EXPECT(st.local_port != 0, "no local port");
    EXPECT(st.observed[0] == 0, "observed %s", st.observed);
    /* The hangup with 300 above. */
    EXPECT(st.causes_out_of_range == 1, "causes out of range: %llu",
           (unsigned long long)st.causes_out_of_range);
    {
        int lines;
        pthread_mutex_lock(&logs.lock);
        lines = logs.lines;
        pthread_mutex_unlock(&logs.lock);
        EXPECT_CODE(anytun_client_free(c), ANYTUN_OK);
        EXPECT(logs.lines == lines, "logged after the logger was removed");
    }
    EXPECT_CODE(anytun_client_free(NULL), ANYTUN_OK);
    printf("RESULT threads=%d,%d\n", before, after);
    printf("RESULT errors=%d\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "errors") == 0)
        return run_errors();
    if (argc >= 2 && strcmp(argv[1], "answer") == 0)
        return run_phone(1, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "call") == 0)
        return run_phone(0, argc, argv);
    fprintf(stderr, "usage: %s errors | answer ... | call ...\n", argv[0]);
    return 2;
}
