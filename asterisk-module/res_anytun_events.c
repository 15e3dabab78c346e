/*
 * res_anytun_events.c - the library's callbacks, on its thread: incoming
 * calls, call progress, voice and DTMF, queued to the ANYTUN channels.
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 *
 * Nothing here holds a lock while it locks a channel (ast_queue_frame and
 * friends lock it): see the locking note in res_anytun.c.
 */

#include "asterisk.h"

#include <anytun.h>

#include "asterisk/astobj2.h"
#include "asterisk/causes.h"
#include "asterisk/channel.h"
#include "asterisk/format_cache.h"
#include "asterisk/format_cap.h"
#include "asterisk/frame.h"
#include "asterisk/logger.h"
#include "asterisk/pbx.h"
#include "asterisk/utils.h"

#include "res_anytun.h"

void at_on_incoming_call(void *user, uint64_t call, const char *from, const char *to,
	const char *const *codecs, size_t n_codecs)
{
	struct at_client *client = user;
	char context[AST_MAX_CONTEXT] = "";
	struct ast_format *format = NULL;
	struct ast_channel *chan;
	struct at_pvt *p;
	size_t i, j;
	int refuse = 0;

	/* The caller's first offered codec that this PBX accepts. */
	ast_mutex_lock(&at.lock);
	if (at.stopping || at.cur != client || !at.cfg) {
		refuse = AST_CAUSE_NORMAL_TEMPORARY_FAILURE;
	} else {
		ast_copy_string(context, at.cfg->context, sizeof(context));
		for (i = 0; !format && i < n_codecs; i++) {
			struct ast_format *f = at_codec_format(codecs[i]);

			for (j = 0; f && j < at.cfg->n_codecs; j++) {
				if (at.cfg->codecs[j] == f) {
					format = ao2_bump(f);
					break;
				}
			}
		}
		if (!format) {
			refuse = AST_CAUSE_INCOMPATIBLE_DESTINATION;
		} else {
			at_bind_client_locked(client);
		}
	}
	ast_mutex_unlock(&at.lock);
	if (!refuse && !ast_exists_extension(NULL, context, to, 1, from)) {
		ast_log(LOG_NOTICE, "anytun: call from %s to %s: no extension %s in context %s\n",
			from, to, to, context);
		refuse = AST_CAUSE_UNALLOCATED;
	}
	if (refuse) {
		if (format) {
			at_unbind_client(client);
		}
		ao2_cleanup(format);
		anytun_client_reject(client->h, call, refuse);
		return;
	}
	p = at_pvt_alloc(client, from, format, 0);
	ao2_ref(format, -1);
	if (p) {
		p->key.call = call;
	}
	chan = p ? at_new_channel(p, AST_STATE_RING, from, to, context, NULL, NULL) : NULL;
	if (!chan) {
		at_unbind_client(client);
		ao2_cleanup(p);
		anytun_client_reject(client->h, call, AST_CAUSE_SWITCH_CONGESTION);
		return;
	}
	ao2_link(at.pvts, p);
	ao2_ref(p, -1);
	ast_channel_unlock(chan);
	if (ast_pbx_start(chan)) {
		ast_log(LOG_WARNING, "anytun: could not start the dialplan for %s\n", ast_channel_name(chan));
		ast_channel_hangupcause_set(chan, AST_CAUSE_SWITCH_CONGESTION);
		ast_hangup(chan);
	}
}

/*! \brief The codec chosen by the callee differs from the one we set: the
 * channel's native format follows it (the core rebuilds its translators). */
static void change_format(struct ast_channel *chan, struct at_pvt *p, struct ast_format *format)
{
	struct ast_format_cap *native = ast_format_cap_alloc(AST_FORMAT_CAP_FLAG_DEFAULT);

	if (!native || ast_format_cap_append(native, format, 0)) {
		ao2_cleanup(native);
		return;
	}
	ao2_lock(p);
	ao2_replace(p->format, format);
	ao2_unlock(p);
	ast_channel_lock(chan);
	ast_channel_nativeformats_set(chan, native);
	ast_channel_set_rawwriteformat(chan, format);
	ast_channel_set_rawreadformat(chan, format);
	ast_set_write_format(chan, ast_channel_writeformat(chan));
	ast_set_read_format(chan, ast_channel_readformat(chan));
	ast_channel_unlock(chan);
	ao2_ref(native, -1);
}

/*! \brief Causes that tell a caller the network could not carry the call. */
static int congestion_cause(int cause)
{
	switch (cause) {
	case AST_CAUSE_SWITCH_CONGESTION:
	case AST_CAUSE_NETWORK_OUT_OF_ORDER:
	case AST_CAUSE_NORMAL_TEMPORARY_FAILURE:
	case AST_CAUSE_REQUESTED_CHAN_UNAVAIL:
	case AST_CAUSE_NORMAL_CIRCUIT_CONGESTION:
	case AST_CAUSE_INCOMPATIBLE_DESTINATION:
	case AST_CAUSE_RECOVERY_ON_TIMER_EXPIRE:
		return 1;
	default:
		return 0;
	}
}

