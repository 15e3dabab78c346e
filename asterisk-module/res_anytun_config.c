/*
 * res_anytun_config.c - anytun.conf, the library's client handle and logger,
 * the CLI, and load / reload / unload of res_anytun.so.
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 *
 * Reload without dropping calls: settings that need no new session
 * (names, context, codecs, caller, log level) apply at once. A change of the
 * connection (key, network key, proxy, bind, timers) needs a new session:
 * the new client is created (so a bad value is refused at once) and starts
 * only when the current client has no call left; until then the current
 * session carries the calls that are up and new ones. A change of [proxy]
 * restarts the hosted proxy in the library (anytun_proxy_reload); with
 * anypsp peers it pulls their tables before it serves again.
 */

#include "asterisk.h"

#include <anytun.h>

#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/cli.h"
#include "asterisk/config.h"
#include "asterisk/format_cap.h"
#include "asterisk/logger.h"
#include "asterisk/module.h"
#include "asterisk/paths.h"
#include "asterisk/sched.h"
#include "asterisk/strings.h"
#include "asterisk/utils.h"

#include "res_anytun.h"

#define CONFIG_FILE "anytun.conf"

/*! Runs the pending switch once the current client has no call. */
static struct ast_sched_context *sched;

/* ---- settings ----------------------------------------------------------- */

/*!
 * \brief Copies a setting's \a value into \a dst of \a size bytes; a value
 * that does not fit is refused (logged with its key and the limit), never
 * cut short: a truncated path, address or key would run something else.
 */
int at_setting_copy(char *dst, size_t size, const char *section, const char *key,
	const char *value, int line)
{
	size_t len = strlen(value);

	if (len >= size) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: [%s] %s is %zu bytes long; the limit is %zu bytes\n",
			line, section, key, len, size - 1);
		return -1;
	}
	memcpy(dst, value, len + 1);
	return 0;
}

int at_name_valid(const char *name)
{
	size_t n = strlen(name), i;

	if (n < 1 || n > ANYTUN_MAX_NAME || name[0] == '.' || name[0] == '-') {
		return 0;
	}
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!isalnum((unsigned char) c) && !strchr("._+-", c)) {
			return 0;
		}
	}
	return 1;
}

static void settings_free(struct at_settings *s)
{
	size_t i;

	if (!s) {
		return;
	}
	for (i = 0; i < s->n_codecs; i++) {
		ao2_cleanup(s->codecs[i]);
	}
	explicit_bzero(s->private_key, sizeof(s->private_key));
	ast_free(s);
}

/*! \brief Reads a key file (anytun keygen's "private:<base64>"). */
static int read_key_file(struct at_settings *s, const char *value, int line)
{
	char path[PATH_MAX];
	FILE *f;

	if (value[0] == '/') {
		if (at_setting_copy(path, sizeof(path), "general", "key_file", value, line)) {
			return -1;
		}
	} else if ((size_t) snprintf(path, sizeof(path), "%s/%s", ast_config_AST_CONFIG_DIR, value)
		>= sizeof(path)) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: [general] key_file %s/%s is longer than the limit of %zu bytes\n",
			line, ast_config_AST_CONFIG_DIR, value, sizeof(path) - 1);
		return -1;
	}
	ast_copy_string(s->key_file, path, sizeof(s->key_file));
	f = fopen(path, "r");
	if (!f) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: key_file %s: %s\n", line, path, strerror(errno));
		return -1;
	}
	if (!fgets(s->private_key, sizeof(s->private_key), f)) {
		s->private_key[0] = '\0';
	}
	fclose(f);
	/* A line that filled the buffer without its end is too long: a key
	 * cut short must not be taken (the library would refuse it anyway,
	 * less clearly). */
	if (strlen(s->private_key) == sizeof(s->private_key) - 1
		&& s->private_key[sizeof(s->private_key) - 2] != '\n') {
		explicit_bzero(s->private_key, sizeof(s->private_key));
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: key_file %s: its first line is longer than the limit of %zu bytes\n",
			line, path, sizeof(s->private_key) - 2);
		return -1;
	}
	ast_trim_blanks(s->private_key);
	if (ast_strlen_zero(s->private_key)) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: key_file %s is empty (make one with `anytun keygen --out FILE`)\n",
			line, path);
		return -1;
	}
	return 0;
}

