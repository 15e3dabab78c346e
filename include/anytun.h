/*
 * anytun.h - the C ABI of libanytun: an anytun client for embedded phones
 * and for Asterisk's res_anytun.so.
 *
 * Copyright (C) anytun authors. GPL-2.0-or-later.
 *
 * This header is the reference for the C ABI. The Rust exports are checked
 * against it at build time (build.rs runs bindgen on this file), so a
 * signature or a struct layout cannot drift from what is written here.
 *
 * ---------------------------------------------------------------------------
 * Conventions (apply to every function unless its comment says otherwise)
 * ---------------------------------------------------------------------------
 * - Every function that can fail returns an int: ANYTUN_OK (0) or a negative
 *   anytun_error code. anytun_strerror() turns a code into text, and
 *   anytun_last_error() gives the detail of the calling thread's last error
 *   ("name has ' ' at position 3 ...").
 * - Every pointer is checked: a NULL where one is required is
 *   ANYTUN_ERR_NULL, never a crash. Nothing panics or aborts across this ABI:
 *   an internal failure is ANYTUN_ERR_INTERNAL.
 * - Strings are NUL-terminated UTF-8 (names and codec names are ASCII).
 *   Strings given to a function are copied before it returns. Strings given
 *   to a callback are valid only during that callback.
 * - Output buffers are supplied by the caller with their capacity. A buffer
 *   too small is ANYTUN_ERR_BUFFER_TOO_SMALL, with the size needed written
 *   to *needed (when not NULL); nothing is ever silently truncated. A NULL
 *   buffer with capacity 0 asks for the size (ANYTUN_ERR_BUFFER_TOO_SMALL
 *   and *needed); a NULL buffer with a capacity is ANYTUN_ERR_NULL.
 * - Structs passed in or out start with a struct_size field: set it to
 *   sizeof(the struct) (the *_init functions do). Structs carry reserved
 *   room, so later versions add fields without changing their size; reserved
 *   fields must be zero.
 * - Handles are opaque. All functions on one client handle may be called
 *   from any thread, also concurrently, except anytun_client_free, which
 *   must be the last call on a handle.
 * - Names reserved for later versions: every identifier starting with
 *   anytun_proxy_ / ANYTUN_PROXY_ (a proxy node hosted through this same
 *   library, e.g. res_anytun's proxy mode), and anything else starting with
 *   anytun_ / ANYTUN_.
 *
 * ---------------------------------------------------------------------------
 * Call flow (client)
 * ---------------------------------------------------------------------------
 *   anytun_set_logger(my_log, ctx, ANYTUN_LOG_INFO);      optional, global
 *   anytun_client_config cfg; anytun_client_config_init(&cfg);
 *   cfg.private_key = "private:..."; cfg.network_key = "...";
 *   cfg.proxy = "198.51.100.7:7475";
 *   anytun_client_callbacks cb; anytun_client_callbacks_init(&cb);
 *   cb.user = ctx; cb.on_incoming_call = ...; cb.on_voice = ...; ...
 *   anytun_client *c; anytun_client_new(&cfg, &cb, &c);
 *   anytun_client_start(c);            binds a socket, starts one thread
 *   anytun_client_register(c, "alice", 300);
 *   -> on_session(CONNECTED), on_registration("alice", 300)
 *   anytun_client_call(c, "bob", NULL, codecs, 2, &call);
 *   -> on_call_state(call, RINGING), on_call_state(call, ANSWERED, "ulaw")
 *   anytun_client_send_voice(c, call, seq, ts, frame, 160);  every 20 ms
 *   -> on_voice(call, ...), on_dtmf(call, '5', 100)
 *   anytun_client_hangup(c, call, ANYTUN_CAUSE_NORMAL);
 *   -> the other side: on_call_state(call, ENDED, cause 16)
 *   anytun_client_stop(c);   hangs up, unregisters, joins its thread
 *   anytun_client_free(c);
 *
 * ---------------------------------------------------------------------------
 * Threads and callbacks
 * ---------------------------------------------------------------------------
 * A started client runs ONE thread of its own, which receives from the
 * proxy, runs the timers and calls the client's callbacks, one at a time
 * and in order (events before the voice frame that follows them). No
 * library lock is held while a callback runs: a callback may call any
 * anytun_client_* function on any handle (hang up, answer, send voice or
 * DTMF, query status), except anytun_client_stop and anytun_client_free on
 * its own handle, which return ANYTUN_ERR_IN_CALLBACK there (they would
 * join the thread the callback runs on). Callbacks should return quickly:
 * voice of every call of the client waits while one runs. An event for a
 * call may already be on its way when another thread ends that call: a host
 * ignores call ids it no longer knows.
 * anytun_client_stop returns only after the thread has ended: after it, no
 * callback of that client runs any more, so the host may unload its code.
 *
 * Audio: the library carries encoded frames and never touches samples.
 * Every codec is 8000 Hz mono in 20 ms frames except g722 (16 kHz audio,
 * 8000 Hz RTP clock): ulaw and alaw 160 bytes, slin 320 bytes (16-bit
 * signed PCM, big-endian), g722 160 bytes. Other codec names may be offered
 * and are carried untouched.
 */
#ifndef ANYTUN_H
#define ANYTUN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes; anytun_abi_version() returns the
 *  library's. A library with the same major ABI version accepts this
 *  header's structs; later minor additions only use reserved room. */
#define ANYTUN_ABI_VERSION 1

/** Longest name (alice, bob.office, +4930123), in bytes, without the NUL. */
#define ANYTUN_MAX_NAME 64
/** Longest codec name, in bytes, without the NUL. */
#define ANYTUN_MAX_CODEC_NAME 32
/** Most codecs in one offer. */
#define ANYTUN_MAX_CODECS 16
/** Largest voice frame payload, in bytes (40 ms of slin). */
#define ANYTUN_MAX_VOICE_PAYLOAD 640
/** anytun_client_config.handshake_attempts: keep trying to connect, every
 *  4 s, until stopped. */
#define ANYTUN_RETRY_FOREVER 0xFFFFFFFFu
/** Buffer size that holds any key's text form with its NUL
 *  ("private:" + 44 base64 characters + NUL). */
#define ANYTUN_KEY_TEXT_SIZE 64

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

