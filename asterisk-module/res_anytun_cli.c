/*
 * res_anytun_cli.c - `anytun show status|sessions|peers|calls`, shaped like
 * Asterisk's own `show` tables (a header line, one line per item, a count).
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 */

#include "asterisk.h"

#include <anytun.h>

#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/cli.h"
#include "asterisk/format.h"
#include "asterisk/utils.h"

#include "res_anytun.h"

/*! \brief A client's library status; 0 on success. */
static int client_status(struct at_client *c, anytun_client_status *st)
{
	memset(st, 0, sizeof(*st));
	st->struct_size = sizeof(*st);
	return c ? anytun_client_get_status(c->h, st) : -1;
}

static void show_status(int fd)
{
	anytun_client_status st;
	char names[AT_MAX_NAMES * (ANYTUN_MAX_NAME + 2)] = "";
	char codecs[ANYTUN_MAX_CODECS * 6] = "";
	char detail[256] = "", proxy[256] = "", context[AST_MAX_CONTEXT] = "";
	int have, state = -1, calls = 0, pending = 0, have_proxy = 0;
	size_t i;

	ast_mutex_lock(&at.lock);
	if (at.cfg) {
		for (i = 0; i < at.cfg->n_names; i++) {
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? "," : "",
				at.cfg->names[i]);
		}
		for (i = 0; i < at.cfg->n_codecs; i++) {
			snprintf(codecs + strlen(codecs), sizeof(codecs) - strlen(codecs), "%s%s", i ? "," : "",
				at_format_codec(at.cfg->codecs[i]));
		}
		ast_copy_string(proxy, at.cfg->proxy, sizeof(proxy));
		ast_copy_string(context, at.cfg->context, sizeof(context));
		have_proxy = at.cfg->proxy_mode.enabled;
	}
	if (at.cur) {
		state = at.cur->state;
		calls = at.cur->calls;
		ast_copy_string(detail, at.cur->detail, sizeof(detail));
	}
	pending = at.pending != NULL;
	have = !client_status(at.cur, &st);
	ast_mutex_unlock(&at.lock);

	ast_cli(fd, "anytun status\n");
	ast_cli(fd, "  Library:          %s (ABI %u)\n", anytun_version(), anytun_abi_version());
	ast_cli(fd, "  Mode:             %s\n", have_proxy ? (proxy[0] ? "client and proxy" : "proxy") : "client");
	ast_cli(fd, "  Proxy:            %s\n", proxy);
	ast_cli(fd, "  Session:          %s%s%s\n", state < 0 ? "none" : at_session_state_name(state),
		detail[0] ? ": " : "", detail);
	if (have) {
		ast_cli(fd, "  Session ID:       %016" PRIx64 " (proxy %u)\n", st.session_id, st.proxy_id);
		ast_cli(fd, "  Observed address: %s (local port %u)\n", S_OR(st.observed, "-"), st.local_port);
		ast_cli(fd, "  Names registered: %u of %s\n", st.names, S_OR(names, "(none)"));
		ast_cli(fd, "  Frames sent:      %" PRIu64 "\n", st.frames_sent);
		ast_cli(fd, "  Frames received:  %" PRIu64 "\n", st.frames_received);
		ast_cli(fd, "  Packets dropped:  %" PRIu64 "\n", st.dropped);
		/* Hangups and refusals whose cause was no Q.850 value (0, above
		 * 127): sent or reported as 16 or 127 (include/anytun.h). */
		ast_cli(fd, "  Causes mapped:    %" PRIu64 "\n", st.causes_out_of_range);
	}
	ast_cli(fd, "  Context:          %s\n", context);
	ast_cli(fd, "  Codecs:           %s\n", codecs);
	ast_cli(fd, "  Channels:         %d\n", calls);
	ast_cli(fd, "  Pending reload:   %s\n",
		pending ? "new connection settings, waiting for the calls to end" : "none");
	at_proxy_cli_status(fd);
}

#define SESSIONS_FORMAT "%-24.24s %-13.13s %-16.16s %-8.8s %-24.24s %-5.5s %-5.5s %s\n"

static void show_sessions(int fd)
{
	struct at_client *clients[2];
	const char *roles[2] = { "current", "pending" };
	char proxy[256] = "";
	int n = 0, i;

	ast_cli(fd, SESSIONS_FORMAT, "Proxy", "State", "Session-ID", "Proxy-ID", "Observed", "Names",
		"Calls", "Dropped");
	ast_mutex_lock(&at.lock);
	clients[0] = at.cur;
	clients[1] = at.pending;
	if (at.cfg) {
		ast_copy_string(proxy, at.cfg->proxy, sizeof(proxy));
	}
	for (i = 0; i < 2; i++) {
		anytun_client_status st;
		char sid[20], pid[8], names[8], calls[8], dropped[24];

		if (!clients[i] || client_status(clients[i], &st)) {
			continue;
		}
		snprintf(sid, sizeof(sid), "%016" PRIx64, st.session_id);
		snprintf(pid, sizeof(pid), "%u", st.proxy_id);
		snprintf(names, sizeof(names), "%u", st.names);
		snprintf(calls, sizeof(calls), "%u", st.calls);
		snprintf(dropped, sizeof(dropped), "%" PRIu64, st.dropped);
		ast_cli(fd, SESSIONS_FORMAT, i ? roles[i] : proxy, at_session_state_name(st.state), sid, pid,
			S_OR(st.observed, "-"), names, calls, dropped);
		n++;
	}
	ast_mutex_unlock(&at.lock);
	ast_cli(fd, "%d anytun session%s\n", n, ESS(n));
	/* Proxy mode: the hosted proxy's table of its clients' sessions. */
	at_proxy_cli_sessions(fd);
}

