# nooelint: oelint.var.bbclassextend
# (line 1 suppresses the file-wide finding) a program for the device only, no native variant.
SUMMARY = "Cloudflare Tunnel client, built from source"
DESCRIPTION = "cloudflared connects the camera to Cloudflare's edge so the owner reaches \
               pinhole from anywhere behind Cloudflare Access. Built from the tagged source \
               with its vendored Go modules (no prebuilt binary, no module download). The unit \
               is pinhole's own (systemd/cloudflared.service, package pinhole-cloudflared)."
HOMEPAGE = "https://github.com/cloudflare/cloudflared"
BUGTRACKER = "https://github.com/cloudflare/cloudflared/issues"
SECTION = "net"
CVE_PRODUCT = "cloudflare:cloudflared"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=175792518e4ac015ab6696d16c4f607e"

# Tag 2026.8.2.
SRC_URI = "git://github.com/cloudflare/cloudflared.git;protocol=https;branch=master;destsuffix=${GO_SRCURI_DESTSUFFIX}"
SRCREV = "733bfb939963e150dcf5c4faddb1603f744fbc98"

GO_IMPORT = "github.com/cloudflare/cloudflared"
GO_INSTALL = "${GO_IMPORT}/cmd/cloudflared"
# The repository vendors every module (vendor/modules.txt): build from it, fetch nothing.
GOBUILDFLAGS:append = " -mod=vendor"
# What `cloudflared --version` prints, as upstream's Makefile sets it; the updater is off in
# the unit (--no-autoupdate) and says the package manager owns updates.
GO_EXTRA_LDFLAGS = "-X main.Version=${PV} \
                    -X github.com/cloudflare/cloudflared/cmd/cloudflared/updater.BuiltForPackageManager=yocto"

inherit go-mod

# Only the program: no Go sources in the image. go_do_install put them under ${libdir}/go, the only
# thing in ${libdir}: an empty ${libdir} left behind is installed-but-not-shipped (do_package).
do_install:append() {
    rm -rf ${D}${libdir}/go
    rmdir --ignore-fail-on-non-empty ${D}${libdir}
}
