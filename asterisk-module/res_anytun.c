/*
 * res_anytun.c - channel technology ANYTUN: Asterisk as an anytun client.
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 *
 * A thin adapter between Asterisk's channel API and libanytun's C ABI
 * (include/anytun.h): Dial(ANYTUN/bob) places a call by name through the
 * anycast network; calls to this PBX's names start in the configured
 * context with the called name as the extension and the caller's name as
 * caller id. This file holds the channels; the library's callbacks are in
 * res_anytun_events.c, configuration, load and unload in
 * res_anytun_config.c, the CLI in res_anytun_cli.c.
 *
 * Locking (why it cannot deadlock): the library never holds a lock of its
 * own while it runs a callback. Callbacks take the pvt container's lock and
 * a pvt's lock only briefly and one at a time, and lock a channel (through
 * ast_queue_frame) holding neither. Asterisk's threads call in with the
 * channel locked and may then take the container or a pvt lock: the order
 * is always channel -> container -> pvt.
 */

/*** MODULEINFO
	<support_level>extended</support_level>
 ***/

#include "asterisk.h"

#include <anytun.h>

#include "asterisk/astobj2.h"
#include "asterisk/causes.h"
#include "asterisk/channel.h"
#include "asterisk/format_cache.h"
#include "asterisk/format_cap.h"
#include "asterisk/frame.h"
#include "asterisk/lock.h"
#include "asterisk/logger.h"
#include "asterisk/module.h"
#include "asterisk/pbx.h"
#include "asterisk/stasis_channels.h"
#include "asterisk/utils.h"

#include "res_anytun.h"

struct at_globals at = {
	.lock = AST_MUTEX_INIT_VALUE,
};

/* ---- codecs ------------------------------------------------------------- */

/*! \brief The formats the channel carries, by the library's codec names. */
static const struct {
	const char *name;
	struct ast_format **format;
} codec_map[] = {
	{ "ulaw", &ast_format_ulaw },
	{ "alaw", &ast_format_alaw },
	{ "slin", &ast_format_slin },
	{ "g722", &ast_format_g722 },
};

struct ast_format *at_codec_format(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(codec_map); i++) {
		if (!strcasecmp(name, codec_map[i].name)) {
			return *codec_map[i].format;
		}
	}
	return NULL;
}

const char *at_format_codec(const struct ast_format *format)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(codec_map); i++) {
		if (ast_format_cmp(format, *codec_map[i].format) == AST_FORMAT_CMP_EQUAL) {
			return codec_map[i].name;
		}
	}
	return NULL;
}

int at_tech_caps(struct ast_format_cap *cap)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(codec_map); i++) {
		if (ast_format_cap_append(cap, *codec_map[i].format, 0)) {
			return -1;
		}
	}
	return 0;
}

/*! \brief Asterisk samples in \a bytes of \a format (g722: 16 kHz audio). */
int at_frame_samples(const struct ast_format *format, size_t bytes)
{
	if (format == ast_format_slin) {
		return bytes / 2;
	}
	if (format == ast_format_g722) {
		return bytes * 2;
	}
	return bytes;
}

/*! \brief Ticks of the library's 8000 Hz timestamp clock in \a bytes. */
static uint32_t frame_ticks(const struct ast_format *format, size_t bytes)
{
	return format == ast_format_slin ? bytes / 2 : bytes;
}

/*! \brief The library's slin is big-endian; Asterisk's is host order. */
void at_swap16(uint8_t *dst, const uint8_t *src, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2) {
		uint16_t v;

		memcpy(&v, src + i, 2);
		v = htons(v);
		memcpy(dst + i, &v, 2);
	}
	if (len % 2) {
		/* A torn last sample (a peer's odd-length frame): copied as is,
		 * never left uninitialised. */
		dst[len - 1] = src[len - 1];
	}
}

/* ---- pvts ------------------------------------------------------------------ */

