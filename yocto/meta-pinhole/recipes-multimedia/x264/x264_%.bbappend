# x264 for ffmpeg's libx264 on the Raspberry Pi 5 (recipes-multimedia/ffmpeg): OE-core builds x264's
# command-line tool with ffmpeg's libavformat input by default (PACKAGECONFIG ffmpeg), and ffmpeg
# with x264 then depends on x264 which depends on ffmpeg: bitbake stops on the circular dependency
# (found by parse-stack's `bitbake -g pinhole-image` for raspberrypi5). Only the library is used.
PACKAGECONFIG:remove:raspberrypi5 = "ffmpeg"