/*!
 * \brief The far end's cause, as Asterisk's own drivers report theirs
 * (chan_pjsip's "SIP 486 Busy Here"): "ANYTUN 17 User busy", the Q.850
 * cause the network carried and Asterisk's text for it. Set on the channel
 * (HANGUPCAUSE(chan,tech) and HANGUPCAUSE(chan,ast) read it) and queued,
 * so Dial copies it to the calling channel (HANGUPCAUSE_KEYS()).
 */
static void queue_cause_code(struct ast_channel *chan, int cause)
{
	struct ast_control_pvt_cause_code *cc;
	char code[128];
	int data_size;

	snprintf(code, sizeof(code), "ANYTUN %d %s", cause, ast_cause2str(cause));
	/* sizeof(*cc) holds code[1], room for the terminating NUL. */
	data_size = sizeof(*cc) + strlen(code);
	cc = ast_alloca(data_size);
	memset(cc, 0, data_size);
	cc->ast_cause = cause;
	strcpy(cc->code, code); /* Safe: sized above. */
	ast_channel_lock(chan);
	ast_copy_string(cc->chan_name, ast_channel_name(chan), AST_CHANNEL_NAME);
	ast_channel_hangupcause_hash_set(chan, cc, data_size);
	ast_channel_unlock(chan);
	ast_queue_control_data(chan, AST_CONTROL_PVT_CAUSE_CODE, cc, data_size);
}

void at_on_call_state(void *user, uint64_t call, int event, int cause, const char *codec)
{
	struct at_pvt *p = at_pvt_find(user, call);
	struct ast_channel *chan;

	if (!p) {
		return;
	}
	chan = at_pvt_chan(p);
	if (!chan) {
		ao2_ref(p, -1);
		return;
	}
	switch (event) {
	case ANYTUN_CALL_RINGING:
		ast_queue_control(chan, AST_CONTROL_RINGING);
		break;
	case ANYTUN_CALL_ANSWERED: {
		struct ast_format *f = at_codec_format(codec);

		if (f && f != p->format) {
			change_format(chan, p, f);
		}
		ao2_lock(p);
		p->answered = 1;
		ao2_unlock(p);
		ast_queue_control(chan, AST_CONTROL_ANSWER);
		break;
	}
	case ANYTUN_CALL_ENDED:
	case ANYTUN_CALL_REFUSED:
		ao2_lock(p);
		p->ended = 1;
		ao2_unlock(p);
		/* The library gives 1..127 only; 0 would be a broken promise. */
		cause = cause > 0 ? cause : AST_CAUSE_NORMAL_CLEARING;
		queue_cause_code(chan, cause);
		if (p->outgoing && !p->answered) {
			/* Dial() copies the cause when it reads the control that
			 * follows: set it first, or the caller sees HANGUPCAUSE 0. */
			ast_channel_lock(chan);
			ast_channel_hangupcause_set(chan, cause);
			ast_channel_unlock(chan);
			if (cause == AST_CAUSE_BUSY) {
				ast_queue_control(chan, AST_CONTROL_BUSY);
			} else if (congestion_cause(cause)) {
				ast_queue_control(chan, AST_CONTROL_CONGESTION);
			}
		}
		ast_queue_hangup_with_cause(chan, cause);
		break;
	}
	ast_channel_unref(chan);
	ao2_ref(p, -1);
}

void at_on_voice(void *user, uint64_t call, uint32_t seq, uint32_t timestamp,
	const uint8_t *payload, size_t len)
{
	struct at_pvt *p = at_pvt_find(user, call);
	uint8_t swapped[ANYTUN_MAX_VOICE_PAYLOAD];
	struct ast_channel *chan;
	struct ast_frame f = { .frametype = AST_FRAME_VOICE, .src = "anytun" };

	if (!p) {
		return;
	}
	chan = at_pvt_chan(p);
	if (chan && len <= sizeof(swapped)) {
		f.subclass.format = p->format;
		f.datalen = len;
		f.samples = at_frame_samples(p->format, len);
		f.seqno = seq;
		if (p->format == ast_format_slin) {
			at_swap16(swapped, payload, len);
			f.data.ptr = swapped;
		} else {
			f.data.ptr = (void *) payload;
		}
		ast_queue_frame(chan, &f);
		ast_atomic_fetchadd_int(&p->frames_in, 1);
	}
	ast_channel_cleanup(chan);
	ao2_ref(p, -1);
}

void at_on_dtmf(void *user, uint64_t call, char digit, uint16_t duration_ms)
{
	struct at_pvt *p = at_pvt_find(user, call);
	struct ast_channel *chan;
	struct ast_frame f = { .frametype = AST_FRAME_DTMF_END, .src = "anytun" };

	if (!p) {
		return;
	}
	chan = at_pvt_chan(p);
	if (chan) {
		f.subclass.integer = digit;
		f.len = duration_ms;
		ast_queue_frame(chan, &f);
		ast_channel_unref(chan);
	}
	ao2_ref(p, -1);
}

