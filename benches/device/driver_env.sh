# Sourced by the device scripts that run after run.sh set up the driver: the NVIDIA ICD (in
# /usr/local/nvidia on the H100 image, /usr/share on the H200 one) and our library first on
# the library path. Usage: source benches/device/driver_env.sh CACHE_DIR
export XDG_CACHE_HOME=$1 LD_LIBRARY_PATH="$PWD/.devbin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
icd=$(find /usr/local/nvidia /usr/share/vulkan /etc/vulkan /usr/local/share/vulkan -name 'nvidia_icd*.json' 2>/dev/null | head -n 1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
[ -d /usr/local/nvidia/lib64 ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
