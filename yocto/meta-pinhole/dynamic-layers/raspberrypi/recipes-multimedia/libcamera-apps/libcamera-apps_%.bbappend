# rpicam-vid on the Raspberry Pi 5, which has no H.264 encoder: board/rpi5/pinhole.toml runs
# `rpicam-vid --codec libav --libav-video-codec libx264`, which needs rpicam-apps built with libav
# (meta-raspberrypi's PACKAGECONFIG[libav]; ffmpeg with x264: recipes-multimedia/ffmpeg; the
# commercial licence flags of ffmpeg and x264 are accepted in yocto/kas/raspberrypi5.yml).
# tests/e2e/test_yocto.py checks every option a board's pinhole.toml uses against the parse.
PACKAGECONFIG:append:raspberrypi5 = " libav"
