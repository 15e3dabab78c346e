/*
 * res_anytun.h - what the two files of res_anytun.so share.
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 */
#ifndef RES_ANYTUN_H
#define RES_ANYTUN_H

#include <limits.h>
#include <stdint.h>

#include <anytun.h>

#include "asterisk/channel.h"
#include "asterisk/lock.h"

/*! Most names one PBX registers (anytun.conf "register"). */
#define AT_MAX_NAMES 16

/*! Most peers of a hosted proxy (anytun.conf [proxy] "peer"). */
#define AT_MAX_PEERS 64

/*! \brief anytun.conf [proxy]: a proxy node hosted in Asterisk. */
struct at_proxy_settings {
	int enabled; /*!< a [proxy] section is present */
	uint32_t node_id;
	uint32_t worker_threads;
	int reuse_port;
	int metrics_set;
	char config_file[PATH_MAX];
	char listen[256];
	char state_dir[PATH_MAX];
	char subscribers[PATH_MAX];
	char sync_listen[128];
	char metrics_listen[128];
	char bird_config[PATH_MAX]; /*!< announce the anycast routes through BIRD */
	char bird_socket[PATH_MAX];
	char announce_protocols[256];
	char peers[AT_MAX_PEERS][ANYTUN_PROXY_MAX_PEER_TEXT];
	size_t n_peers;
};

/*! \brief anytun.conf, parsed and checked. */
struct at_settings {
	/*! [proxy]; the client below is off when [general] has no proxy. */
	struct at_proxy_settings proxy_mode;
	/* The connection: a change needs a new session (see at_conn_equal). */
	char private_key[ANYTUN_KEY_TEXT_SIZE * 2]; /*!< never logged or shown */
	char key_file[PATH_MAX];
	char network_key[ANYTUN_KEY_TEXT_SIZE];
	char proxy[256];
	char bind[128];
	unsigned int keepalive_s;
	unsigned int media_timeout_ms;
	unsigned int max_calls;
	/* Applied live by a reload. */
	char names[AT_MAX_NAMES][ANYTUN_MAX_NAME + 1];
	size_t n_names;
	unsigned int register_expires_s;
	char caller[ANYTUN_MAX_NAME + 1];
	char context[AST_MAX_CONTEXT];
	struct ast_format *codecs[ANYTUN_MAX_CODECS]; /*!< references, in offer order */
	size_t n_codecs;
	int log_level; /*!< an anytun_log_level */
};

/*! \brief One libanytun client handle (one session with the proxy). */
struct at_client {
	anytun_client *h;
	/*! Channels bound to this client (under at.lock). */
	int calls;
	/*! Last anytun_session_state reported, its error and detail (at.lock). */
	int state;
	int error;
	char detail[256];
	/*! Names the proxy granted (at.lock). */
	int names;
};

/*! \brief The key of a pvt in at.pvts: a call id is unique per client. */
struct at_key {
	struct at_client *client;
	uint64_t call; /*!< 0 until an outgoing call is placed */
};

/*! \brief One ANYTUN channel's private data (an ao2 object; its lock
 * guards chan, answered, ended, format). */
struct at_pvt {
	struct at_key key; /*!< first: the container's key */
	struct ast_channel *chan;
	struct ast_format *format;
	char peer[ANYTUN_MAX_NAME + 1];
	int outgoing;
	int answered;
	int ended;
	uint32_t seq;
	uint32_t ts;
	int frames_in;
	int send_errors;
};

/*! \brief The module's state (guarded by lock unless said otherwise). */
struct at_globals {
	ast_mutex_t lock;
	struct at_settings *cfg;
	/*! A client with changed connection settings, created (so checked) but
	 *  not started: it replaces cur once cur has no call (reload). */
	struct at_client *pending;
	struct at_client *cur;
	/*! Every ANYTUN channel's pvt (its own lock). */
	struct ao2_container *pvts;
	/*! Set by unload (under lock): no new channel binds. */
	int stopping;
	/*! Channels bound to any client, from the request (or the incoming
	 *  call) until the last line of their hangup: unload frees nothing
	 *  before it is 0, and nothing binds once stopping is set. */
	int bound;
};

extern struct at_globals at;
extern struct ast_channel_tech at_tech;

/* res_anytun.c: the ANYTUN channels. */
struct ast_format *at_codec_format(const char *name);
const char *at_format_codec(const struct ast_format *format);
int at_tech_caps(struct ast_format_cap *cap);
struct ao2_container *at_pvts_alloc(void);
int at_hangup_all(int wait_ms);
struct at_pvt *at_pvt_find(struct at_client *client, uint64_t call);
struct ast_channel *at_pvt_chan(struct at_pvt *p);
struct at_pvt *at_pvt_alloc(struct at_client *client, const char *peer, struct ast_format *format,
	int outgoing);
struct ast_channel *at_new_channel(struct at_pvt *p, int state, const char *cid,
	const char *exten, const char *context, const struct ast_assigned_ids *assignedids,
	const struct ast_channel *requestor);
void at_bind_client_locked(struct at_client *c);
void at_unbind_client(struct at_client *c);
void at_swap16(uint8_t *dst, const uint8_t *src, size_t len);
int at_frame_samples(const struct ast_format *format, size_t bytes);

/* The calling thread's last library error detail in buf, always
 * NUL-terminated (the library writes nothing when buf is too small). */
static inline void at_last_error(char *buf, size_t len)
{
	size_t needed = 0;

	if (len == 0) {
		return;
	}
	buf[0] = '\0';
	if (anytun_last_error(buf, len, &needed) != ANYTUN_OK) {
		snprintf(buf, len, "(a detail of %zu bytes)", needed);
	}
}

/* res_anytun_events.c: the library's callbacks (on its thread). */
void at_on_incoming_call(void *user, uint64_t call, const char *from, const char *to,
	const char *const *codecs, size_t n_codecs);
void at_on_call_state(void *user, uint64_t call, int event, int cause, const char *codec);
void at_on_voice(void *user, uint64_t call, uint32_t seq, uint32_t timestamp,
	const uint8_t *payload, size_t len);
void at_on_dtmf(void *user, uint64_t call, char digit, uint16_t duration_ms);

/* res_anytun_config.c: anytun.conf, clients, load/unload/reload. */
int at_name_valid(const char *name);
int at_setting_copy(char *dst, size_t size, const char *section, const char *key,
	const char *value, int line);
const char *at_session_state_name(int state);

/* res_anytun_proxy.c: proxy mode ([proxy], anytun_proxy_*). */
struct ast_variable;
int at_proxy_parse(struct at_proxy_settings *p, struct ast_variable *v);
int at_proxy_start(const struct at_proxy_settings *p);
void at_proxy_stop(void);
int at_proxy_reload(const struct at_proxy_settings *p);
void at_proxy_cli_status(int fd);
int at_proxy_cli_peers(int fd);
int at_proxy_cli_sessions(int fd);
int at_proxy_cli_drain(int fd, int drain);

/* res_anytun_cli.c: anytun show status|sessions|peers|calls. */
int at_cli_register(void);
void at_cli_unregister(void);

#endif
