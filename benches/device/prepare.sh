#!/usr/bin/env bash
# Builds, on this machine, everything the GPU machine run needs, into .devbin/ (git-ignored),
# and downloads Debian's Vulkan loader into .gl/. Then, through the `device` tool:
#   run  command: bash benches/device/run.sh     carry: [".gl", ".devbin"]
# It batches every GPU measurement into one call (device time is scarce). See
# docs/PERFORMANCE.md for what each output feeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >> .git/info/exclude
rm -rf .devbin && mkdir -p .devbin/lib
cargo bench --no-run --bench vulkan_matmul --bench hybrid_sweep --bench hybrid_mixed 2>&1 | tee /tmp/devbin.log \
  | grep -E '^(error|warning)' || true
for b in vulkan_matmul hybrid_sweep hybrid_mixed; do
  exe=$(grep -o "target/release/deps/$b-[0-9a-f]*" /tmp/devbin.log | tail -n 1)
  cp "$exe" ".devbin/$b"
done
bash .ci/build-install >/dev/null
cp -L build/prefix/lib/libnpuhybrid.so.1 .devbin/lib/
for e in workload embed generate; do
  [ -x "build/examples/$e" ] && cp "build/examples/$e" .devbin/
done
[ -d tests/data/tiny_llama ] && cp -r tests/data/tiny_llama .devbin/
strip .devbin/* .devbin/lib/* 2>/dev/null || true
# The NVIDIA Vulkan driver (libGLX_nvidia) needs glvnd (libGLdispatch, libGLX, libEGL...),
# which the images lack: without them its vk_icdGetInstanceProcAddr returns no vkCreateInstance
# and the loader reports "Unable to find a Vulkan driver" (seen on the H100 image, 2026-12-07).
gl_debs="libvulkan1 libglvnd0 libegl1 libopengl0 libgl1 libglx0 libgles2"
if ! ls .gl/libvulkan1_*.deb .gl/libglx0_*.deb .gl/libegl1_*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update -qq && (cd .gl && apt-get $o download $gl_debs)
fi
du -sh .devbin .gl