static int pvt_hash(const void *obj, int flags)
{
	const struct at_pvt *p = obj;
	const struct at_key *k = obj;
	uint64_t call = (flags & OBJ_SEARCH_MASK) == OBJ_SEARCH_KEY ? k->call : p->key.call;

	return (int) (call ^ (call >> 32)) & INT_MAX;
}

static int pvt_cmp(void *obj, void *arg, int flags)
{
	const struct at_pvt *p = obj;
	const struct at_key *k = (flags & OBJ_SEARCH_MASK) == OBJ_SEARCH_KEY
		? arg : &((const struct at_pvt *) arg)->key;

	return p->key.call == k->call && p->key.client == k->client ? CMP_MATCH : 0;
}

struct ao2_container *at_pvts_alloc(void)
{
	return ao2_container_alloc_hash(AO2_ALLOC_OPT_LOCK_MUTEX, 0, 257, pvt_hash, NULL, pvt_cmp);
}

static void pvt_destroy(void *obj)
{
	struct at_pvt *p = obj;

	ao2_cleanup(p->format);
}

/*! \brief The pvt of \a call of \a client, with a reference, or NULL. */
struct at_pvt *at_pvt_find(struct at_client *client, uint64_t call)
{
	struct at_key key = { .client = client, .call = call };

	if (!call || !at.pvts) {
		return NULL;
	}
	return ao2_find(at.pvts, &key, OBJ_SEARCH_KEY);
}

/*! \brief The pvt's channel, with a reference, or NULL once hung up. */
struct ast_channel *at_pvt_chan(struct at_pvt *p)
{
	struct ast_channel *chan;

	ao2_lock(p);
	chan = p->chan ? ast_channel_ref(p->chan) : NULL;
	ao2_unlock(p);
	return chan;
}

/* ---- channels ------------------------------------------------------------ */

static struct ast_channel *at_request(const char *type, struct ast_format_cap *cap,
	const struct ast_assigned_ids *assignedids, const struct ast_channel *requestor,
	const char *addr, int *cause);
static int at_call(struct ast_channel *chan, const char *addr, int timeout);
static int at_hangup(struct ast_channel *chan);
static int at_answer(struct ast_channel *chan);
static struct ast_frame *at_read(struct ast_channel *chan);
static int at_write(struct ast_channel *chan, struct ast_frame *f);
static int at_indicate(struct ast_channel *chan, int cond, const void *data, size_t len);
static int at_digit_begin(struct ast_channel *chan, char digit);
static int at_digit_end(struct ast_channel *chan, char digit, unsigned int duration);
static int at_fixup(struct ast_channel *oldchan, struct ast_channel *newchan);

struct ast_channel_tech at_tech = {
	.type = "ANYTUN",
	.description = "anytun anycast VoIP network",
	.requester = at_request,
	.call = at_call,
	.hangup = at_hangup,
	.answer = at_answer,
	.read = at_read,
	.write = at_write,
	.indicate = at_indicate,
	.send_digit_begin = at_digit_begin,
	.send_digit_end = at_digit_end,
	.fixup = at_fixup,
};

/*!
 * \brief A new ANYTUN channel for \a p, returned locked, holding a module
 * reference and a reference to \a p (its tech_pvt). NULL on failure.
 */
struct ast_channel *at_new_channel(struct at_pvt *p, int state, const char *cid,
	const char *exten, const char *context, const struct ast_assigned_ids *assignedids,
	const struct ast_channel *requestor)
{
	static int counter;
	struct ast_format_cap *native;
	struct ast_channel *chan;

	native = ast_format_cap_alloc(AST_FORMAT_CAP_FLAG_DEFAULT);
	if (!native || ast_format_cap_append(native, p->format, 0)) {
		ao2_cleanup(native);
		return NULL;
	}
	ast_module_ref(AST_MODULE_SELF);
	chan = ast_channel_alloc(1, state, cid, cid, "", exten, context, assignedids, requestor, 0,
		"ANYTUN/%s-%08x", p->peer, (unsigned) ast_atomic_fetchadd_int(&counter, 1));
	if (!chan) {
		ao2_ref(native, -1);
		ast_module_unref(AST_MODULE_SELF);
		return NULL;
	}
	ast_channel_stage_snapshot(chan);
	ast_channel_tech_set(chan, &at_tech);
	ast_channel_nativeformats_set(chan, native);
	ao2_ref(native, -1);
	ast_channel_set_writeformat(chan, p->format);
	ast_channel_set_rawwriteformat(chan, p->format);
	ast_channel_set_readformat(chan, p->format);
	ast_channel_set_rawreadformat(chan, p->format);
	ao2_ref(p, +1);
	ast_channel_tech_pvt_set(chan, p);
	ast_channel_stage_snapshot_done(chan);
	p->chan = chan;
	return chan;
}