/** Result codes. The values are stable: new codes are only ever added. */
typedef enum anytun_error {
    /** Success. */
    ANYTUN_OK = 0,
    /** A required pointer was NULL. */
    ANYTUN_ERR_NULL = -1,
    /** An argument is invalid: a name, a key, a codec, a digit, an address,
     *  a cause, a config value (anytun_last_error() says which and why). */
    ANYTUN_ERR_INVALID = -2,
    /** An output buffer is too small; *needed holds the size required. */
    ANYTUN_ERR_BUFFER_TOO_SMALL = -3,
    /** struct_size of a struct passed in is smaller than this library's
     *  first version of it, or a reserved field is not zero. */
    ANYTUN_ERR_STRUCT_SIZE = -4,
    /** The handle is not started yet (anytun_client_start). */
    ANYTUN_ERR_NOT_STARTED = -5,
    /** The handle was stopped; only anytun_client_get_status,
     *  anytun_client_calls and anytun_client_free remain useful. */
    ANYTUN_ERR_STOPPED = -6,
    /** The handle is already started. */
    ANYTUN_ERR_ALREADY_STARTED = -7,
    /** No session with the proxy right now (connecting or reconnecting). */
    ANYTUN_ERR_NOT_CONNECTED = -8,
    /** No call with that id (never existed, or already ended). */
    ANYTUN_ERR_UNKNOWN_CALL = -9,
    /** The call is not in a state that allows this (e.g. voice before the
     *  answer, answering an outgoing call). */
    ANYTUN_ERR_CALL_STATE = -10,
    /** Answering with a codec the caller did not offer. */
    ANYTUN_ERR_CODEC_NOT_OFFERED = -11,
    /** The proxy has not acknowledged the control messages already sent;
     *  try again shortly. */
    ANYTUN_ERR_BACKLOG = -12,
    /** A message or frame too large for one datagram. */
    ANYTUN_ERR_TOO_LARGE = -13,
    /** A system call failed: binding the socket, resolving the proxy's
     *  host name, starting the thread. */
    ANYTUN_ERR_IO = -14,
    /** Called from inside one of this handle's callbacks where that would
     *  deadlock (anytun_client_stop, anytun_client_free, or
     *  anytun_set_logger from inside the log callback). */
    ANYTUN_ERR_IN_CALLBACK = -15,
    /** Not implemented by this build. */
    ANYTUN_ERR_UNSUPPORTED = -16,
    /** An internal error (a bug); it was contained and the library
     *  remains usable. */
    ANYTUN_ERR_INTERNAL = -17
} anytun_error;

/** A static, NUL-terminated English text for an anytun_error code. Unknown
 *  codes give "unknown anytun error code". Never NULL; never free it. */
const char *anytun_strerror(int code);

/** Copies the detail of the calling thread's most recent error (set by the
 *  last failing call on this thread, e.g. "name is 70 bytes long, at most 64
 *  allowed") into buf, with its NUL. An empty string if there was none.
 *  Returns ANYTUN_OK, ANYTUN_ERR_NULL (buf NULL while len > 0) or
 *  ANYTUN_ERR_BUFFER_TOO_SMALL (*needed = bytes needed with the NUL).
 *  Calling it does not change the stored detail. */
int anytun_last_error(char *buf, size_t len, size_t *needed);

/* ------------------------------------------------------------------------
 * Version
 * ------------------------------------------------------------------------ */

/** The library's version and build, e.g. "anytun 0.1.0 (4f997b8c1a2b)".
 *  Static; never NULL; never free it. */
const char *anytun_version(void);

/** The library's ABI version (ANYTUN_ABI_VERSION of the header it was built
 *  with). */
uint32_t anytun_abi_version(void);

/* ------------------------------------------------------------------------
 * Logging (global: one logger per process)
 * ------------------------------------------------------------------------ */

/** Log levels, most severe first (a message at level L is passed when
 *  L <= the max_level given to anytun_set_logger). */
typedef enum anytun_log_level {
    /** As max_level: nothing. */
    ANYTUN_LOG_OFF = 0,
    /** Something failed (Asterisk: LOG_ERROR). */
    ANYTUN_LOG_ERROR = 1,
    /** An operator should look (a refused key, a clock off). */
    ANYTUN_LOG_WARN = 2,
    /** What happened (connected, a call refused as busy). */
    ANYTUN_LOG_INFO = 3,
    /** Detail for debugging. */
    ANYTUN_LOG_DEBUG = 4,
    /** Per-packet detail. */
    ANYTUN_LOG_TRACE = 5
} anytun_log_level;

/** Receives one log line. level is an anytun_log_level; target names the
 *  library module ("anytun::client"); message has no trailing newline.
 *  Both strings are valid during the call only. May be called from any
 *  thread, also concurrently from several, and never while the library
 *  holds a lock of a client: the callback may call any anytun function
 *  (e.g. anytun_client_get_status) except anytun_set_logger. Logging from
 *  inside the log callback (through another anytun call) is dropped, not
 *  recursed. */
typedef void (*anytun_log_fn)(void *user, int level, const char *target,
                              const char *message);

/** Installs the process-wide logger (replacing any before), or removes it
 *  when fn is NULL. max_level filters (ANYTUN_LOG_OFF .. ANYTUN_LOG_TRACE;
 *  anything else is ANYTUN_ERR_INVALID). Returns only when no call of the
 *  previous logger is still running, so a module may unload its code right
 *  after removing its logger; may be installed and removed any number of
 *  times (module unload and load again). Returns ANYTUN_ERR_IN_CALLBACK
 *  when called from inside the log callback. */
int anytun_set_logger(anytun_log_fn fn, void *user, int max_level);

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------ */

/** Generates a new client key: writes its private text form
 *  ("private:<base64>", for the device's key file; keep it secret) into
 *  private_out and its public base64 form (for `anytun user add NAME KEY`)
 *  into public_out. Each buffer needs ANYTUN_KEY_TEXT_SIZE bytes at most;
 *  *needed (when not NULL) gets the larger need on ANYTUN_ERR_BUFFER_TOO_SMALL,
 *  in which case nothing is written. */
int anytun_keygen(char *private_out, size_t private_len, char *public_out,
                  size_t public_len, size_t *needed);

/** Writes the public key (base64) of a private key given in text form
 *  ("private:<base64>" or bare base64) into out. ANYTUN_ERR_INVALID if the
 *  text is not a key. */
int anytun_public_key(const char *private_key, char *out, size_t len,
                      size_t *needed);

/* ------------------------------------------------------------------------
 * Q.850 causes, as Asterisk's HANGUPCAUSE uses them
 * ------------------------------------------------------------------------ */