static int parse_uint(const char *name, const char *value, int line, unsigned int lo,
	unsigned int hi, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(value, &end, 10);
	if (errno || end == value || *end || value[0] == '-' || v < lo || v > hi) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: %s = '%s': expected a whole number in %u..%u\n",
			line, name, value, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse_codecs(struct at_settings *s, const char *value, int line)
{
	char *list = ast_strdupa(value), *name;
	size_t i;

	for (i = 0; i < s->n_codecs; i++) {
		ao2_cleanup(s->codecs[i]);
	}
	s->n_codecs = 0;
	while ((name = strsep(&list, ","))) {
		struct ast_format *f;

		name = ast_strip(name);
		if (ast_strlen_zero(name)) {
			continue;
		}
		if (!(f = at_codec_format(name))) {
			ast_log(LOG_ERROR, CONFIG_FILE " line %d: codec '%s' is not supported (ulaw, alaw, slin, g722)\n",
				line, name);
			return -1;
		}
		for (i = 0; i < s->n_codecs && s->codecs[i] != f; i++) {
		}
		if (i == s->n_codecs) {
			s->codecs[s->n_codecs++] = ao2_bump(f);
		}
	}
	if (!s->n_codecs) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: codecs is empty\n", line);
		return -1;
	}
	return 0;
}

static int parse_names(struct at_settings *s, const char *value, int line)
{
	char *list = ast_strdupa(value), *name;

	s->n_names = 0;
	while ((name = strsep(&list, ","))) {
		name = ast_strip(name);
		if (ast_strlen_zero(name)) {
			continue;
		}
		if (!at_name_valid(name)) {
			ast_log(LOG_ERROR, CONFIG_FILE " line %d: '%s' is not an anytun name (1..64 of A-Z a-z 0-9 . _ + -, not starting with . or -)\n",
				line, name);
			return -1;
		}
		if (s->n_names == AT_MAX_NAMES) {
			ast_log(LOG_ERROR, CONFIG_FILE " line %d: more than %d names\n", line, AT_MAX_NAMES);
			return -1;
		}
		ast_copy_string(s->names[s->n_names++], name, sizeof(s->names[0]));
	}
	return 0;
}

static int parse_log_level(const char *value, int line, int *out)
{
	static const char *const levels[] = { "off", "error", "warning", "info", "debug", "trace" };
	size_t i;

	for (i = 0; i < ARRAY_LEN(levels); i++) {
		if (!strcasecmp(value, levels[i])) {
			*out = i;
			return 0;
		}
	}
	ast_log(LOG_ERROR, CONFIG_FILE " line %d: log_level '%s': expected off, error, warning, info, debug or trace\n",
		line, value);
	return -1;
}

static int parse_general(struct at_settings *s, struct ast_variable *v)
{
	unsigned int secs;
	int res = 0;

	for (; v && !res; v = v->next) {
		const char *n = v->name, *val = v->value;
		int line = v->lineno;

		if (!strcasecmp(n, "key_file")) {
			res = read_key_file(s, val, line);
		} else if (!strcasecmp(n, "private_key")) {
			res = at_setting_copy(s->private_key, sizeof(s->private_key), "general", n, val, line);
		} else if (!strcasecmp(n, "network_key")) {
			res = at_setting_copy(s->network_key, sizeof(s->network_key), "general", n, val, line);
		} else if (!strcasecmp(n, "proxy")) {
			res = at_setting_copy(s->proxy, sizeof(s->proxy), "general", n, val, line);
		} else if (!strcasecmp(n, "bind")) {
			res = at_setting_copy(s->bind, sizeof(s->bind), "general", n, val, line);
		} else if (!strcasecmp(n, "keepalive")) {
			res = parse_uint(n, val, line, 0, 300, &s->keepalive_s);
		} else if (!strcasecmp(n, "media_timeout")) {
			res = parse_uint(n, val, line, 0, 3600, &secs);
			s->media_timeout_ms = secs * 1000;
		} else if (!strcasecmp(n, "max_calls")) {
			res = parse_uint(n, val, line, 0, 100000, &s->max_calls);
		} else if (!strcasecmp(n, "register")) {
			res = parse_names(s, val, line);
		} else if (!strcasecmp(n, "register_expires")) {
			res = parse_uint(n, val, line, 1, 86400, &s->register_expires_s);
		} else if (!strcasecmp(n, "caller")) {
			if (!at_name_valid(val)) {
				ast_log(LOG_ERROR, CONFIG_FILE " line %d: caller '%s' is not an anytun name\n", line, val);
				res = -1;
			} else {
				res = at_setting_copy(s->caller, sizeof(s->caller), "general", n, val, line);
			}
		} else if (!strcasecmp(n, "context")) {
			res = at_setting_copy(s->context, sizeof(s->context), "general", n, val, line);
		} else if (!strcasecmp(n, "codecs")) {
			res = parse_codecs(s, val, line);
		} else if (!strcasecmp(n, "log_level")) {
			res = parse_log_level(val, line, &s->log_level);
		} else {
			ast_log(LOG_ERROR, CONFIG_FILE " line %d: unknown setting '%s' in [general]\n", line, n);
			res = -1;
		}
	}
	return res;
}