#define PEERS_FORMAT "%-10.10s %-40.40s %-12.12s %s\n"

static void show_peers(int fd)
{
	if (!at_proxy_cli_peers(fd)) {
		return;
	}
	ast_cli(fd, PEERS_FORMAT, "Node", "Address", "State", "Sessions");
	ast_cli(fd, "0 anypsp peers (proxy mode is not configured: this PBX is an anytun client)\n");
}

#define CALLS_FORMAT "%-32.32s %-4.4s %-20.20s %-9.9s %-6.6s %-10.10s %s\n"

static int show_call_cb(void *obj, void *arg, int flags)
{
	struct at_pvt *p = obj;
	int fd = *(int *) arg;
	char id[24], frames[16];
	const char *state;
	char name[AST_CHANNEL_NAME] = "-";

	ao2_lock(p);
	if (p->chan) {
		ast_copy_string(name, ast_channel_name(p->chan), sizeof(name));
	}
	state = p->ended ? "ending" : p->answered ? "up" : p->outgoing ? "dialing" : "alerting";
	snprintf(id, sizeof(id), "%016" PRIx64, p->key.call);
	snprintf(frames, sizeof(frames), "%d", p->frames_in);
	ast_cli(fd, CALLS_FORMAT, name, p->outgoing ? "out" : "in", p->peer, state,
		at_format_codec(p->format), frames, id);
	ao2_unlock(p);
	return 0;
}

static void show_calls(int fd)
{
	int n = 0;

	ast_cli(fd, CALLS_FORMAT, "Channel", "Dir", "Peer", "State", "Codec", "Frames-In", "Call-ID");
	if (at.pvts) {
		ao2_callback(at.pvts, OBJ_NODATA | OBJ_MULTIPLE, show_call_cb, &fd);
		n = ao2_container_count(at.pvts);
	}
	ast_cli(fd, "%d active anytun call%s\n", n, ESS(n));
}

static char *cli_show(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	switch (cmd) {
	case CLI_INIT:
		e->command = "anytun show {status|sessions|peers|calls}";
		e->usage =
			"Usage: anytun show {status|sessions|peers|calls}\n"
			"       status:   the library, the session with the proxy, names, settings\n"
			"       sessions: the client sessions (current, and pending after a reload);\n"
			"                 in proxy mode also the hosted proxy's client sessions\n"
			"       peers:    anypsp peers (proxy mode)\n"
			"       calls:    the ANYTUN channels and their calls\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != 3) {
		return CLI_SHOWUSAGE;
	}
	if (!strcasecmp(a->argv[2], "status")) {
		show_status(a->fd);
	} else if (!strcasecmp(a->argv[2], "sessions")) {
		show_sessions(a->fd);
	} else if (!strcasecmp(a->argv[2], "peers")) {
		show_peers(a->fd);
	} else if (!strcasecmp(a->argv[2], "calls")) {
		show_calls(a->fd);
	} else {
		return CLI_SHOWUSAGE;
	}
	return CLI_SUCCESS;
}

static char *cli_drain(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	switch (cmd) {
	case CLI_INIT:
		e->command = "anytun drain {on|off}";
		e->usage =
			"Usage: anytun drain {on|off}\n"
			"       on:  the hosted proxy withdraws its anycast routes (bird_config)\n"
			"            and keeps serving what still arrives (anytund's SIGUSR1)\n"
			"       off: it announces them again once ready (SIGUSR2)\n"
			"       A drain lasts across a module reload that restarts the proxy.\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != 3) {
		return CLI_SHOWUSAGE;
	}
	if (!strcasecmp(a->argv[2], "on")) {
		at_proxy_cli_drain(a->fd, 1);
	} else if (!strcasecmp(a->argv[2], "off")) {
		at_proxy_cli_drain(a->fd, 0);
	} else {
		return CLI_SHOWUSAGE;
	}
	return CLI_SUCCESS;
}

static struct ast_cli_entry cli_entries[] = {
	AST_CLI_DEFINE(cli_show, "Show anytun status, sessions, peers or calls"),
	AST_CLI_DEFINE(cli_drain, "Withdraw or announce the hosted proxy's anycast routes"),
};

int at_cli_register(void)
{
	return ast_cli_register_multiple(cli_entries, ARRAY_LEN(cli_entries));
}

void at_cli_unregister(void)
{
	ast_cli_unregister_multiple(cli_entries, ARRAY_LEN(cli_entries));
}
