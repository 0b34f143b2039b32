# shellcheck shell=dash
# Stub of OpenWrt's /lib/functions.sh config API, enough for init scripts: config_load
# evaluates `uci export` (as the real uci_load does), config_get / config_get_bool read it.
# shellcheck disable=SC2034

CONFIG_SECTION=
CONFIG_NUM=0

package() { :; }

config() {
	CONFIG_NUM=$((CONFIG_NUM + 1))
	CONFIG_SECTION=${2:-cfg$CONFIG_NUM}
	eval "CONFIG_${CONFIG_SECTION}_TYPE=\$1"
}

option() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\$2"
}

list() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\"\${CONFIG_${CONFIG_SECTION}_$1:+\$CONFIG_${CONFIG_SECTION}_$1 }\$2\""
}

config_load() {
	eval "$(uci -q export "$1")"
}

# config_get <var> <section> <option> [default]
config_get() {
	eval "$1=\${CONFIG_$2_$3:-\$4}"
}

config_get_bool() {
	local _v
	config_get _v "$2" "$3" "$4"
	case "$_v" in
		1|on|true|yes|enabled) _v=1 ;;
		0|off|false|no|disabled) _v=0 ;;
		*) _v=$4 ;;
	esac
	eval "$1=\$_v"
}
