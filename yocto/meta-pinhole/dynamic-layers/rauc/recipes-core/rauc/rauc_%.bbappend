# pinhole-ota-commit.service (recipe pinhole-ota) marks the booted slot good only after
# boot-complete.target; meta-rauc's rauc-mark-good.service would do it unconditionally, so it
# stays installed but disabled (pinhole distro only).
SYSTEMD_AUTO_ENABLE:${PN}-mark-good:pinhole-os = "disable"
