#!/bin/sh
# Test stand-in for rauc's U-Boot backend (bootloader=custom): the same variables that
# meta-rauc-raspberrypi's boot.cmd reads (BOOT_ORDER, BOOT_A_LEFT, BOOT_B_LEFT), kept in
# /boot/uboot.env instead of U-Boot's environment, changed the way rauc's uboot backend changes
# them with fw_setenv. The boot itself (pick a slot, decrement its counter) is uboot_step() in
# ota_device.py.
#   get-primary | get-state SLOT | set-primary SLOT | set-state SLOT good|bad | get-current
set -eu
ENV=/boot/uboot.env
TRIES=3
exec 9>>/boot/uboot.env.lock
flock 9
val() { sed -n "s/^$1=//p" "$ENV" | tail -n 1; }
order=$(val BOOT_ORDER); [ -n "$order" ] || order="A B"
left_a=$(val BOOT_A_LEFT); left_a=${left_a:-$TRIES}
left_b=$(val BOOT_B_LEFT); left_b=${left_b:-$TRIES}
left() { if [ "$1" = A ]; then echo "$left_a"; else echo "$left_b"; fi; }
setleft() { if [ "$1" = A ]; then left_a=$2; else left_b=$2; fi; }
save() {
    printf 'BOOT_ORDER=%s\nBOOT_A_LEFT=%s\nBOOT_B_LEFT=%s\n' "$order" "$left_a" "$left_b" >"$ENV.tmp"
    mv -f "$ENV.tmp" "$ENV"
}
check() { case "${1:-}" in A|B) ;; *) echo "ota-uboot-env: unknown slot '${1:-}'" >&2; exit 1 ;; esac; }
case "${1:-}" in
get-primary)
    for s in $order; do [ "$(left "$s")" -gt 0 ] && { echo "$s"; exit 0; }; done
    echo "ota-uboot-env: no slot with tries left" >&2; exit 1 ;;
get-state)
    check "${2:-}"
    case " $order " in *" $2 "*) [ "$(left "$2")" -gt 0 ] && { echo good; exit 0; } ;; esac
    echo bad ;;
set-primary)
    check "${2:-}"
    rest=$(for s in $order; do [ "$s" = "$2" ] || printf '%s ' "$s"; done)
    order=$(echo "$2 $rest" | sed 's/ *$//')
    setleft "$2" "$TRIES"; save ;;
set-state)
    check "${2:-}"
    case "${3:-}" in
    good) case " $order " in *" $2 "*) ;; *) order="$order $2" ;; esac; setleft "$2" "$TRIES" ;;
    bad) order=$(for s in $order; do [ "$s" = "$2" ] || printf '%s ' "$s"; done | sed 's/ *$//'); setleft "$2" 0 ;;
    *) echo "ota-uboot-env: set-state needs good or bad" >&2; exit 1 ;;
    esac
    save ;;
get-current)
    tr ' ' '\n' </proc/cmdline | sed -n 's/^rauc\.slot=//p' ;;
*) echo "ota-uboot-env: unknown command '${1:-}'" >&2; exit 1 ;;
esac