struct at_pvt *at_pvt_alloc(struct at_client *client, const char *peer, struct ast_format *format,
	int outgoing)
{
	struct at_pvt *p = ao2_alloc(sizeof(*p), pvt_destroy);

	if (!p) {
		return NULL;
	}
	p->key.client = client;
	p->outgoing = outgoing;
	p->format = ao2_bump(format);
	ast_copy_string(p->peer, peer, sizeof(p->peer));
	return p;
}

/*! \brief Counts a new channel on \a c (at.lock held, at.stopping clear):
 * a connection change and unload both wait for it. */
void at_bind_client_locked(struct at_client *c)
{
	c->calls++;
	at.bound++;
}

/*! \brief Ends what at_bind_client_locked counted. The caller touches
 * neither \a c nor anything of the module after it: unload may free both
 * as soon as the count is 0. */
void at_unbind_client(struct at_client *c)
{
	ast_mutex_lock(&at.lock);
	c->calls--;
	at.bound--;
	ast_mutex_unlock(&at.lock);
}

static struct ast_channel *at_request(const char *type, struct ast_format_cap *cap,
	const struct ast_assigned_ids *assignedids, const struct ast_channel *requestor,
	const char *addr, int *cause)
{
	struct ast_format *format = NULL;
	struct at_client *client;
	struct ast_channel *chan;
	struct at_pvt *p;
	size_t i;

	if (ast_strlen_zero(addr) || !at_name_valid(addr)) {
		ast_log(LOG_WARNING, "ANYTUN/%s: not a valid anytun name (1..64 of A-Z a-z 0-9 . _ + -)\n",
			S_OR(addr, ""));
		*cause = AST_CAUSE_INVALID_NUMBER_FORMAT;
		return NULL;
	}
	/* Bound first, under the lock that unload sets stopping with: once
	 * stopping, nothing binds; bound, unload waits for this channel. */
	ast_mutex_lock(&at.lock);
	client = at.stopping ? NULL : at.cur;
	if (client) {
		at_bind_client_locked(client);
	}
	/* The caller's preferred format that this PBX offers, else our first. */
	for (i = 0; client && !format && i < ast_format_cap_count(cap); i++) {
		struct ast_format *f = ast_format_cap_get_format(cap, i);
		size_t j;

		for (j = 0; at.cfg && j < at.cfg->n_codecs; j++) {
			if (ast_format_cmp(f, at.cfg->codecs[j]) == AST_FORMAT_CMP_EQUAL) {
				format = ao2_bump(at.cfg->codecs[j]);
				break;
			}
		}
		ao2_ref(f, -1);
	}
	if (client && !format && at.cfg && at.cfg->n_codecs) {
		format = ao2_bump(at.cfg->codecs[0]);
	}
	ast_mutex_unlock(&at.lock);
	if (!format) {
		if (client) {
			at_unbind_client(client);
		}
		ast_log(LOG_WARNING, "ANYTUN/%s: no anytun client (module stopping or reconnecting)\n", addr);
		*cause = AST_CAUSE_NETWORK_OUT_OF_ORDER;
		return NULL;
	}
	p = at_pvt_alloc(client, addr, format, 1);
	ao2_ref(format, -1);
	if (!p) {
		at_unbind_client(client);
		*cause = AST_CAUSE_SWITCH_CONGESTION;
		return NULL;
	}
	chan = at_new_channel(p, AST_STATE_DOWN, NULL, addr, "", assignedids, requestor);
	if (!chan) {
		ao2_ref(p, -1);
		*cause = AST_CAUSE_SWITCH_CONGESTION;
		at_unbind_client(client); /* last: see at_unbind_client */
		return NULL;
	}
	/* Linked with call 0 until placed, so unload finds it too. */
	ao2_link(at.pvts, p);
	ao2_ref(p, -1);
	ast_channel_unlock(chan);
	return chan;
}