/** Causes the library and the network use. Any Q.850 value 1..127 may be
 *  passed and is carried unchanged; these are the ones with a meaning here.
 *  Causes received (on_call_state) are always 1..127. A value outside
 *  1..127, passed in by the host or sent by a peer, is taken as a defined
 *  cause: 0 (no cause given) as ANYTUN_CAUSE_NORMAL (16), anything else as
 *  ANYTUN_CAUSE_INTERWORKING (127); it is counted in
 *  anytun_client_status.causes_out_of_range and logged. */
typedef enum anytun_cause {
    /** The name is not known to the network (unallocated number). */
    ANYTUN_CAUSE_NOT_FOUND = 1,
    /** Normal call clearing. */
    ANYTUN_CAUSE_NORMAL = 16,
    /** The callee is busy. */
    ANYTUN_CAUSE_BUSY = 17,
    /** No device answered in time. */
    ANYTUN_CAUSE_NO_ANSWER = 19,
    /** The name exists but no device is registered (subscriber absent). */
    ANYTUN_CAUSE_UNAVAILABLE = 20,
    /** The callee declined (call rejected). */
    ANYTUN_CAUSE_REJECTED = 21,
    /** Another device of the callee answered (non-selected user clearing). */
    ANYTUN_CAUSE_ANSWERED_ELSEWHERE = 26,
    /** The proxy's calls table is full (no circuit/channel available). */
    ANYTUN_CAUSE_NO_CIRCUIT = 34,
    /** A session or proxy failed, or the other side went silent
     *  (network out of order). */
    ANYTUN_CAUSE_NETWORK_FAILURE = 38,
    /** Temporary failure (e.g. the end-to-end check of an answer failed). */
    ANYTUN_CAUSE_TEMPORARY_FAILURE = 41,
    /** The caller holds its most calls already (resource unavailable). */
    ANYTUN_CAUSE_RESOURCE_UNAVAILABLE = 47,
    /** The caller may not call as the name it gave (not authorised). */
    ANYTUN_CAUSE_NOT_AUTHORIZED = 57,
    /** No codec in common (incompatible destination). */
    ANYTUN_CAUSE_INCOMPATIBLE_CODECS = 88,
    /** A timer expired: a control message was never acknowledged
     *  (recovery on timer expiry). */
    ANYTUN_CAUSE_TIMEOUT = 102,
    /** A value outside 1..127 was given (interworking, unspecified). */
    ANYTUN_CAUSE_INTERWORKING = 127
} anytun_cause;

/* ------------------------------------------------------------------------
 * Client configuration
 * ------------------------------------------------------------------------ */

/** How a client behaves. Initialise with anytun_client_config_init, then set
 *  the three required strings. A zero numeric field means "the default".
 *  The strings are copied by anytun_client_new. */
typedef struct anytun_client_config {
    /** sizeof(anytun_client_config); set by anytun_client_config_init. */
    uint32_t struct_size;
    /** Zero (reserved for flags). */
    uint32_t flags;
    /** Required: this device's private key, text form ("private:<base64>",
     *  or bare base64), e.g. the content of a key file from
     *  anytun_keygen or `anytun keygen`. Never logged. */
    const char *private_key;
    /** Required: the network's public key, base64 (anytund prints it). */
    const char *network_key;
    /** Required: the proxy (anycast) address, "IP:PORT", "[IPv6]:PORT" or
     *  "HOST:PORT" (resolved once, by anytun_client_start). */
    const char *proxy;
    /** Local address to bind, "IP:PORT" (port 0: any); NULL: any address of
     *  the proxy's family, any port. */
    const char *bind;
    /** Keepalive interval towards the proxy, seconds; 0: what the proxy
     *  suggests. */
    uint32_t keepalive_s;
    /** An answered call that receives nothing from the other side for this
     *  long ends with cause 38, milliseconds; 0: 10000. */
    uint32_t media_timeout_ms;
    /** Most calls at once; more incoming calls are refused as busy (17);
     *  0: 16. */
    uint32_t max_calls;
    /** Handshake attempts before the first connection gives up (on_session
     *  DISCONNECTED); 0: 4 (1, 2, 4 s apart, then every 4 s);
     *  ANYTUN_RETRY_FOREVER: never give up (a PBX that starts while the
     *  network is unreachable). After a lost session the client retries
     *  without limit whatever this says. */
    uint32_t handshake_attempts;
    /** How long anytun_client_stop waits for the proxy to acknowledge the
     *  hangups and unregistrations, milliseconds; 0: 2000. */
    uint32_t stop_timeout_ms;
    /** Zero (reserved). */
    uint32_t reserved_u32[7];
    /** NULL (reserved). */
    const void *reserved_ptr[8];
} anytun_client_config;

/** Zeroes *cfg and sets struct_size. ANYTUN_ERR_NULL if cfg is NULL. */
int anytun_client_config_init(anytun_client_config *cfg);

/* ------------------------------------------------------------------------
 * Client callbacks
 * ------------------------------------------------------------------------ */

/** The client's session with the proxy (on_session, anytun_client_get_status). */
typedef enum anytun_session_state {
    /** Created, not started. */
    ANYTUN_SESSION_IDLE = 0,
    /** Handshaking with the proxy. */
    ANYTUN_SESSION_CONNECTING = 1,
    /** The session is up; registrations and calls work. */
    ANYTUN_SESSION_CONNECTED = 2,
    /** The session was lost (proxy restarted, path broke); the calls ended
     *  (cause 38) and the client is connecting again by itself; its names
     *  are registered again once connected. */
    ANYTUN_SESSION_RECONNECTING = 3,
    /** The first connection failed or was refused (error says why: e.g. the
     *  key is not a subscriber, or no answer); the client is idle. Call
     *  anytun_client_stop, or fix and start a new handle. */
    ANYTUN_SESSION_DISCONNECTED = 4,
    /** anytun_client_stop ran. */
    ANYTUN_SESSION_STOPPED = 5
} anytun_session_state;

/** What happened to a call (on_call_state). */
typedef enum anytun_call_event {
    /** Outgoing: the callee's device is ringing. */
    ANYTUN_CALL_RINGING = 1,
    /** Outgoing: answered; codec names the codec the callee chose. */
    ANYTUN_CALL_ANSWERED = 2,
    /** The call is over; cause says why (Q.850). Last event of a call. */
    ANYTUN_CALL_ENDED = 3,
    /** Incoming: refused by the library itself, without on_incoming_call
     *  (max_calls reached, or stopping); cause is what the caller got. */
    ANYTUN_CALL_REFUSED = 4
} anytun_call_event;

/** Host callbacks. Every member may be NULL (that event is dropped).
 *  Initialise with anytun_client_callbacks_init. All run on the client's
 *  thread, one at a time, never under a library lock (see "Threads and
 *  callbacks" above). */