/*! \brief Loads and checks anytun.conf; NULL (with the reason logged) if
 * it is missing or wrong. */
static struct at_settings *settings_load(void)
{
	struct ast_flags flags = { 0 };
	struct ast_config *cfg = ast_config_load2(CONFIG_FILE, "res_anytun", flags);
	struct at_settings *s;
	const char *cat = NULL;
	int res = 0;

	if (cfg == CONFIG_STATUS_FILEMISSING) {
		ast_log(LOG_ERROR, CONFIG_FILE " not found in %s: res_anytun needs it (see dialplan-examples/)\n",
			ast_config_AST_CONFIG_DIR);
		return NULL;
	}
	if (cfg == CONFIG_STATUS_FILEINVALID) {
		ast_log(LOG_ERROR, CONFIG_FILE " cannot be parsed (see the error above)\n");
		return NULL;
	}
	if (!(s = ast_calloc(1, sizeof(*s)))) {
		ast_config_destroy(cfg);
		return NULL;
	}
	s->register_expires_s = 300;
	s->log_level = ANYTUN_LOG_INFO;
	ast_copy_string(s->context, "from-anytun", sizeof(s->context));
	while (!res && (cat = ast_category_browse(cfg, cat))) {
		struct ast_variable *v = ast_variable_browse(cfg, cat);

		if (!strcasecmp(cat, "general")) {
			res = parse_general(s, v);
		} else if (!strcasecmp(cat, "proxy")) {
			res = at_proxy_parse(&s->proxy_mode, v);
		} else {
			ast_log(LOG_ERROR, CONFIG_FILE ": unknown section [%s] (expected [general], [proxy])\n", cat);
			res = -1;
		}
	}
	ast_config_destroy(cfg);
	/* Proxy mode alone: no client when [general] names no proxy. */
	if (!res && (ast_strlen_zero(s->private_key) || ast_strlen_zero(s->network_key)
		|| ast_strlen_zero(s->proxy)) && !(s->proxy_mode.enabled && ast_strlen_zero(s->proxy))) {
		ast_log(LOG_ERROR, CONFIG_FILE ": [general] needs key_file (this PBX's anytun key), network_key and proxy (or a [proxy] section alone)\n");
		res = -1;
	}
	if (!res && !s->n_codecs) {
		res = parse_codecs(s, "ulaw,alaw,slin,g722", 0);
	}
	if (!res && ast_strlen_zero(s->caller) && s->n_names) {
		ast_copy_string(s->caller, s->names[0], sizeof(s->caller));
	}
	if (res) {
		settings_free(s);
		return NULL;
	}
	return s;
}

/*! \brief Same session settings: no new client needed. */
static int conn_equal(const struct at_settings *a, const struct at_settings *b)
{
	return !strcmp(a->private_key, b->private_key) && !strcmp(a->network_key, b->network_key)
		&& !strcmp(a->proxy, b->proxy) && !strcmp(a->bind, b->bind)
		&& a->keepalive_s == b->keepalive_s && a->media_timeout_ms == b->media_timeout_ms
		&& a->max_calls == b->max_calls;
}

/* ---- the library's client ------------------------------------------------ */

const char *at_session_state_name(int state)
{
	switch (state) {
	case ANYTUN_SESSION_IDLE: return "idle";
	case ANYTUN_SESSION_CONNECTING: return "connecting";
	case ANYTUN_SESSION_CONNECTED: return "connected";
	case ANYTUN_SESSION_RECONNECTING: return "reconnecting";
	case ANYTUN_SESSION_DISCONNECTED: return "disconnected";
	case ANYTUN_SESSION_STOPPED: return "stopped";
	default: return "unknown";
	}
}