static int at_call(struct ast_channel *chan, const char *addr, int timeout)
{
	struct at_pvt *p = ast_channel_tech_pvt(chan);
	const char *codecs[ANYTUN_MAX_CODECS];
	char from[ANYTUN_MAX_NAME + 1] = "";
	size_t n = 0, i;
	uint64_t id = 0;
	int rc;

	if (!p) {
		return -1;
	}
	codecs[n++] = at_format_codec(p->format);
	ast_mutex_lock(&at.lock);
	for (i = 0; at.cfg && i < at.cfg->n_codecs && n < ANYTUN_MAX_CODECS; i++) {
		if (at.cfg->codecs[i] != p->format) {
			codecs[n++] = at_format_codec(at.cfg->codecs[i]);
		}
	}
	if (at.cfg) {
		ast_copy_string(from, at.cfg->caller, sizeof(from));
	}
	ast_mutex_unlock(&at.lock);

	/* Re-keyed under the container's lock, so a callback for the new call
	 * waits until the pvt can be found by its id. */
	ao2_lock(at.pvts);
	rc = anytun_client_call(p->key.client->h, p->peer, from[0] ? from : NULL, codecs, n, &id);
	if (rc == ANYTUN_OK) {
		ao2_unlink_flags(at.pvts, p, OBJ_NOLOCK);
		p->key.call = id;
		ao2_link_flags(at.pvts, p, OBJ_NOLOCK);
	}
	ao2_unlock(at.pvts);
	if (rc != ANYTUN_OK) {
		char detail[256];

		at_last_error(detail, sizeof(detail));
		ast_log(LOG_WARNING, "%s: call to %s failed: %s (%s)\n", ast_channel_name(chan), p->peer,
			anytun_strerror(rc), detail);
		ast_channel_hangupcause_set(chan, rc == ANYTUN_ERR_NOT_CONNECTED
			? AST_CAUSE_NETWORK_OUT_OF_ORDER : AST_CAUSE_FAILURE);
		return -1;
	}
	ast_debug(1, "%s: calling %s (call %" PRIu64 ", offer %s...)\n", ast_channel_name(chan),
		p->peer, id, codecs[0]);
	return 0;
}

/*! \brief The cause to send for Asterisk's: 0 is Asterisk's "none set"
 * (AST_CAUSE_NOTDEFINED), a normal end. Any other value goes to the
 * library as is: it maps one outside Q.850's 1..127 to 127 and counts it
 * (anytun_client_status.causes_out_of_range). */
static int lib_cause(int cause)
{
	return cause == AST_CAUSE_NOTDEFINED ? AST_CAUSE_NORMAL_CLEARING : cause;
}

/*! \brief Ends the network leg: refuses the call (reject) or hangs it up.
 * A libanytun older than the cause mapping (same ABI version) refuses a
 * cause outside 1..127 with ANYTUN_ERR_INVALID and would leave the leg
 * up: send 127 (interworking) then, as the newer library maps it. */
static int end_call(struct at_pvt *p, int reject, int cause)
{
	int rc = reject
		? anytun_client_reject(p->key.client->h, p->key.call, cause)
		: anytun_client_hangup(p->key.client->h, p->key.call, cause);

	if (rc == ANYTUN_ERR_INVALID && cause != AST_CAUSE_INTERWORKING) {
		rc = end_call(p, reject, AST_CAUSE_INTERWORKING);
	}
	return rc;
}

