#!/usr/bin/python3
"""A real RTSP server for pinhole's tests: GStreamer's gst-rtsp-server, serving a live
`videotestsrc ! x264enc ! rtph264pay` at rtsp://127.0.0.1:PORT/test (TCP and UDP).

Run with Debian's /usr/bin/python3 (it has `gi`; the test venv's python does not):

    /usr/bin/python3 tests/e2e/rtsp_server.py --port 8554 [--size 320x240] [--fps 30]
        [--switch-after 3 --switch-size 480x272] [--user U --password P] [--pattern snow | --file CLIP.mp4]
        [--tls-cert CERT_AND_KEY.pem]

It prints "READY" on stdout once the port listens, and runs until killed. The media is shared
between clients and kept running between them, so a reconnecting client gets frames at once.
With --switch-after S it changes the picture size after S seconds (a camera changing resolution
mid-stream: new SPS/PPS in band, same RTSP session).
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/test")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--gop", type=int, default=30, help="key-int-max of x264enc (frames)")
    ap.add_argument("--bitrate", type=int, default=800, help="kbit/s")
    ap.add_argument("--file", help="serve this MP4's H.264 track (paced in real time) instead of encoding")
    ap.add_argument("--pattern", default="ball", help="videotestsrc pattern (snow: noise that really costs bits)")
    ap.add_argument("--switch-after", type=float, default=0.0, help="seconds; 0: never")
    ap.add_argument("--switch-size", default="480x272")
    ap.add_argument("--tls-cert", help="PEM with certificate and key: serve rtsps:// (TLS) only")
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()

    Gst.init(None)
    w, h = args.size.split("x")
    launch = (
        f"( videotestsrc is-live=true pattern={args.pattern} ! "
        f"capsfilter name=caps caps=video/x-raw,width={w},height={h},framerate={args.fps}/1 ! "
        f"videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 "
        f"key-int-max={args.gop} bitrate={args.bitrate} ! "
        f"video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    if args.file:
        launch = (f"( filesrc location={args.file} ! qtdemux ! h264parse config-interval=-1 ! "
                  f"rtph264pay name=pay0 pt=96 config-interval=-1 )")
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)

    if args.tls_cert:
        # gst-rtsp-server speaks TLS to every client once its auth object has a certificate.
        auth = GstRtspServer.RTSPAuth()
        with open(args.tls_cert) as f:
            auth.set_tls_certificate(Gio.TlsCertificate.new_from_pem(f.read(), -1))
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
        auth.set_default_token(token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("anonymous", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("anonymous", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    elif args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)

    if args.switch_after > 0:
        sw, sh = args.switch_size.split("x")

        def on_configure(_factory, media):
            element = media.get_element()
            caps = element.get_by_name("caps")

            def switch():
                caps.set_property(
                    "caps", Gst.Caps.from_string(f"video/x-raw,width={sw},height={sh},framerate={args.fps}/1"))
                print(f"SWITCHED {args.switch_size}", flush=True)
                return False

            GLib.timeout_add(int(args.switch_after * 1000), switch)

        factory.connect("media-configure", on_configure)

    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server.py: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