static void on_session(void *user, int state, int error, const char *detail)
{
	struct at_client *c = user;

	ast_mutex_lock(&at.lock);
	c->state = state;
	c->error = error;
	ast_copy_string(c->detail, S_OR(detail, ""), sizeof(c->detail));
	ast_mutex_unlock(&at.lock);
	if (state == ANYTUN_SESSION_DISCONNECTED) {
		ast_log(LOG_ERROR, "anytun: no session with the proxy: %s\n", S_OR(detail, anytun_strerror(error)));
	} else if (state == ANYTUN_SESSION_RECONNECTING) {
		ast_log(LOG_WARNING, "anytun: session lost, reconnecting: %s\n", S_OR(detail, anytun_strerror(error)));
	} else {
		ast_verb(2, "anytun: session %s\n", at_session_state_name(state));
	}
}

static void on_registration(void *user, const char *name, int ok, uint32_t expires_s)
{
	struct at_client *c = user;

	ast_mutex_lock(&at.lock);
	c->names += ok && expires_s ? 1 : 0;
	ast_mutex_unlock(&at.lock);
	if (!ok) {
		ast_log(LOG_WARNING, "anytun: the proxy refused to register '%s'\n", name);
	} else {
		ast_verb(2, "anytun: '%s' %s (%u s)\n", name, expires_s ? "registered" : "unregistered", expires_s);
	}
}

/*! \brief A new client for \a s (not started), with the names registered on
 * start; NULL with the library's reason logged. */
static struct at_client *client_new(const struct at_settings *s)
{
	anytun_client_config cfg;
	anytun_client_callbacks cb;
	struct at_client *c = ast_calloc(1, sizeof(*c));
	char detail[256] = "";
	size_t i;
	int rc;

	if (!c) {
		return NULL;
	}
	anytun_client_config_init(&cfg);
	cfg.private_key = s->private_key;
	cfg.network_key = s->network_key;
	cfg.proxy = s->proxy;
	cfg.bind = ast_strlen_zero(s->bind) ? NULL : s->bind;
	cfg.keepalive_s = s->keepalive_s;
	cfg.media_timeout_ms = s->media_timeout_ms;
	cfg.max_calls = s->max_calls;
	/* A PBX may start before the network is reachable: keep trying. */
	cfg.handshake_attempts = ANYTUN_RETRY_FOREVER;
	anytun_client_callbacks_init(&cb);
	cb.user = c;
	cb.on_session = on_session;
	cb.on_registration = on_registration;
	cb.on_incoming_call = at_on_incoming_call;
	cb.on_call_state = at_on_call_state;
	cb.on_voice = at_on_voice;
	cb.on_dtmf = at_on_dtmf;
	rc = anytun_client_new(&cfg, &cb, &c->h);
	for (i = 0; rc == ANYTUN_OK && i < s->n_names; i++) {
		rc = anytun_client_register(c->h, s->names[i], s->register_expires_s);
	}
	if (rc != ANYTUN_OK) {
		at_last_error(detail, sizeof(detail));
		ast_log(LOG_ERROR, CONFIG_FILE ": the anytun client refuses these settings: %s%s%s\n",
			anytun_strerror(rc), detail[0] ? ": " : "", detail);
		anytun_client_free(c->h);
		ast_free(c);
		return NULL;
	}
	return c;
}

static int client_start(struct at_client *c)
{
	char detail[256] = "";
	int rc = anytun_client_start(c->h);

	if (rc != ANYTUN_OK) {
		at_last_error(detail, sizeof(detail));
		ast_log(LOG_ERROR, "anytun: the client cannot start: %s%s%s\n", anytun_strerror(rc),
			detail[0] ? ": " : "", detail);
	}
	return rc == ANYTUN_OK ? 0 : -1;
}

/*! \brief Stops (hangs up, unregisters, joins its thread) and frees. Never
 * from a library callback: it joins the thread that runs them. */
static void client_free(struct at_client *c)
{
	if (c) {
		int rc = anytun_client_free(c->h);

		if (rc != ANYTUN_OK) {
			ast_log(LOG_ERROR, "anytun: freeing a client: %s\n", anytun_strerror(rc));
		}
		ast_free(c);
	}
}

/*! \brief The reload's name changes on a running client. */
static void apply_names(struct at_client *c, const struct at_settings *old, const struct at_settings *s)
{
	size_t i, j;

	for (i = 0; i < old->n_names; i++) {
		for (j = 0; j < s->n_names && strcmp(old->names[i], s->names[j]); j++) {
		}
		if (j == s->n_names) {
			anytun_client_register(c->h, old->names[i], 0);
		}
	}
	for (i = 0; i < s->n_names; i++) {
		int rc = anytun_client_register(c->h, s->names[i], s->register_expires_s);

		if (rc != ANYTUN_OK) {
			ast_log(LOG_WARNING, "anytun: registering '%s': %s\n", s->names[i], anytun_strerror(rc));
		}
	}
}

