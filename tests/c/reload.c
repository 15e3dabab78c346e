/*
 * A module unloaded and loaded again, as Asterisk does with res_anytun.so:
 * dlopen libanytun, install the logger, run a client until it gives up on
 * a silent proxy, stop it, remove the logger, dlclose; ROUNDS times. Each
 * round must hear its own log lines (none of an earlier round's callback,
 * which would be a call into unloaded code) and end with as many threads
 * as it began with.
 *
 *   reload_test LIBPATH ROUNDS
 *
 * Prints "RESULT round=N lines=L threads=B,A" per round; exits 0 when
 * every round passed. Not linked with libanytun: it only dlopens it.
 */
#define _POSIX_C_SOURCE 200809L
#include "anytun.h"

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct seen {
    pthread_mutex_t lock;
    int round;
    int lines;
    int wrong_round;
    int gave_up;
};

static struct seen seen = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0 };

/* One logger per round (user carries the round), as a reloaded module's
 * fresh code would be. */
static void on_log(void *user, int level, const char *target, const char *msg)
{
    int round = (int)(size_t)user;
    (void)target;
    pthread_mutex_lock(&seen.lock);
    if (round != seen.round)
        seen.wrong_round++;
    seen.lines++;
    if (level == ANYTUN_LOG_WARN && strstr(msg, "no authenticated answer"))
        seen.gave_up = 1;
    pthread_mutex_unlock(&seen.lock);
}

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

/* POSIX's way to take a function from dlsym. */
/* Whether libanytun is still mapped (glibc keeps a DSO that registered
 * thread-local destructors: its statics then live on into the next load). */
static int mapped(void)
{
    char line[512];
    int found = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libanytun.so"))
            found = 1;
    fclose(f);
    return found;
}

#define SYM(h, name) (*(void **)(&name##_p) = dlsym(h, #name))

int main(int argc, char **argv)
{
    int rounds, round, failures = 0;
    if (argc != 3)
        return 2;
    rounds = atoi(argv[2]);
    for (round = 1; round <= rounds; round++) {
        int (*anytun_set_logger_p)(anytun_log_fn, void *, int);
        int (*anytun_keygen_p)(char *, size_t, char *, size_t, size_t *);
        int (*anytun_client_config_init_p)(anytun_client_config *);
        int (*anytun_client_callbacks_init_p)(anytun_client_callbacks *);
        int (*anytun_client_new_p)(const anytun_client_config *,
                                   const anytun_client_callbacks *,
                                   anytun_client **);
        int (*anytun_client_start_p)(anytun_client *);
        int (*anytun_client_free_p)(anytun_client *);
        char priv[ANYTUN_KEY_TEXT_SIZE], pub[ANYTUN_KEY_TEXT_SIZE];
        anytun_client_config cfg;
        anytun_client_callbacks cb;
        anytun_client *c = NULL;
        int before, after, i, ok, gave_up, lines, wrong;
        void *h;

        before = count_threads();
        h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 1;
        }
        if (!SYM(h, anytun_set_logger) || !SYM(h, anytun_keygen) ||
            !SYM(h, anytun_client_config_init) ||
            !SYM(h, anytun_client_callbacks_init) ||
            !SYM(h, anytun_client_new) || !SYM(h, anytun_client_start) ||
            !SYM(h, anytun_client_free)) {
            fprintf(stderr, "dlsym: %s\n", dlerror());
            return 1;
        }
        pthread_mutex_lock(&seen.lock);
        seen.round = round;
        seen.lines = 0;
        seen.gave_up = 0;
        pthread_mutex_unlock(&seen.lock);
        ok = anytun_set_logger_p(on_log, (void *)(size_t)round,
                                 ANYTUN_LOG_INFO) == ANYTUN_OK;
        ok = ok && anytun_keygen_p(priv, sizeof priv, pub, sizeof pub, NULL) == 0;
        anytun_client_config_init_p(&cfg);
        cfg.private_key = priv;
        cfg.network_key = pub;
        cfg.proxy = "127.0.0.1:9"; /* discard: nobody answers */
        cfg.handshake_attempts = 1;
        anytun_client_callbacks_init_p(&cb);
        ok = ok && anytun_client_new_p(&cfg, &cb, &c) == ANYTUN_OK;
        ok = ok && anytun_client_start_p(c) == ANYTUN_OK;
        for (i = 0; ok && i < 500; i++) {
            struct timespec ts = { 0, 10 * 1000000L };
            pthread_mutex_lock(&seen.lock);
            gave_up = seen.gave_up;
            pthread_mutex_unlock(&seen.lock);
            if (gave_up)
                break;
            nanosleep(&ts, NULL);
        }
        ok = anytun_client_free_p(c) == ANYTUN_OK && ok;
        ok = anytun_set_logger_p(NULL, NULL, ANYTUN_LOG_OFF) == ANYTUN_OK && ok;
        dlclose(h);
        after = count_threads();
        pthread_mutex_lock(&seen.lock);
        gave_up = seen.gave_up;
        lines = seen.lines;
        wrong = seen.wrong_round;
        pthread_mutex_unlock(&seen.lock);
        printf("RESULT round=%d lines=%d threads=%d,%d mapped_after_dlclose=%d\n",
               round, lines, before, after, mapped());
        if (!ok || !gave_up || wrong || after != before) {
            fprintf(stderr,
                    "FAIL: round %d: ok=%d gave_up=%d lines=%d wrong=%d "
                    "threads %d -> %d\n",
                    round, ok, gave_up, lines, wrong, before, after);
            failures++;
        }
    }
    return failures ? 1 : 0;
}
