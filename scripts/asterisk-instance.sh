#!/usr/bin/env bash
# Starts, queries and stops named Asterisk instances inside the sid chroot
# that scripts/asterisk-chroot.sh builds. Each instance has its own
# asterisk.conf and directories under /var/lib/anytun-instances/NAME in the
# chroot, `autoload = no` and only the modules it is given, so several run at
# once without sharing anything but the chroot's binaries.
#
#   asterisk-instance.sh start NAME CONFDIR "mod1.so mod2.so ..." [MODULE.so ...]
#       CONFDIR holds the instance's own configs (extensions.conf, anytun.conf,
#       ...); asterisk.conf, modules.conf and logger.conf are written here, and
#       the core's other configs come from Debian's defaults. Extra MODULE.so
#       files (res_anytun.so) go into the instance's own module directory
#       beside links to the chroot's modules, and are loaded too. Waits until
#       `core waitfullybooted` says so (at most 20 s) and prints the
#       instance's directory as seen from the host.
#   asterisk-instance.sh rx NAME "cli command"   prints the output (asterisk -rx
#       always exits 0: callers read what it prints)
#   asterisk-instance.sh stop NAME [now]  `core stop gracefully` (runs every
#       module's unload), or `now`; SIGKILL after 20 s; exits 1 if it had to
#   asterisk-instance.sh dir NAME         the instance's directory on the host
#
# Environment: ANYTUN_ASTERISK_CHROOT (default /var/cache/anytun/asterisk-sid);
# ANYTUN_NETNS (start only): the network namespace to run the instance in
# (`ip netns exec`, e.g. a site of `anytun lab`); its CLI socket is a file,
# so rx and stop work from any namespace.
# Asterisk runs as user asterisk, in the foreground (-f) of a setsid process
# whose pid is kept in the instance's directory.
set -euo pipefail

ROOT=${ANYTUN_ASTERISK_CHROOT:-/var/cache/anytun/asterisk-sid}
BASE=/var/lib/anytun-instances   # inside the chroot
SYSMODS=/usr/lib/x86_64-linux-gnu/asterisk/modules

die() { echo "asterisk-instance: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (chroot); run as root"
[ -x "$ROOT/usr/sbin/asterisk" ] ||
    die "no Asterisk chroot at $ROOT: run scripts/asterisk-chroot.sh (scripts/test.sh does)"

cmd=${1:-}
name=${2:-}
[ -n "$cmd" ] && [ -n "$name" ] || die "usage: $0 start|rx|stop|dir NAME ..."
case $name in *[!A-Za-z0-9_-]*) die "instance name '$name': letters, digits, - and _ only" ;; esac
inner=$BASE/$name
host=$ROOT$inner
conf=$inner/etc/asterisk.conf

rx() { chroot "$ROOT" /usr/sbin/asterisk -C "$conf" -rx "$1" 2>&1; }

running() {
    [ -f "$host/asterisk.pid" ] && kill -0 "$(cat "$host/asterisk.pid")" 2>/dev/null
}