typedef struct anytun_client_callbacks {
    /** sizeof(anytun_client_callbacks); set by anytun_client_callbacks_init. */
    uint32_t struct_size;
    /** Zero (reserved). */
    uint32_t reserved0;
    /** Passed unchanged as the first argument of every callback. */
    void *user;

    /** The session changed state (an anytun_session_state). error is
     *  ANYTUN_OK, or for DISCONNECTED and RECONNECTING an anytun_error
     *  (ANYTUN_ERR_NOT_CONNECTED); detail is text an operator can act on
     *  ("the proxy refused this client's key ...: it is not in the subscriber
     *  store") or "" for CONNECTED. */
    void (*on_session)(void *user, int state, int error, const char *detail);

    /** A registration changed: name is registered for expires_s seconds
     *  (refreshed by the library before it lapses), or removed (0), or
     *  refused by the proxy (ok == 0, expires_s == 0). */
    void (*on_registration)(void *user, const char *name, int ok,
                            uint32_t expires_s);

    /** Someone calls. from is the caller's name (checked by the proxy), to
     *  the name that was called, codecs the caller's offer in order of its
     *  preference (n_codecs >= 1). The call alerts (the caller hears ringing)
     *  until the host calls anytun_client_answer or anytun_client_reject
     *  (from here or later, from any thread) or the caller gives up
     *  (on_call_state ENDED). */
    void (*on_incoming_call)(void *user, uint64_t call, const char *from,
                             const char *to, const char *const *codecs,
                             size_t n_codecs);

    /** A call changed state: event is an anytun_call_event, cause the Q.850
     *  cause for ENDED and REFUSED (else 0), codec the chosen codec for
     *  ANSWERED (else ""). */
    void (*on_call_state)(void *user, uint64_t call, int event, int cause,
                          const char *codec);

    /** A voice frame from the other side, decrypted: payload in the call's
     *  codec, len bytes (1..ANYTUN_MAX_VOICE_PAYLOAD), with the sender's
     *  sequence number and RTP-style timestamp (8000 Hz clock). Frames come
     *  as received: lost ones are missing, reordered ones are not sorted. */
    void (*on_voice)(void *user, uint64_t call, uint32_t seq,
                     uint32_t timestamp, const uint8_t *payload, size_t len);

    /** The other side pressed a key: digit is one of 0-9 * # A-D, in the
     *  order the other side sent them. */
    void (*on_dtmf)(void *user, uint64_t call, char digit,
                    uint16_t duration_ms);

    /** NULL (reserved for more callbacks). */
    void (*reserved_fn[8])(void);
} anytun_client_callbacks;

/** Zeroes *cb and sets struct_size. ANYTUN_ERR_NULL if cb is NULL. */
int anytun_client_callbacks_init(anytun_client_callbacks *cb);

/* ------------------------------------------------------------------------
 * Client lifecycle
 * ------------------------------------------------------------------------ */

/** An anytun client: one session with the proxy, its names and calls. */
typedef struct anytun_client anytun_client;

/** Creates a client from cfg and cb (both copied; cb->user is kept as
 *  given). Checks every setting (keys, proxy address syntax, values) and
 *  starts nothing. On success *out holds the handle (free it with
 *  anytun_client_free); on failure *out is set to NULL. */
int anytun_client_new(const anytun_client_config *cfg,
                      const anytun_client_callbacks *cb, anytun_client **out);

/** Before start, only anytun_client_register (kept until connected),
 *  anytun_client_get_status, anytun_client_calls, anytun_client_public_key,
 *  anytun_client_stop and anytun_client_free work; the other functions
 *  return ANYTUN_ERR_NOT_STARTED. After stop, they return ANYTUN_ERR_STOPPED.
 *
 *  Resolves the proxy address, binds the UDP socket, starts the client's
 *  thread and the handshake (on_session CONNECTING, then CONNECTED or
 *  DISCONNECTED). ANYTUN_ERR_ALREADY_STARTED if started, ANYTUN_ERR_STOPPED
 *  if stopped (a stopped handle does not start again), ANYTUN_ERR_IO if the
 *  address does not resolve or the socket cannot be bound. */
int anytun_client_start(anytun_client *client);

/** Stops the client: ends every call (cause 16; an unanswered incoming one
 *  is refused with 20) and removes every registration, waits until the proxy
 *  has acknowledged that (at most stop_timeout_ms), then ends and joins the
 *  client's thread. Callbacks run until it returns (on_call_state ENDED for
 *  each call, on_session STOPPED last) and never after. Idempotent: stopping
 *  a stopped or never started handle is ANYTUN_OK. ANYTUN_ERR_IN_CALLBACK
 *  from this handle's own callbacks. */
int anytun_client_stop(anytun_client *client);

/** Stops the client (as anytun_client_stop) and frees the handle. NULL is
 *  ANYTUN_OK (nothing to do). ANYTUN_ERR_IN_CALLBACK from this handle's own
 *  callbacks (nothing is freed then). The handle must not be used after. */
int anytun_client_free(anytun_client *client);

/* ------------------------------------------------------------------------
 * Names and calls
 * ------------------------------------------------------------------------ */

/** Registers name (1..64 of A-Z a-z 0-9 . _ + -, not starting with . or -)
 *  for expires_s seconds (the proxy may grant less), kept refreshed; 0
 *  removes it. Before the session is up the request is kept and sent when
 *  connected. Result: on_registration. */
int anytun_client_register(anytun_client *client, const char *name,
                           uint32_t expires_s);

/** Calls name to. from picks which of this client's names to call as (NULL:
 *  the proxy picks the first). codecs[0..n_codecs) is the offer in order of
 *  preference (1..ANYTUN_MAX_CODECS names, e.g. "ulaw", "alaw", "slin",
 *  "g722"). On success *call holds the new call's id; its progress comes as
 *  on_call_state. ANYTUN_ERR_NOT_CONNECTED without a session. */
int anytun_client_call(anytun_client *client, const char *to,
                       const char *from, const char *const *codecs,
                       size_t n_codecs, uint64_t *call);

/** Answers an incoming call with codec, one the caller offered
 *  (case-insensitive). Voice may be sent at once after ANYTUN_OK. */
int anytun_client_answer(anytun_client *client, uint64_t call,
                         const char *codec);

/** Refuses an incoming, unanswered call with cause (1..127; e.g.
 *  ANYTUN_CAUSE_BUSY, ANYTUN_CAUSE_REJECTED; another value is taken as 16
 *  or 127, see anytun_cause). No on_call_state follows. */
