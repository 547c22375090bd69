# WebKitGTK, the engine nearest Safari that runs here (tests/e2e/test_webkit.py, bench/latency
# ENGINES=webkit): WebKitWebDriver (webkit2gtk-driver, which brings libwebkit2gtk), an X server
# for it (Xvfb: WebKitGTK has no headless mode of its own), GStreamer's libav plugin (WebKit's
# media player decodes H.264 through it) and its MSE/fMP4 elements (plugins-base/good/bad).
# The WebDriver client, selenium, comes from tests/requirements.txt (pip, into tests/.venv).
if wants e2e; then
  local deb
  for deb in webkit2gtk-driver xvfb xauth gstreamer1.0-libav gstreamer1.0-plugins-base \
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad; do
    deb_installed "$deb" || pkgs+=("$deb")
  done
fi