/*! \brief The scheduler's task: switch to the pending client once the
 * current one carries no call (see the file comment). */
static int switch_pending(const void *data)
{
	struct at_client *old = NULL, *next = NULL;

	ast_mutex_lock(&at.lock);
	if (at.pending && !at.stopping && (!at.cur || !at.cur->calls)) {
		next = at.pending;
		at.pending = NULL;
		old = at.cur;
		at.cur = NULL; /* no new call binds meanwhile */
	}
	ast_mutex_unlock(&at.lock);
	if (!next) {
		return 1; /* run again */
	}
	/* The old session ends first: a new login with the same key would
	 * replace it anyway. */
	client_free(old);
	if (client_start(next)) {
		client_free(next);
		ast_log(LOG_ERROR, "anytun: the new connection settings could not start; no session (fix " CONFIG_FILE " and reload)\n");
		return 1;
	}
	ast_mutex_lock(&at.lock);
	at.cur = next;
	ast_mutex_unlock(&at.lock);
	ast_log(LOG_NOTICE, "anytun: new connection settings in use\n");
	return 1;
}

/* ---- logger -------------------------------------------------------------- */

static void log_cb(void *user, int level, const char *target, const char *message)
{
	switch (level) {
	case ANYTUN_LOG_ERROR:
		ast_log(LOG_ERROR, "%s: %s\n", target, message);
		break;
	case ANYTUN_LOG_WARN:
		ast_log(LOG_WARNING, "%s: %s\n", target, message);
		break;
	case ANYTUN_LOG_INFO:
		ast_log(LOG_NOTICE, "%s: %s\n", target, message);
		break;
	case ANYTUN_LOG_DEBUG:
		ast_debug(1, "%s: %s\n", target, message);
		break;
	default:
		ast_debug(3, "%s: %s\n", target, message);
		break;
	}
}

/* ---- load / reload / unload ------------------------------------------------ */

static int unload_module(void)
{
	struct at_client *cur, *pending;
	struct at_settings *cfg;
	int left;

	ast_mutex_lock(&at.lock);
	at.stopping = 1;
	ast_mutex_unlock(&at.lock);
	at_cli_unregister();
	ast_channel_unregister(&at_tech);
	/* Asterisk would crash running a channel whose code is gone: every
	 * ANYTUN channel hangs up before this returns. */
	left = at_hangup_all(30000);
	if (left) {
		ast_log(LOG_ERROR, "anytun: %d channels still up after 30 s; unload refused\n", left);
		ast_mutex_lock(&at.lock);
		at.stopping = 0;
		ast_mutex_unlock(&at.lock);
		ast_channel_register(&at_tech);
		at_cli_register();
		return -1;
	}
	if (sched) {
		ast_sched_context_destroy(sched);
		sched = NULL;
	}
	ast_mutex_lock(&at.lock);
	cur = at.cur;
	pending = at.pending;
	cfg = at.cfg;
	at.cur = at.pending = NULL;
	at.cfg = NULL;
	ast_mutex_unlock(&at.lock);
	/* Joins the library's thread: no callback runs after this. */
	client_free(pending);
	client_free(cur);
	/* Joins every thread of the hosted proxy. */
	at_proxy_stop();
	settings_free(cfg);
	anytun_set_logger(NULL, NULL, ANYTUN_LOG_OFF);
	ao2_cleanup(at.pvts);
	at.pvts = NULL;
	ao2_cleanup(at_tech.capabilities);
	at_tech.capabilities = NULL;
	return 0;
}