static int at_hangup(struct ast_channel *chan)
{
	struct at_pvt *p = ast_channel_tech_pvt(chan);
	int cause = lib_cause(ast_channel_hangupcause(chan));
	struct at_client *client;

	if (!p) {
		return 0;
	}
	ao2_lock(p);
	if (p->key.call && !p->ended) {
		int rc = end_call(p, !p->outgoing && !p->answered, cause);
		if (rc != ANYTUN_OK && rc != ANYTUN_ERR_UNKNOWN_CALL) {
			ast_log(LOG_NOTICE, "%s: ending call: %s\n", ast_channel_name(chan), anytun_strerror(rc));
		}
	}
	p->ended = 1;
	p->chan = NULL;
	ao2_unlock(p);
	ao2_unlink(at.pvts, p);
	client = p->key.client;
	ast_channel_tech_pvt_set(chan, NULL);
	ao2_ref(p, -1);
	ast_module_unref(AST_MODULE_SELF);
	/* Last: from here on unload may free the client and the module. */
	at_unbind_client(client);
	return 0;
}

static int at_answer(struct ast_channel *chan)
{
	struct at_pvt *p = ast_channel_tech_pvt(chan);
	int rc;

	if (!p || p->outgoing) {
		return -1;
	}
	rc = anytun_client_answer(p->key.client->h, p->key.call, at_format_codec(p->format));
	if (rc != ANYTUN_OK) {
		ast_log(LOG_WARNING, "%s: answer failed: %s\n", ast_channel_name(chan), anytun_strerror(rc));
		return -1;
	}
	ao2_lock(p);
	p->answered = 1;
	ao2_unlock(p);
	ast_setstate(chan, AST_STATE_UP);
	return 0;
}

/*! Every frame arrives through ast_queue_frame from the library's thread. */
static struct ast_frame *at_read(struct ast_channel *chan)
{
	return &ast_null_frame;
}

static int at_write(struct ast_channel *chan, struct ast_frame *f)
{
	struct at_pvt *p = ast_channel_tech_pvt(chan);
	uint8_t swapped[ANYTUN_MAX_VOICE_PAYLOAD];
	const uint8_t *data;
	size_t off, len;

	if (!p || f->frametype != AST_FRAME_VOICE || !p->answered || p->ended) {
		return 0;
	}
	if (ast_format_cmp(f->subclass.format, p->format) != AST_FORMAT_CMP_EQUAL) {
		ast_debug(1, "%s: dropping a %s frame on a %s call\n", ast_channel_name(chan),
			ast_format_get_name(f->subclass.format), ast_format_get_name(p->format));
		return 0;
	}
	data = f->data.ptr;
	for (off = 0; off < (size_t) f->datalen; off += len) {
		const uint8_t *chunk = data + off;
		int rc;

		len = MIN((size_t) f->datalen - off, (size_t) ANYTUN_MAX_VOICE_PAYLOAD);
		if (p->format == ast_format_slin) {
			len &= ~(size_t) 1;
			if (!len) {
				break;
			}
			at_swap16(swapped, chunk, len);
			chunk = swapped;
		}
		rc = anytun_client_send_voice(p->key.client->h, p->key.call, p->seq++, p->ts, chunk, len);
		p->ts += frame_ticks(p->format, len);
		if (rc != ANYTUN_OK) {
			p->send_errors++;
		}
	}
	return 0;
}

static int reject_incoming(struct ast_channel *chan, struct at_pvt *p, int cause)
{
	int rc = 0;

	ao2_lock(p);
	if (!p->outgoing && !p->answered && !p->ended) {
		rc = end_call(p, 1, cause);
		p->ended = 1;
	}
	ao2_unlock(p);
	return rc == ANYTUN_OK ? 0 : -1;
}

