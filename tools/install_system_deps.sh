#!/usr/bin/env bash
# Install the Debian packages for headless MuJoCo rendering (EGL and OSMesa) when missing.
set -euo pipefail
if ldconfig -p | grep -q "libEGL.so.1" && ldconfig -p | grep -q "libOSMesa.so"; then
  exit 0
fi
packages="libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libosmesa6"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing headless OpenGL packages: $packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
else
  echo "warning: headless OpenGL libraries missing; install them with:" >&2
  echo "  sudo apt-get install $packages" >&2
fi