static int load_module(void)
{
	struct at_settings *s;
	struct at_client *c;

	if (anytun_abi_version() != ANYTUN_ABI_VERSION) {
		ast_log(LOG_ERROR, "anytun: libanytun has ABI %u, res_anytun was built for %d: rebuild res_anytun\n",
			anytun_abi_version(), ANYTUN_ABI_VERSION);
		return AST_MODULE_LOAD_DECLINE;
	}
	if (!(s = settings_load())) {
		ast_log(LOG_ERROR, "anytun: res_anytun not loaded: fix " CONFIG_FILE "\n");
		return AST_MODULE_LOAD_DECLINE;
	}
	at.stopping = 0;
	at_tech.capabilities = ast_format_cap_alloc(AST_FORMAT_CAP_FLAG_DEFAULT);
	at.pvts = at_pvts_alloc();
	if (!at_tech.capabilities || at_tech_caps(at_tech.capabilities) || !at.pvts) {
		settings_free(s);
		unload_module();
		return AST_MODULE_LOAD_DECLINE;
	}
	anytun_set_logger(log_cb, NULL, s->log_level);
	/* The proxy first: this PBX's own client may use it. */
	if (at_proxy_start(&s->proxy_mode)) {
		settings_free(s);
		unload_module();
		ast_log(LOG_ERROR, "anytun: res_anytun not loaded: fix " CONFIG_FILE " [proxy]\n");
		return AST_MODULE_LOAD_DECLINE;
	}
	c = NULL;
	if (!ast_strlen_zero(s->proxy) && (!(c = client_new(s)) || client_start(c))) {
		client_free(c);
		settings_free(s);
		unload_module();
		ast_log(LOG_ERROR, "anytun: res_anytun not loaded: fix " CONFIG_FILE "\n");
		return AST_MODULE_LOAD_DECLINE;
	}
	ast_mutex_lock(&at.lock);
	at.cfg = s;
	at.cur = c;
	ast_mutex_unlock(&at.lock);
	if (ast_channel_register(&at_tech)) {
		ast_log(LOG_ERROR, "anytun: cannot register channel type ANYTUN\n");
		unload_module();
		return AST_MODULE_LOAD_DECLINE;
	}
	at_cli_register();
	sched = ast_sched_context_create();
	if (!sched || ast_sched_start_thread(sched) || ast_sched_add(sched, 200, switch_pending, NULL) < 0) {
		unload_module();
		return AST_MODULE_LOAD_DECLINE;
	}
	ast_verb(2, "anytun: %s, proxy %s, %zu names%s\n", anytun_version(),
		s->proxy[0] ? s->proxy : "(none: proxy mode only)", s->n_names,
		s->proxy_mode.enabled ? ", hosting a proxy" : "");
	return AST_MODULE_LOAD_SUCCESS;
}

static int reload_module(void)
{
	struct at_settings *s = settings_load(), *old;
	struct at_client *fresh = NULL, *stale = NULL;

	if (!s) {
		ast_log(LOG_ERROR, "anytun: reload refused: " CONFIG_FILE " has errors; the running settings stay\n");
		return -1;
	}
	ast_mutex_lock(&at.lock);
	old = at.cfg;
	ast_mutex_unlock(&at.lock);
	if (ast_strlen_zero(old->proxy) != ast_strlen_zero(s->proxy)) {
		ast_log(LOG_ERROR, "anytun: reload refused: turning client mode on or off needs unload and load; the running settings stay\n");
		settings_free(s);
		return -1;
	}
	if (!ast_strlen_zero(s->proxy) && !conn_equal(old, s) && !(fresh = client_new(s))) {
		ast_log(LOG_ERROR, "anytun: reload refused; the running settings stay\n");
		settings_free(s);
		return -1;
	}
	/* Last of the checks, as it acts: a changed [proxy] restarts the
	 * hosted proxy (or, refused, leaves it running as it was). */
	if (at_proxy_reload(&s->proxy_mode)) {
		ast_log(LOG_ERROR, "anytun: reload refused; the running settings stay\n");
		client_free(fresh);
		settings_free(s);
		return -1;
	}
	anytun_set_logger(log_cb, NULL, s->log_level);
	ast_mutex_lock(&at.lock);
	if (fresh) {
		stale = at.pending;
		at.pending = fresh;
	} else if (at.cur) {
		apply_names(at.cur, old, s);
	}
	at.cfg = s;
	ast_mutex_unlock(&at.lock);
	client_free(stale);
	settings_free(old);
	if (fresh) {
		ast_log(LOG_NOTICE, "anytun: reloaded; the new connection settings start once no call is up\n");
	} else {
		ast_log(LOG_NOTICE, "anytun: reloaded\n");
	}
	return 0;
}

AST_MODULE_INFO(ASTERISK_GPL_KEY, AST_MODFLAG_LOAD_ORDER, "anytun anycast VoIP channel (ANYTUN)",
	.support_level = AST_MODULE_SUPPORT_EXTENDED,
	.load = load_module,
	.unload = unload_module,
	.reload = reload_module,
	.load_pri = AST_MODPRI_CHANNEL_DRIVER,
);