static int at_indicate(struct ast_channel *chan, int cond, const void *data, size_t len)
{
	struct at_pvt *p = ast_channel_tech_pvt(chan);

	if (!p) {
		return -1;
	}
	switch (cond) {
	case AST_CONTROL_BUSY:
		return reject_incoming(chan, p, AST_CAUSE_BUSY);
	case AST_CONTROL_CONGESTION:
		/* 34, as Asterisk's own channels signal congestion. */
		return reject_incoming(chan, p, AST_CAUSE_CONGESTION);
	case AST_CONTROL_RINGING:
	case AST_CONTROL_PROGRESS:
	case AST_CONTROL_PROCEEDING:
		/* An unanswered incoming call alerts the caller by itself. */
		return p->outgoing ? -1 : 0;
	case AST_CONTROL_SRCUPDATE:
	case AST_CONTROL_SRCCHANGE:
	case AST_CONTROL_CONNECTED_LINE:
	case AST_CONTROL_REDIRECTING:
	case AST_CONTROL_UPDATE_RTP_PEER:
	case AST_CONTROL_MASQUERADE_NOTIFY:
	case AST_CONTROL_STREAM_TOPOLOGY_REQUEST_CHANGE:
	case AST_CONTROL_STREAM_TOPOLOGY_CHANGED:
	case AST_CONTROL_STREAM_TOPOLOGY_SOURCE_CHANGED:
	case -1:
		return 0;
	case AST_CONTROL_PVT_CAUSE_CODE:
		/* -1, as chan_pjsip and Local: the core keeps the cause in this
		 * channel's hangupcause hash only when the driver declines it, so a
		 * Dial() from an ANYTUN channel shows the callee's cause in
		 * HANGUPCAUSE_KEYS(). */
		return -1;
	default:
		/* Not signalled on anytun: Asterisk plays the tone in band. */
		return -1;
	}
}

static int at_digit_begin(struct ast_channel *chan, char digit)
{
	/* Digits go out whole, at their end, with their duration. */
	return 0;
}

static int at_digit_end(struct ast_channel *chan, char digit, unsigned int duration)
{
	struct at_pvt *p = ast_channel_tech_pvt(chan);
	int rc;

	if (!p || !p->answered || p->ended) {
		return -1;
	}
	rc = anytun_client_send_dtmf(p->key.client->h, p->key.call, digit,
		duration ? MIN(duration, 65535u) : 100);
	if (rc != ANYTUN_OK) {
		ast_log(LOG_NOTICE, "%s: DTMF '%c' not sent: %s\n", ast_channel_name(chan), digit,
			anytun_strerror(rc));
		return -1;
	}
	return 0;
}

static int at_fixup(struct ast_channel *oldchan, struct ast_channel *newchan)
{
	struct at_pvt *p = ast_channel_tech_pvt(newchan);

	if (p) {
		ao2_lock(p);
		if (p->chan == oldchan) {
			p->chan = newchan;
		}
		ao2_unlock(p);
	}
	return 0;
}

/* ---- unload ---------------------------------------------------------------- */

static int softhangup_cb(void *obj, void *arg, int flags)
{
	struct ast_channel *chan = at_pvt_chan(obj);

	if (chan) {
		ast_softhangup(chan, AST_SOFTHANGUP_APPUNLOAD);
		ast_channel_unref(chan);
	}
	return 0;
}

/*! \brief Channels bound now (see at_globals.bound). */
static int bound_now(void)
{
	int n;

	ast_mutex_lock(&at.lock);
	n = at.bound;
	ast_mutex_unlock(&at.lock);
	return n;
}

/*!
 * \brief Hangs up every ANYTUN channel and waits (at most \a wait_ms) until
 * none is bound: a channel being requested or answered when stopping was
 * set is counted before it is in the container, so it is waited for too
 * (and hung up once it shows there). Returns the channels still bound.
 */
int at_hangup_all(int wait_ms)
{
	int waited;

	if (!at.pvts) {
		return bound_now();
	}
	/* Soft hangups outside the container's lock: the hangup path locks
	 * the channel first, then the container. */
	for (waited = 0; bound_now() && waited < wait_ms; waited += 20) {
		struct ao2_container *copy = ao2_container_clone(at.pvts, 0);

		if (copy) {
			ao2_callback(copy, OBJ_NODATA, softhangup_cb, NULL);
			ao2_ref(copy, -1);
		}
		usleep(20000);
	}
	return bound_now();
}