int anytun_client_reject(anytun_client *client, uint64_t call, int cause);

/** Ends a call in any state (cancels an unanswered outgoing one) with cause
 *  (1..127, usually ANYTUN_CAUSE_NORMAL; another value is taken as 16 or
 *  127, see anytun_cause). No on_call_state follows: the
 *  call is gone when this returns ANYTUN_OK. */
int anytun_client_hangup(anytun_client *client, uint64_t call, int cause);

/** Sends one voice frame on an answered call: payload (1..
 *  ANYTUN_MAX_VOICE_PAYLOAD bytes) in the call's codec, the host's frame
 *  sequence number and timestamp (8000 Hz clock). Sent at once from the
 *  calling thread; allocates nothing. */
int anytun_client_send_voice(anytun_client *client, uint64_t call,
                             uint32_t seq, uint32_t timestamp,
                             const uint8_t *payload, size_t len);

/** Sends a DTMF digit (0-9 * # A-D) lasting duration_ms on an answered
 *  call; delivered reliably and in order. */
int anytun_client_send_dtmf(anytun_client *client, uint64_t call, char digit,
                            uint16_t duration_ms);

/* ------------------------------------------------------------------------
 * Status
 * ------------------------------------------------------------------------ */

/** A snapshot of a client (anytun_client_get_status). */
typedef struct anytun_client_status {
    /** In: sizeof(anytun_client_status). */
    uint32_t struct_size;
    /** An anytun_session_state. */
    int32_t state;
    /** The session id, 0 when not connected. */
    uint64_t session_id;
    /** The proxy holding the session (1..65534), 0 when not connected. */
    uint32_t proxy_id;
    /** Calls in any state (dialing, alerting, answered). */
    uint32_t calls;
    /** Names registered (granted by the proxy) right now. */
    uint32_t names;
    /** The local UDP port, 0 when not started. */
    uint16_t local_port;
    /** Zero (reserved). */
    uint16_t reserved0;
    /** Datagrams dropped (malformed, forged, replayed, from a wrong
     *  source, ...). */
    uint64_t dropped;
    /** Voice frames sent and received, over the handle's life. */
    uint64_t frames_sent;
    /** See frames_sent. */
    uint64_t frames_received;
    /** This client's address as the proxy sees it (its NAT's outside), e.g.
     *  "203.0.113.5:40312"; "" when not connected. */
    char observed[64];
    /** Causes outside Q.850's 1..127, passed to anytun_client_reject or
     *  anytun_client_hangup or received from the proxy, over the handle's
     *  life: each was taken as 16 (for 0) or 127 (see anytun_cause). */
    uint64_t causes_out_of_range;
    /** Zero (reserved). */
    uint64_t reserved[7];
} anytun_client_status;

/** Fills *status (set status->struct_size first). Works in every state,
 *  also after stop. */
int anytun_client_get_status(anytun_client *client,
                             anytun_client_status *status);

/** Which way a call goes (anytun_call_info.direction). */
typedef enum anytun_call_direction {
    /** This client called. */
    ANYTUN_CALL_OUTGOING = 1,
    /** This client was called. */
    ANYTUN_CALL_INCOMING = 2
} anytun_call_direction;

/** Where a call is (anytun_call_info.state). */
typedef enum anytun_call_phase {
    /** Outgoing, not answered yet. */
    ANYTUN_PHASE_DIALING = 1,
    /** Incoming, not answered yet. */
    ANYTUN_PHASE_ALERTING = 2,
    /** Answered: voice flows. */
    ANYTUN_PHASE_ACTIVE = 3
} anytun_call_phase;

/** One call, for listings (anytun_client_calls). */
typedef struct anytun_call_info {
    /** The call's id. */
    uint64_t call;
    /** An anytun_call_direction. */
    int32_t direction;
    /** An anytun_call_phase. */
    int32_t state;
    /** The other party's name, NUL-terminated. */
    char peer[ANYTUN_MAX_NAME + 1];
    /** The codec once answered, else "". NUL-terminated. */
    char codec[ANYTUN_MAX_CODEC_NAME + 1];
    /** Zero (reserved). */
    uint8_t reserved[30];
} anytun_call_info;

/** Lists the client's calls into out[0..cap). *count gets the number of
 *  calls; if cap is smaller, ANYTUN_ERR_BUFFER_TOO_SMALL and nothing useful
 *  is in out (ask again with *count entries). out may be NULL when cap is 0
 *  (to ask for the count). */
int anytun_client_calls(anytun_client *client, anytun_call_info *out,
                        size_t cap, size_t *count);

/** Writes this client's public key (base64) into out (ANYTUN_KEY_TEXT_SIZE
 *  bytes always suffice). */
int anytun_client_public_key(anytun_client *client, char *out, size_t len,
                             size_t *needed);

/* ------------------------------------------------------------------------
 * Proxy mode: a proxy node hosted in this process (res_anytun's proxy mode)
 * ------------------------------------------------------------------------
 * The same proxy `anytund` runs, on a thread pool of its own inside the
 * host: it serves clients over UDP and, with sync_listen and peers, is a
 * member of an anypsp network that replicates with standalone `anytund`
 * peers (docs/anypsp-protocol.md section 17). It calls back nothing but the
 * logger (anytun_set_logger).
 *
 * A build without the daemon feature (the phone library,
 * `cargo build --lib --no-default-features`) has these functions too, but
 * every one returns ANYTUN_ERR_UNSUPPORTED (anytun_proxy_config_init and
 * anytun_proxy_status_init still work, anytun_proxy_free(NULL) is
 * ANYTUN_OK).
 *
 *   anytun_proxy_config pc; anytun_proxy_config_init(&pc);
 *   pc.node_id = 2; pc.listen = "0.0.0.0:7475";
 *   pc.state_dir = "/var/lib/asterisk/anytun";
 *   pc.sync_listen = "192.0.2.2:7476";
 *   const char *peers[] = { "1 192.0.2.1:7476 <node public key of 1>" };
 *   pc.peers = peers; pc.n_peers = 1;
 *   anytun_proxy *p; anytun_proxy_new(&pc, &p);  checks, starts nothing
 *   anytun_proxy_start(p);   keys, store, threads, UDP (once synced)
 *   anytun_proxy_get_status(p, &st);  st.ready: serving and synced
 *   anytun_proxy_stop(p);    joins every thread it started
 *   anytun_proxy_free(p);
 */

