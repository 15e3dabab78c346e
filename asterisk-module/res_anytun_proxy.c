/*
 * res_anytun_proxy.c - res_anytun's proxy mode: anytun.conf [proxy] hosts
 * an anytun proxy node in Asterisk through libanytun's anytun_proxy_* (the
 * proxy runs on the library's own threads; this file only maps settings and
 * prints its state).
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 */
#include "asterisk.h"

#include <string.h>

#include "asterisk/cli.h"
#include "asterisk/config.h"
#include "asterisk/logger.h"
#include "asterisk/utils.h"

#include "res_anytun.h"

#define CONFIG_FILE "anytun.conf"

/*! The hosted proxy (NULL without [proxy]); set by load, cleared by unload. */
static anytun_proxy *hosted;

static int parse_u32(const char *name, const char *value, int line, unsigned int lo, unsigned int hi,
	uint32_t *out)
{
	char *end = NULL;
	unsigned long v = strtoul(value, &end, 10);

	if (ast_strlen_zero(value) || *end || v < lo || v > hi) {
		ast_log(LOG_ERROR, CONFIG_FILE " line %d: [proxy] %s '%s' is not a number in %u..%u\n", line,
			name, value, lo, hi);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

int at_proxy_parse(struct at_proxy_settings *p, struct ast_variable *v)
{
	int res = 0;

	p->enabled = 1;
	for (; v && !res; v = v->next) {
		const char *n = v->name, *val = v->value;
		int line = v->lineno;

		if (!strcasecmp(n, "node_id")) {
			res = parse_u32(n, val, line, 1, 65534, &p->node_id);
		} else if (!strcasecmp(n, "worker_threads")) {
			res = parse_u32(n, val, line, 1, 64, &p->worker_threads);
		} else if (!strcasecmp(n, "listen")) {
			res = at_setting_copy(p->listen, sizeof(p->listen), "proxy", n, val, line);
		} else if (!strcasecmp(n, "state_dir")) {
			res = at_setting_copy(p->state_dir, sizeof(p->state_dir), "proxy", n, val, line);
		} else if (!strcasecmp(n, "subscribers")) {
			res = at_setting_copy(p->subscribers, sizeof(p->subscribers), "proxy", n, val, line);
		} else if (!strcasecmp(n, "sync_listen")) {
			res = at_setting_copy(p->sync_listen, sizeof(p->sync_listen), "proxy", n, val, line);
		} else if (!strcasecmp(n, "metrics_listen")) {
			res = at_setting_copy(p->metrics_listen, sizeof(p->metrics_listen), "proxy", n, val, line);
			p->metrics_set = 1;
		} else if (!strcasecmp(n, "bird_config")) {
			res = at_setting_copy(p->bird_config, sizeof(p->bird_config), "proxy", n, val, line);
		} else if (!strcasecmp(n, "bird_socket")) {
			res = at_setting_copy(p->bird_socket, sizeof(p->bird_socket), "proxy", n, val, line);
		} else if (!strcasecmp(n, "announce_protocols")) {
			res = at_setting_copy(p->announce_protocols, sizeof(p->announce_protocols), "proxy", n,
				val, line);
		} else if (!strcasecmp(n, "config_file")) {
			res = at_setting_copy(p->config_file, sizeof(p->config_file), "proxy", n, val, line);
		} else if (!strcasecmp(n, "reuse_port")) {
			p->reuse_port = ast_true(val);
		} else if (!strcasecmp(n, "peer")) {
			if (p->n_peers == AT_MAX_PEERS) {
				ast_log(LOG_ERROR, CONFIG_FILE " line %d: [proxy] more than %d peers\n", line, AT_MAX_PEERS);
				res = -1;
			} else if (!(res = at_setting_copy(p->peers[p->n_peers], sizeof(p->peers[0]), "proxy", n,
				val, line))) {
				p->n_peers++;
			}
		} else {
			ast_log(LOG_ERROR, CONFIG_FILE " line %d: unknown setting '%s' in [proxy]\n", line, n);
			res = -1;
		}
	}
	return res;
}

/*! \brief Fills the library's config from p; peer pointers go to ptrs. */
static void proxy_config(const struct at_proxy_settings *p, anytun_proxy_config *pc, const char **ptrs)
{
	size_t i;

	anytun_proxy_config_init(pc);
	pc->flags = p->reuse_port ? ANYTUN_PROXY_REUSE_PORT : 0;
	pc->config_file = p->config_file[0] ? p->config_file : NULL;
	pc->node_id = p->node_id;
	pc->worker_threads = p->worker_threads;
	pc->listen = p->listen[0] ? p->listen : NULL;
	pc->state_dir = p->state_dir[0] ? p->state_dir : NULL;
	pc->subscribers = p->subscribers[0] ? p->subscribers : NULL;
	pc->sync_listen = p->sync_listen[0] ? p->sync_listen : NULL;
	pc->metrics_listen = p->metrics_set ? p->metrics_listen : NULL;
	pc->bird_config = p->bird_config[0] ? p->bird_config : NULL;
	pc->bird_socket = p->bird_socket[0] ? p->bird_socket : NULL;
	pc->announce_protocols = p->announce_protocols[0] ? p->announce_protocols : NULL;
	for (i = 0; i < p->n_peers; i++) {
		ptrs[i] = p->peers[i];
	}
	pc->peers = p->n_peers ? ptrs : NULL;
	pc->n_peers = p->n_peers;
}

static void log_lib_error(const char *what, int rc)
{
	char detail[512];

	at_last_error(detail, sizeof(detail));
	ast_log(LOG_ERROR, "anytun: %s: %s%s%s\n", what, anytun_strerror(rc), detail[0] ? ": " : "", detail);
}

int at_proxy_start(const struct at_proxy_settings *p)
{
	anytun_proxy_config pc;
	const char *ptrs[AT_MAX_PEERS];
	anytun_proxy *h = NULL;
	int rc;

	if (!p->enabled) {
		return 0;
	}
	proxy_config(p, &pc, ptrs);
	rc = anytun_proxy_new(&pc, &h);
	if (rc != ANYTUN_OK) {
		log_lib_error(CONFIG_FILE " [proxy]", rc);
		return -1;
	}
	rc = anytun_proxy_start(h);
	if (rc != ANYTUN_OK) {
		log_lib_error("the proxy cannot start", rc);
		anytun_proxy_free(h);
		return -1;
	}
	hosted = h;
	ast_verb(2, "anytun: hosting proxy node %u\n", p->node_id);
	return 0;
}

void at_proxy_stop(void)
{
	if (hosted) {
		int rc = anytun_proxy_free(hosted);

		if (rc != ANYTUN_OK) {
			log_lib_error("stopping the proxy", rc);
		}
		hosted = NULL;
	}
}

int at_proxy_reload(const struct at_proxy_settings *p)
{
	anytun_proxy_config pc;
	const char *ptrs[AT_MAX_PEERS];
	int rc;

	if (!hosted && !p->enabled) {
		return 0;
	}
	if (!hosted || !p->enabled) {
		ast_log(LOG_ERROR, "anytun: reload cannot add or remove [proxy]: unload and load res_anytun\n");
		return -1;
	}
	/* The library applies it (and logs what it did): nothing when it asks
	 * for what runs; a new peer list live; anything else by a restart of
	 * the proxy inside the same handle, deferred while it carries calls
	 * and no peer is synced to take them, back on the old settings if the
	 * new ones cannot start. */
	proxy_config(p, &pc, ptrs);
	rc = anytun_proxy_reload(hosted, &pc);
	if (rc == ANYTUN_ERR_INTERNAL) {
		log_lib_error("[proxy] reload failed and the proxy is stopped (fix " CONFIG_FILE
			", then unload and load res_anytun)", rc);
		return -1;
	}
	if (rc != ANYTUN_OK) {
		log_lib_error("reload refused for [proxy]", rc);
		return -1;
	}
	return 0;
}

static const char *state_name(int state)
{
	switch (state) {
	case ANYTUN_PROXY_IDLE:
		return "idle";
	case ANYTUN_PROXY_SYNCING:
		return "syncing";
	case ANYTUN_PROXY_SERVING:
		return "serving";
	case ANYTUN_PROXY_FAILED:
		return "failed";
	case ANYTUN_PROXY_STOPPED:
		return "stopped";
	}
	return "?";
}

/*! \brief Whether the hosted proxy announces its anycast routes now. */
static const char *routes_name(uint32_t routes)
{
	if (!(routes & ANYTUN_PROXY_ROUTES_ANNOUNCING)) {
		return "not announced by this proxy (no bird_config)";
	}
	return (routes & ANYTUN_PROXY_ROUTES_ANNOUNCED) ? "announced" : "withdrawn";
}

void at_proxy_cli_status(int fd)
{
	anytun_proxy_status st;
	char key[ANYTUN_KEY_TEXT_SIZE * 2] = "";

	if (!hosted) {
		ast_cli(fd, "Proxy mode:   off\n");
		return;
	}
	anytun_proxy_status_init(&st);
	if (anytun_proxy_get_status(hosted, &st) != ANYTUN_OK) {
		ast_cli(fd, "Proxy mode:   status unavailable\n");
		return;
	}
	anytun_proxy_node_key(hosted, key, sizeof(key), NULL);
	ast_cli(fd, "Proxy mode:   node %u, %s%s%s, ready %s\n", st.node_id, state_name(st.state),
		st.detail[0] ? ": " : "", st.detail, st.ready ? "yes" : "no");
	ast_cli(fd, "Proxy UDP:    port %u, sync port %u\n", st.udp_port, st.sync_port);
	ast_cli(fd, "Proxy tables: %u sessions, %u calls, %u registrations, %u subscribers\n", st.sessions,
		st.calls, st.registrations, st.subscribers);
	ast_cli(fd, "Proxy peers:  %u configured, %u up, %u synced\n", st.peers, st.peers_up, st.peers_synced);
	ast_cli(fd, "Proxy calls:  %u sessions served here in calls\n", st.carried);
	ast_cli(fd, "Proxy reload: %s\n", st.reload_pending ?
		"restart pending (new [proxy] settings), waiting for the calls it carries to end" : "none");
	ast_cli(fd, "Proxy routes: %s%s%s\n", routes_name(st.routes),
		(st.routes & ANYTUN_PROXY_ROUTES_OVERLOADED) ? ", overloaded" : "",
		(st.routes & ANYTUN_PROXY_ROUTES_DRAINED) ? ", drained" : "");
	ast_cli(fd, "Proxy voice:  %llu frames relayed, %llu datagrams dropped\n",
		(unsigned long long)st.frames_relayed, (unsigned long long)st.dropped);
	ast_cli(fd, "Network key:  %s\nNode key:     %s\n", st.network_key, key);
}

int at_proxy_cli_drain(int fd, int drain)
{
	int rc;
	char detail[512];

	if (!hosted) {
		ast_cli(fd, "anytun: no hosted proxy ([proxy] in " CONFIG_FILE ")\n");
		return -1;
	}
	rc = anytun_proxy_drain(hosted, drain);
	if (rc != ANYTUN_OK) {
		at_last_error(detail, sizeof(detail));
		ast_cli(fd, "anytun: %s: %s%s%s\n", drain ? "drain" : "undrain", anytun_strerror(rc),
			detail[0] ? ": " : "", detail);
		return -1;
	}
	ast_cli(fd, "anytun: %s\n", drain ? "draining: anycast routes withdrawn, still serving"
		: "announcing the anycast routes again (when ready)");
	return 0;
}

#define SESSIONS_FORMAT "%-16.16s %-7.7s %-24.24s %-5.5s %-24.24s %s\n"

/*! Sessions asked for per library call (one page of its tables). */
#define SESSIONS_PAGE 64

int at_proxy_cli_sessions(int fd)
{
	anytun_proxy_session_info page[SESSIONS_PAGE];
	uint64_t after = 0;
	size_t n, i, total = 0;
	anytun_proxy_status st;

	if (!hosted) {
		return -1;
	}
	anytun_proxy_status_init(&st);
	anytun_proxy_get_status(hosted, &st);
	ast_cli(fd, SESSIONS_FORMAT, "Session-ID", "Serving", "Client address", "Calls", "Names",
		"Client key");
	do {
		int rc = anytun_proxy_sessions(hosted, after, page, SESSIONS_PAGE, &n);

		if (rc != ANYTUN_OK) {
			ast_cli(fd, "anytun: sessions unavailable: %s\n", anytun_strerror(rc));
			return 0;
		}
		for (i = 0; i < n; i++) {
			const anytun_proxy_session_info *s = &page[i];
			char sid[20], serving[12], calls[12];

			snprintf(sid, sizeof(sid), "%016" PRIx64, s->session_id);
			snprintf(serving, sizeof(serving), "%u", s->serving);
			snprintf(calls, sizeof(calls), "%u", s->calls);
			ast_cli(fd, SESSIONS_FORMAT, sid, serving, s->address, calls, S_OR(s->names, "-"),
				s->client_key);
			after = s->session_id;
		}
		total += n;
	} while (n);
	ast_cli(fd, "%zu hosted proxy session%s (node %u, %s)\n", total, ESS(total), st.node_id,
		state_name(st.state));
	return 0;
}

int at_proxy_cli_peers(int fd)
{
	anytun_proxy_peer_info peers[AT_MAX_PEERS];
	anytun_proxy_status st;
	size_t n = 0, i;
	uint64_t now = (uint64_t)ast_tvnow().tv_sec * 1000 + ast_tvnow().tv_usec / 1000;

	if (!hosted) {
		return -1;
	}
	anytun_proxy_status_init(&st);
	anytun_proxy_get_status(hosted, &st);
	if (anytun_proxy_peers(hosted, peers, AT_MAX_PEERS, &n) != ANYTUN_OK) {
		ast_cli(fd, "anytun: peers unavailable\n");
		return 0;
	}
	ast_cli(fd, "%-6s %-5s %-24s %-10s %-8s %-10s %s\n", "Node", "Link", "Address", "Heard(ms)",
		"Connects", "Queued(B)", "Last error");
	for (i = 0; i < n; i++) {
		const anytun_proxy_peer_info *p = &peers[i];
		char heard[24];

		if (p->last_heard_ms) {
			snprintf(heard, sizeof(heard), "%llu",
				(unsigned long long)(now > p->last_heard_ms ? now - p->last_heard_ms : 0));
		} else {
			ast_copy_string(heard, "never", sizeof(heard));
		}
		ast_cli(fd, "%-6u %-5s %-24s %-10s %-8llu %-10llu %s\n", p->node_id,
			p->state == ANYTUN_PEER_UP ? "up" : "down", p->address, heard,
			(unsigned long long)p->connects, (unsigned long long)p->queued_bytes, p->last_error);
	}
	ast_cli(fd, "%zu anypsp peers, %u up, %u synced; proxy %s, ready %s\n", n, st.peers_up,
		st.peers_synced, state_name(st.state), st.ready ? "yes" : "no");
	return 0;
}
