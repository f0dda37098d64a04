#!/usr/bin/env bash
# Generate and install the dexwm_ros ROS 2 interfaces (msg/srv/action) into the virtual
# environment, against the ROS 2 PyPI wheels (no system ROS needed). Called by `make`.
#   tools/build_interfaces.sh VENV
# The C libraries go to VENV/lib (which the ROS wheels already put on LD_LIBRARY_PATH), the
# generated Python modules to VENV/lib/dexwm_ros_interfaces (added to sys.path by a .pth file)
# so that they merge with the pip-installed dexwm_ros sources instead of replacing them.
set -euo pipefail
venv=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# The wheels' exported CMake targets name include paths of the machine that built them.
py_include=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_include=$("$py" -c "import numpy; print(numpy.get_include())")
{ grep -rl "/opt/python/cp311-cp311" --include="*.cmake" "$venv/share" 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" "$f"
done

# CMake refuses exported include paths inside the source tree, and .venv lives in the repo:
# configure from a staged copy of the interface sources instead.
stage="$repo/build/interfaces-src"
rm -rf "$stage" && mkdir -p "$stage"
cp -r "$repo/package.xml" "$repo/CMakeLists.txt" "$repo/msg" "$repo/srv" "$repo/action" "$stage/"
mkdir -p "$repo/build/interfaces"
cd "$repo/build/interfaces"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cmake "$stage" -DDEXWM_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$venv" -DPYTHON_INSTALL_DIR=lib/dexwm_ros_interfaces \
  -DPython3_EXECUTABLE="$py" > cmake.log 2>&1 || { cat cmake.log; exit 1; }
make -j"$(nproc)" install > make.log 2>&1 || { tail -50 make.log; exit 1; }
# Emptied: the source package's __init__ (pkgutil.extend_path) merges this directory into it.
: > "$venv/lib/dexwm_ros_interfaces/dexwm_ros/__init__.py"
echo "$venv/lib/dexwm_ros_interfaces" > "$site/zz_dexwm_ros_interfaces.pth"
echo "dexwm_ros interfaces installed into $venv"