/** anytun_proxy_config.flags: set SO_REUSEPORT on the UDP sockets, so that
 *  this proxy shares its port with other proxies on the host on purpose
 *  (with peers, UDP is then bound only once synced). */
#define ANYTUN_PROXY_REUSE_PORT 0x1u

/** Longest peer entry text ("ID ADDRESS PUBLIC_KEY"), in bytes. */
#define ANYTUN_PROXY_MAX_PEER_TEXT 256

/** How a hosted proxy is set up. Initialise with anytun_proxy_config_init.
 *  Two ways, which combine:
 *  - config_file: an anytund TOML file (the format of `anytund --config`,
 *    docs in README.md); every setting of the daemon is available there.
 *  - the fields below, enough for an Asterisk admin to write the proxy
 *    settings into anytun.conf; each one set (non-NULL, non-zero) replaces
 *    the file's value. Without config_file, state_dir is required, metrics
 *    are off unless metrics_listen is set, and everything else has
 *    anytund's defaults.
 *  All strings are copied by anytun_proxy_new. */
typedef struct anytun_proxy_config {
    /** sizeof(anytun_proxy_config); set by anytun_proxy_config_init. */
    uint32_t struct_size;
    /** ANYTUN_PROXY_REUSE_PORT or 0; other bits must be zero. */
    uint32_t flags;
    /** An anytund TOML file, or NULL. Relative paths in it are relative to
     *  its directory. Its [announce] names programs this process runs (bird,
     *  birdc): keep it owned and writable by root only. */
    const char *config_file;
    /** This proxy's node id (its proxy_id), 1..65534; 0: the file's (or 1). */
    uint32_t node_id;
    /** Threads of the proxy's runtime, 1..64; 0: the file's (or 2). */
    uint32_t worker_threads;
    /** UDP addresses clients reach it on, "IP:PORT" or "[IPv6]:PORT",
     *  several separated by commas or spaces; NULL: the file's (or
     *  0.0.0.0:7475 and [::]:7475). */
    const char *listen;
    /** Directory of the proxy's state: network.key (the network's private
     *  key, created on first start; copy it from another proxy of the
     *  network), node.key (this node's key for peer links, created on first
     *  start), send-epoch, subscribers.db. Created if missing. NULL: the
     *  file's paths; required without config_file. */
    const char *state_dir;
    /** The subscriber store (SQLite, `anytun user add` edits it); NULL:
     *  state_dir/subscribers.db, or the file's. Reloaded when it changes. */
    const char *subscribers;
    /** TCP address to accept peer links on, "IP:PORT": makes this proxy a
     *  member of an anypsp network. NULL: the file's [sync] (or none: the
     *  proxy runs alone). */
    const char *sync_listen;
    /** Its peers, each "ID ADDRESS PUBLIC_KEY": the peer's node id, its
     *  sync_listen, its node public key as `anytund --node-key` or
     *  anytun_proxy_node_key prints it; separated by spaces or commas, or
     *  "@" after the id ("3@192.0.2.3:7476 KEY"); "revoked" after the
     *  key refuses that peer from now on (as revoked = true in anytund's
     *  [[sync.peers]]);
     *  n_peers > 0 replaces the file's peers and needs a sync_listen (here
     *  or in the file). */
    const char *const *peers;
    /** Entries in peers. */
    size_t n_peers;
    /** Prometheus metrics on this TCP "IP:PORT"; "" turns them off; NULL:
     *  the file's (or off without a file). */
    const char *metrics_listen;
    /** Zero (reserved). */
    uint32_t reserved_u32[8];
    /** Announce the anycast routes while this proxy is ready (the file's
     *  [announce]): BIRD 2's config for it, its anycast static protocols
     *  written `disabled` (docs/bird/proxy.conf). BIRD runs as a child of
     *  this process, the routes are enabled only while the proxy is ready
     *  and not overloaded, and withdrawn when it stops. NULL: the file's
     *  [announce] (or none). Added in 0.1 from reserved room. BIRD runs
     *  with this process's rights: keep this file owned and writable by
     *  root only. */
    const char *bird_config;
    /** BIRD's control socket; NULL: the file's, or bird_config with the
     *  extension .ctl. Needs bird_config (here or in the file). */
    const char *bird_socket;
    /** The static protocols to enable, separated by commas or spaces; NULL:
     *  the file's, or "anycast4, anycast6". Needs bird_config. "all" is
     *  refused (birdc disable all would drop the BGP sessions too). */
    const char *announce_protocols;
    /** NULL (reserved). */
    const void *reserved_ptr[5];
} anytun_proxy_config;

/** Zeroes *cfg and sets struct_size. ANYTUN_ERR_NULL if cfg is NULL. */
int anytun_proxy_config_init(anytun_proxy_config *cfg);

/** A proxy hosted in this process. */
typedef struct anytun_proxy anytun_proxy;

/** Creates a proxy from cfg: reads config_file, applies the fields, checks
 *  every setting (ANYTUN_ERR_INVALID, anytun_last_error says which and
 *  why: "config anytund.toml:3:10: ...", "peers[1]: ..."); starts nothing
 *  and creates no file. *out is the handle or NULL on failure. */
int anytun_proxy_new(const anytun_proxy_config *cfg, anytun_proxy **out);

/** Starts the proxy: opens the store, loads (or creates) the keys, binds
 *  UDP (with peers and ANYTUN_PROXY_REUSE_PORT: once synced), starts its
 *  threads and the peer links, and returns; anytun_proxy_get_status says
 *  when it serves. ANYTUN_ERR_IO (a port in use, the store, a key file:
 *  anytun_last_error says which; nothing keeps running then),
 *  ANYTUN_ERR_ALREADY_STARTED, ANYTUN_ERR_STOPPED (a stopped proxy does not
 *  start again: free it and make a new one). */
int anytun_proxy_start(anytun_proxy *proxy);

/** Stops the proxy: with bird_config (or [announce]) its anycast routes are
 *  withdrawn first and BIRD stopped (its thread joined) 200 ms after BIRD
 *  confirmed the withdrawal, so the router moves its clients before it
 *  stops serving. The routes' part blocks at most about 3.2 s: up to 1 s
 *  waiting for BIRD to confirm the withdrawal, the 0.2 s grace, up to 2 s
 *  for BIRD to exit on SIGTERM (then SIGKILL). Its clients'
 *  sessions and calls end with it (they reconnect to another proxy of the
 *  network), peer links close, and every
 *  thread it started is joined before this returns, always: a task still
 *  in a blocking call (a subscriber store locked by another process
 *  waits at most its 5 s busy timeout per statement) is waited for, and
 *  a stop that took longer than 5 s is logged as a warning. Idempotent;
 *  ANYTUN_OK on a never started proxy. */
