# shellcheck shell=dash
# Stub of OpenWrt's /lib/functions/procd.sh: every call is appended to $PROCD_LOG as one
# line, the function name and its arguments separated by tabs. procd_close_instance then
# runs the instance command in the foreground, the way procd supervises it (a daemon that
# forked away would return at once), with $STUB_ROOT prefixed to the program path.

_procd_log() {
	local IFS="	"
	printf '%s\n' "$*" >> "$PROCD_LOG"
}

_PROCD_CMD=

procd_open_service() { _procd_log procd_open_service "$@"; }
procd_close_service() {
	service_triggers 2>/dev/null
	_procd_log procd_close_service "$@"
}
procd_open_instance() { _PROCD_CMD=; _procd_log procd_open_instance "$@"; }
procd_set_param() {
	_procd_log procd_set_param "$@"
	if [ "$1" = command ]; then
		shift
		_PROCD_CMD=$(printf '%s\n' "$@")
	fi
}
procd_append_param() { _procd_log procd_append_param "$@"; }
procd_close_instance() {
	_procd_log procd_close_instance "$@"
	[ -n "$_PROCD_CMD" ] || return 0
	# rebuild "$@" from the saved command, one argument per line
	local IFS='
'
	# shellcheck disable=SC2086
	set -- $_PROCD_CMD
	IFS=' '
	local prog=$1
	shift
	"$STUB_ROOT$prog" "$@"
	_procd_log instance_exited "$?"
}
procd_add_reload_trigger() { _procd_log procd_add_reload_trigger "$@"; }
procd_open_trigger() { _procd_log procd_open_trigger "$@"; }
procd_close_trigger() { _procd_log procd_close_trigger "$@"; }
procd_kill() { _procd_log procd_kill "$@"; }
procd_send_signal() { _procd_log procd_send_signal "$@"; }