start() {
    local confdir=$1 modules=$2
    shift 2
    [ -d "$confdir" ] || die "config dir $confdir does not exist"
    if running; then die "instance $name is already running (pid $(cat "$host/asterisk.pid"))"; fi
    rm -rf --one-file-system "$host"
    mkdir -p "$host"/{etc,run,log,spool,db,cache,data,agi,keys,modules}
    cp -r "$confdir"/. "$host/etc/"
    # The chroot's modules, plus this instance's own (res_anytun.so).
    for m in "$ROOT$SYSMODS"/*.so; do ln -s "$SYSMODS/${m##*/}" "$host/modules/${m##*/}"; done
    for m in "$@"; do
        [ -f "$m" ] || die "module $m does not exist"
        rm -f "$host/modules/${m##*/}"
        cp "$m" "$host/modules/"
    done
    cat >"$host/etc/asterisk.conf" <<EOF
[directories]
astetcdir => $inner/etc
astmoddir => $inner/modules
astvarlibdir => $inner/data
astdbdir => $inner/db
astkeydir => $inner/keys
astdatadir => /usr/share/asterisk
astagidir => $inner/agi
astspooldir => $inner/spool
astrundir => $inner/run
astlogdir => $inner/log
astsbindir => /usr/sbin
astcachedir => $inner/cache

[options]
documentation_language = en_US
cache_media_frames = yes
EOF
    {
        echo "[modules]"
        echo "autoload = no"
        for m in $modules; do echo "load => $m"; done
        for m in "$@"; do echo "load => ${m##*/}"; done
    } >"$host/etc/modules.conf"
    # The core's own configs, from Debian's defaults unless CONFDIR has
    # them (without them the core logs an ERROR for each at start).
    for f in acl.conf ccss.conf cdr.conf cel.conf features.conf indications.conf udptl.conf stasis.conf; do
        [ -e "$host/etc/$f" ] || [ ! -e "$ROOT/etc/asterisk/$f" ] || cp "$ROOT/etc/asterisk/$f" "$host/etc/$f"
    done
    [ -f "$host/etc/logger.conf" ] || cat >"$host/etc/logger.conf" <<EOF
[general]
[logfiles]
messages.log => notice,warning,error,verbose(3),debug(1)
EOF
    # Asterisk looks up this host's name (e.g. for SIP): the host's hosts
    # file answers without DNS.
    [ -s "$ROOT/etc/hosts" ] || cp /etc/hosts "$ROOT/etc/hosts"
    chroot "$ROOT" chown -R asterisk:asterisk "$inner"
    chmod -R a+rX "$host/etc"
    local netns=()
    [ -z "${ANYTUN_NETNS:-}" ] || netns=(ip netns exec "$ANYTUN_NETNS")
    # Asterisk drops root for user asterisk, unless ANYTUN_ASTERISK_ROOT=1:
    # a proxy PBX whose hosted proxy runs BIRD (BGP's port 179) keeps it.
    local runas=(-U asterisk -G asterisk)
    [ "${ANYTUN_ASTERISK_ROOT:-0}" != 1 ] || runas=()
    # setsid, ip netns exec and chroot each exec the next: $! is Asterisk's pid.
    setsid "${netns[@]}" chroot "$ROOT" /usr/sbin/asterisk -C "$conf" -f "${runas[@]}" \
        </dev/null >"$host/console.log" 2>&1 &
    echo $! >"$host/asterisk.pid"
    local i out
    for i in $(seq 1 100); do
        if ! running; then
            rm -f "$host/asterisk.pid"
            die "instance $name exited at start; console:$(printf '\n'; tail -n 30 "$host/console.log")"
        fi
        if [ -S "$host/run/asterisk.ctl" ]; then
            out=$(rx "core waitfullybooted")
            case $out in *"fully booted"*) echo "$host"; return 0 ;; esac
        fi
        sleep 0.2
    done
    kill -KILL "$(cat "$host/asterisk.pid")" 2>/dev/null || true
    rm -f "$host/asterisk.pid"
    die "instance $name not fully booted after 20 s; console:$(printf '\n'; tail -n 30 "$host/console.log")"
}

stop() {
    local how=${1:-gracefully} pid i
    running || return 0
    pid=$(cat "$host/asterisk.pid")
    rx "core stop $how" >/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$host/asterisk.pid"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$host/asterisk.pid"
    die "instance $name did not stop within 20 s (killed)"
}

case $cmd in
start) shift 2; [ $# -ge 2 ] || die "usage: $0 start NAME CONFDIR MODULES [MODULE.so ...]"; start "$@" ;;
rx) [ -n "${3:-}" ] || die "usage: $0 rx NAME COMMAND"; running || die "instance $name is not running"; rx "$3" ;;
stop) stop "${3:-gracefully}" ;;
dir) echo "$host" ;;
*) die "unknown command $cmd (start|rx|stop|dir)" ;;
esac