int anytun_proxy_stop(anytun_proxy *proxy);

/** Stops (as anytun_proxy_stop) and frees. NULL is ANYTUN_OK. */
int anytun_proxy_free(anytun_proxy *proxy);

/** Where a hosted proxy is (anytun_proxy_status.state). */
typedef enum anytun_proxy_state {
    /** Created, not started. */
    ANYTUN_PROXY_IDLE = 0,
    /** Started, pulling its peers' tables before it serves (at most the
     *  startup timeout). */
    ANYTUN_PROXY_SYNCING = 1,
    /** Serving clients over UDP. */
    ANYTUN_PROXY_SERVING = 2,
    /** It could not serve (UDP bind failed); detail says why. Stop it. */
    ANYTUN_PROXY_FAILED = 3,
    /** Stopped. */
    ANYTUN_PROXY_STOPPED = 4
} anytun_proxy_state;

/** A snapshot of a hosted proxy (anytun_proxy_get_status). Counts are of
 *  this proxy's tables, which hold the whole network's replicated state. */
typedef struct anytun_proxy_status {
    /** In: sizeof(anytun_proxy_status) (anytun_proxy_status_init). */
    uint32_t struct_size;
    /** An anytun_proxy_state. */
    int32_t state;
    /** The node id. */
    uint32_t node_id;
    /** 1 when serving and synced with every peer (or alone): the anycast
     *  route may be announced. */
    uint32_t ready;
    /** Client sessions held. */
    uint32_t sessions;
    /** Calls ringing or answered. */
    uint32_t calls;
    /** Registered (name, device) bindings. */
    uint32_t registrations;
    /** Authorised (name, key) pairs in the subscriber snapshot. */
    uint32_t subscribers;
    /** Peers configured, with their link up, synced with. */
    uint32_t peers;
    /** See peers. */
    uint32_t peers_up;
    /** See peers. */
    uint32_t peers_synced;
    /** The first UDP port served, 0 when not serving. */
    uint16_t udp_port;
    /** The TCP port peer links are accepted on, 0 without peers. */
    uint16_t sync_port;
    /** Voice frames relayed, since start. */
    uint64_t frames_relayed;
    /** Datagrams dropped (malformed, forged, replayed, ...), since start. */
    uint64_t dropped;
    /** The network's public key (what clients configure as network_key),
     *  "" before start. */
    char network_key[ANYTUN_KEY_TEXT_SIZE];
    /** For ANYTUN_PROXY_FAILED: why, else "". Longer texts end in "...". */
    char detail[256];
    /** 1 while a reload's restart waits for the calls this proxy carries
     *  to end (see anytun_proxy_reload), else 0. */
    uint32_t reload_pending;
    /** What this proxy carries: the sessions it serves itself (not the
     *  replicas it holds for its peers) that are the caller, a rung device
     *  or the answering callee of a call. 0: a restart cuts no call. */
    uint32_t carried;
    /** Where its anycast routes stand: ANYTUN_PROXY_ROUTES_* bits (0: no
     *  [announce], not overloaded). Added in 0.1 from reserved room. */
    uint32_t routes;
    /** Zero (reserved). */
    uint32_t reserved_u32;
    /** Zero (reserved). */
    uint64_t reserved[6];
} anytun_proxy_status;

/** anytun_proxy_status.routes: it has [announce] (bird_config): BIRD runs
 *  as this process's child and announces the anycast routes only while the
 *  proxy is ready, not drained and not overloaded. */
#define ANYTUN_PROXY_ROUTES_ANNOUNCING 0x1u
/** anytun_proxy_status.routes: BIRD confirmed the routes are announced. */
#define ANYTUN_PROXY_ROUTES_ANNOUNCED 0x2u
/** anytun_proxy_status.routes: overloaded ([overload]): withdrawn while it
 *  lasts, still serving what arrives. */
#define ANYTUN_PROXY_ROUTES_OVERLOADED 0x4u
/** anytun_proxy_status.routes: drained (withdrawn on request:
 *  anytun_proxy_drain), still serving. A stopped proxy reports routes 0. */
#define ANYTUN_PROXY_ROUTES_DRAINED 0x8u

/** Zeroes *status and sets struct_size. ANYTUN_ERR_NULL if NULL. */
int anytun_proxy_status_init(anytun_proxy_status *status);

/** Drains a running proxy (drain != 0): its anycast routes are withdrawn
 *  (BIRD disables the anycast static protocols) while it keeps serving what
 *  still arrives, as anytund's SIGUSR1; drain == 0 announces them again
 *  once ready (SIGUSR2). The routes follow within milliseconds;
 *  anytun_proxy_status.routes says where they are. Needs bird_config (or
 *  [announce] in config_file): else ANYTUN_ERR_INVALID;
 *  ANYTUN_ERR_NOT_STARTED unless running. A drain lasts until
 *  anytun_proxy_drain(proxy, 0): a restart by anytun_proxy_reload (also
 *  a deferred one, and the fall-back to the old settings) comes back
 *  drained, its routes never announced meanwhile, unless the reload
 *  removes bird_config (nothing announces then, and a later reload that
 *  adds it back starts undrained); anytun_proxy_stop ends it. */
int anytun_proxy_drain(anytun_proxy *proxy, int drain);

/** Fills *status. Works in every state. */
int anytun_proxy_get_status(anytun_proxy *proxy, anytun_proxy_status *status);

/** A peer link's state (anytun_proxy_peer_info.state). */
typedef enum anytun_peer_state {
    /** No link (connecting, or the peer is down). */
    ANYTUN_PEER_DOWN = 0,
    /** The encrypted link is up. */
    ANYTUN_PEER_UP = 1
} anytun_peer_state;

/** One peer, for listings (anytun_proxy_peers). */
typedef struct anytun_proxy_peer_info {
    /** Its node id. */
    uint32_t node_id;
    /** An anytun_peer_state. */
    int32_t state;
    /** Its configured address, "IP:PORT", NUL-terminated. */
    char address[64];
    /** When it was last heard from, ms since the Unix epoch (at most
     *  500 ms old); 0: never. */
    uint64_t last_heard_ms;
    /** Links that came up with it since start. */
    uint64_t connects;
    /** Bytes queued for it, not yet sent. */
    uint64_t queued_bytes;
    /** Why its last link ended or its last connect failed, or "".
     *  Longer texts end in "...". */
    char last_error[128];
    /** Zero (reserved). */
    uint8_t reserved[32];
} anytun_proxy_peer_info;

