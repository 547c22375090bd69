# libx264 inside libavcodec for rpicam-vid's libav encoder on the Raspberry Pi 5
# (dynamic-layers/raspberrypi/recipes-multimedia/libcamera-apps); x264 is GPL, so ffmpeg is built
# with --enable-gpl there. Other machines keep OE-core's ffmpeg as it is.
PACKAGECONFIG:append:raspberrypi5 = " x264 gpl"
