#!/bin/sh
# shellcheck shell=dash
# lanmesh's update guard. The version being replaced copies this script to
# <state_dir>/update/guard.sh before it installs anything, so the way back never depends on
# the new version: the guard is POSIX sh, owned by no package, and started either by that
# old daemon ("run") or, after a reboot inside a trial, by the init hook ("boot").
#
#   run:  install the new package, restart the service, wait for the new daemon's confirm
#         mark (it writes it once it reached the broker and kept its links); without it by
#         the window's end, reinstall the kept previous package and restart.
#   boot: a power cut or a crash loop inside a trial. Installing when the power went, or
#         more than MAX_BOOTS boots without a confirm: roll back now; else watch again.
#
# Everything it knows is in $DIR/trial (shell assignments written atomically by the old
# daemon: FROM TO FMT NEW OLD PM ROOT WINDOW MAX_BOOTS RESTART HOOK). What happened goes
# to $DIR/result ("confirmed VERSION" or "rolled-back VERSION reason"), read and reported
# by whichever daemon runs next.
set -u
DIR=$1
ACTION=${2:-run}
TRIAL=$DIR/trial
[ -f "$TRIAL" ] || exit 0
# shellcheck disable=SC1090
. "$TRIAL"
LOG=$DIR/guard.log

say() { echo "$(date '+%Y-%m-%d %H:%M:%S') guard: $*" >>"$LOG"; }

put() {                 # put FILE TEXT: written whole or not at all
	printf '%s\n' "$2" >"$1.tmp" && mv "$1.tmp" "$1"
}

pm() {                  # pm install|rollback PACKAGE
	case "$FMT" in
	ipk)
		if [ "$ROOT" = / ]; then opts=""; else
			# an offline root (Image Builder, tests): its scripts act on it, not on /
			opts="-o $ROOT -f $ROOT/etc/opkg.conf"; export IPKG_INSTROOT="$ROOT"
		fi
		if [ "$1" = rollback ]; then force="--force-downgrade --force-reinstall"; else force=""; fi
		# shellcheck disable=SC2086
		"$PM" $opts install $force "$2" ;;
	apk)
		# an offline root has no shell of its own to run the package's scripts in
		if [ "$ROOT" = / ]; then opts=""; else opts="--root $ROOT --no-scripts"; fi
		# the artefact's hash and the manifest's signature were checked by lanmesh
		# shellcheck disable=SC2086
		"$PM" $opts add --allow-untrusted --no-network "$2" ;;
	deb)
		# an offline root (an image build): the scripts run here, on $DPKG_ROOT
		if [ "$ROOT" = / ]; then opts=""; else opts="--root=$ROOT --force-script-chrootless"; fi
		# shellcheck disable=SC2086
		"$PM" $opts -i "$2" ;;
	*)
		echo "unknown package format $FMT"; return 1 ;;
	esac
}

restart() {
	say "restarting: $RESTART"
	sh -c "$RESTART" >>"$LOG" 2>&1 || say "restart command failed ($?)"
}

finish() {              # the trial is over: the hook and the trial go, the guard stays for the log
	rm -f "$TRIAL" "$DIR/boots" "$DIR/phase" "$DIR/confirmed" "$DIR/guard.pid"
	# shellcheck disable=SC2086
	[ -n "$HOOK" ] && rm -f $HOOK
}

rollback() {
	say "rolling back to $FROM: $1"
	put "$DIR/phase" rollback
	if out=$(pm rollback "$OLD" 2>&1); then
		say "reinstalled $FROM"
	else
		say "reinstalling $FROM failed: $out"
	fi
	put "$DIR/result" "rolled-back $TO $1"
	rm -f "$NEW"
	finish
	restart
	exit 1
}

watch() {               # wait for the confirm mark, up to WINDOW seconds from now
	waited=0
	while [ "$waited" -lt "$WINDOW" ]; do
		if [ -f "$DIR/confirmed" ]; then
			say "$TO confirmed after ${waited}s"
			put "$DIR/result" "confirmed $TO"
			# the new package is the way back for the next update
			rm -f "$OLD" "$DIR/keep/manifest"
			mkdir -p "$DIR/keep" && mv "$NEW" "$DIR/keep/" && mv "$DIR/next.manifest" "$DIR/keep/manifest"
			finish
			exit 0
		fi
		sleep 1
		waited=$((waited + 1))
	done
	rollback "$TO did not confirm within ${WINDOW}s (it did not start, did not reach the broker, or lost its mesh links)"
}

echo $$ >"$DIR/guard.pid"
case "$ACTION" in
run)
	say "installing $TO over $FROM ($NEW)"
	put "$DIR/phase" installing
	if ! out=$(pm install "$NEW" 2>&1); then
		rollback "installing $TO failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
	fi
	put "$DIR/phase" switched
	restart
	watch ;;
boot)
	boots=$(($(cat "$DIR/boots" 2>/dev/null || echo 0) + 1))
	put "$DIR/boots" "$boots"
	phase=$(cat "$DIR/phase" 2>/dev/null || echo installing)
	case "$phase" in
	installing|rollback) rollback "the power went while $TO was being installed" ;;
	esac
	if [ "$boots" -gt "$MAX_BOOTS" ]; then
		rollback "$boots boots without $TO confirming (a crash or a boot loop)"
	fi
	say "boot $boots inside the trial of $TO: watching again"
	watch ;;
esac