/** Lists the configured peers into out[0..cap), by node id. *count gets
 *  their number; if cap is smaller, ANYTUN_ERR_BUFFER_TOO_SMALL (ask again
 *  with *count entries). out may be NULL when cap is 0. As the sync task
 *  last published them (what anytund's /status says): link states at once
 *  on a change, figures at most 500 ms old; before start every peer is
 *  ANYTUN_PEER_DOWN. */
int anytun_proxy_peers(anytun_proxy *proxy, anytun_proxy_peer_info *out,
                       size_t cap, size_t *count);

/** One client session of a hosted proxy, for listings
 *  (anytun_proxy_sessions). */
typedef struct anytun_proxy_session_info {
    /** The session id (its top 16 bits are its home proxy's node id). */
    uint64_t session_id;
    /** The node serving it: this proxy's node_id, or a peer's (a replica
     *  held so that the session survives that peer). */
    uint32_t serving;
    /** Calls it has a role in (caller, callee or offered device). */
    uint32_t calls;
    /** The client's address, "IP:PORT", NUL-terminated. */
    char address[64];
    /** The client's static public key (base64), NUL-terminated. */
    char client_key[ANYTUN_KEY_TEXT_SIZE];
    /** The names it is registered under, comma-separated, or "". Longer
     *  texts end in "...". */
    char names[128];
    /** Zero (reserved). */
    uint8_t reserved[32];
} anytun_proxy_session_info;

/** Lists the proxy's client sessions (its own and its peers' replicas),
 *  in session id order, a page at a time: fills out[0..cap) with the
 *  sessions whose id is above after (0: from the first), at most 1024 per
 *  call, and sets *count to how many it wrote; ask again with after = the
 *  last session_id written until *count is 0. Each call holds the proxy's
 *  tables for one page only (O(log n + page)). Before start, or while
 *  (re)starting: ANYTUN_OK with *count 0. out may be NULL when cap is 0. */
int anytun_proxy_sessions(anytun_proxy *proxy, uint64_t after,
                          anytun_proxy_session_info *out, size_t cap,
                          size_t *count);

/** Writes this node's public key for peer links (base64: what its peers
 *  configure as its PUBLIC_KEY) into out; creates the node key when
 *  missing (as anytund --node-key does). Works before start, so an admin
 *  can read it (`anytun show status`) before the network is set up. */
int anytun_proxy_node_key(anytun_proxy *proxy, char *out, size_t len,
                          size_t *needed);

/** Applies cfg to the running proxy, for a host's reload (`module
 *  reload`). What it does depends on what changed:
 *  - Nothing (cfg asks for what runs): ANYTUN_OK, nothing is touched (no
 *    session or call drops); a restart still pending is cancelled. The
 *    subscriber store needs no reload: the proxy re-reads it by itself
 *    when it changes (subscriber_reload_ms, 1 s by default; added keys and
 *    revocations apply live), and `anytun user add/remove` edits it.
 *  - The peer list alone (peers added, removed, or with a new address or
 *    key): applied live, as anytund applies [sync] peers on SIGHUP: links
 *    to removed peers close and they are refused from then on, new peers
 *    are linked, the other links (and every session and call) stay up; a
 *    pending restart is cancelled. A peer list the node refuses:
 *    ANYTUN_ERR_IO, nothing changed.
 *  - Anything else restarts the proxy inside the handle: it stops (every
 *    thread joined), boots with cfg and, with anypsp peers, pulls their
 *    tables (the replicas of its sessions, calls and registrations among
 *    them) before it serves again. The restart runs at once when the proxy
 *    carries no call (anytun_proxy_status.carried is 0: no session it
 *    serves is the caller, a rung device or the answering callee of a
 *    call; replicas of its peers' sessions do not count), or when a peer is
 *    up and synced and the proxy comes back as the same member where its
 *    clients send (node_id, state_dir (the network key), sync_listen and
 *    its presence, listen and ANYTUN_PROXY_REUSE_PORT unchanged): that
 *    peer takes its sessions over on the shared anycast address while it
 *    is down (the calls stay up; their voice pauses for the restart) and
 *    they may come back after. This needs clients to reach the peer
 *    meanwhile: the same port shared with ANYTUN_PROXY_REUSE_PORT on one
 *    host, or an anycast route that moves. Otherwise the restart is
 *    DEFERRED: ANYTUN_OK at once, anytun_proxy_status.reload_pending is 1,
 *    the log says so once, and a library thread runs the restart as soon
 *    as the proxy carries no call, or a peer is up and synced as above (it
 *    looks every 200 ms at O(1) counters; the log says which). Right
 *    before it stops the proxy looks again: a call set up since defers
 *    the restart again (a call set up within the core's last batch of
 *    packets may still be cut). At most one restart waits: a later
 *    reload replaces it, a reload back to the running settings cancels
 *    it, and anytun_proxy_stop drops it (joining that thread). A proxy
 *    that is never without a call keeps its old settings until then.
 *  A restart that runs logs what changed and keeps a drain
 *  (anytun_proxy_drain); without peers its clients'
 *  sessions end and they reconnect. If the proxy cannot start with cfg, it
 *  starts again with the settings it had: ANYTUN_ERR_IO when the restart
 *  ran at once (as anytun_proxy_start), and anytun_last_error says why
 *  ("listen changed, but ...: the proxy runs again with its old
 *  settings"); ANYTUN_ERR_INTERNAL if even that failed (then it is
 *  stopped); a deferred restart that fails so is logged. With
 *  ANYTUN_PROXY_REUSE_PORT and peers, UDP is bound once synced, so a
 *  listen address that cannot be bound shows later, as
 *  ANYTUN_PROXY_FAILED. A bad cfg is ANYTUN_ERR_INVALID as in
 *  anytun_proxy_new, and nothing changes; ANYTUN_ERR_NOT_STARTED before
 *  start (or after a stop); ANYTUN_ERR_STOPPED when a stop on another
 *  thread came while a restart was being deferred (nothing then waits).
 *  Never from a library callback (ANYTUN_ERR_IN_CALLBACK): it
 *  joins threads. The handle stays the same, so other threads may keep
 *  using it (status calls during the restart report ANYTUN_PROXY_IDLE or
 *  ANYTUN_PROXY_STOPPED). */
int anytun_proxy_reload(anytun_proxy *proxy, const anytun_proxy_config *cfg);

#ifdef __cplusplus
}
#endif

#endif /* ANYTUN_H */
