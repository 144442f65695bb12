#!/usr/bin/env bash
# Prepares a CUDA 13.0 toolchain without a GPU or a system toolkit: NVIDIA's PyPI wheels in a venv,
# assembled into a toolkit-shaped folder (bin, include, lib64, nvvm), plus a link-time stub of the
# driver library (libcuda.so.1 comes with the driver on the GPU machine; no wheel ships it).
#
# Why CUDA 13.0 exactly: the GPU machine's driver (580) is CUDA 13.0 and cannot load PTX from a
# newer nvcc, and candle 0.11.1 pins cudarc's bindings to a version we select with
# CUDARC_CUDA_VERSION=13000. Idempotent: a second run only re-checks.
#
# Usage: bash tools/cuda/toolchain.sh [DIR]   (default: ${MAXSUP_CUDA_DIR:-$HOME/.cache/maxsup-cuda})
# Then:  source tools/cuda/env.sh [DIR]
set -euo pipefail
dir=${1:-${MAXSUP_CUDA_DIR:-$HOME/.cache/maxsup-cuda}}
venv=$dir/venv
root=$dir/root
here=$(cd "$(dirname "$0")" && pwd)

wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14 nvidia-cudnn-cu13==9.13.0.50
  nvidia-nccl-cu13==2.28.3
)

mkdir -p "$dir"
if [ ! -x "$venv/bin/pip" ]; then python3 -m venv "$venv"; fi
stamp=$dir/.wheels
if [ "$(cat "$stamp" 2>/dev/null)" != "${wheels[*]}" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check "${wheels[@]}"
  echo "${wheels[*]}" > "$stamp"
fi

sp=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia
cu=$sp/cu13
rm -rf "$root"
mkdir -p "$root/lib64/stubs" "$root/include"
ln -s "$cu/bin" "$root/bin"
ln -s "$cu/nvvm" "$root/nvvm"
for f in "$cu"/include/* "$sp"/cudnn/include/* "$sp"/nccl/include/*; do ln -sf "$f" "$root/include/"; done
for f in "$cu"/lib/* "$sp"/cudnn/lib/* "$sp"/nccl/lib/*; do ln -sf "$f" "$root/lib64/"; done
( cd "$root/lib64"
  for so in libcudart.so.13 libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libnccl.so.2; do
    [ -e "$so" ] || { echo "toolchain: $so missing from the wheels in $venv" >&2; exit 1; }
    ln -sf "$so" "${so%%.so*}.so"
  done )
ln -s lib64 "$root/lib"

# The driver stub: every cu* entry point cudarc's bindings can reference, each returning
# CUDA_ERROR_UNKNOWN. It is only linked against; at run time the real driver's libcuda.so.1 binds.
# Not yet in the registry on a fresh machine (the default build does not use cudarc): `ls` then
# fails, which pipefail would turn into a silent exit of the whole script.
cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | tail -1 || true)
if [ -z "$cudarc_src" ]; then
  (cd "$here/../.." && cargo fetch -q)
  cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 | tail -1)
fi
grep -ohE '^\s+(pub )?fn (cu[A-Za-z0-9_]+)\(' "$cudarc_src/src/driver/sys/mod.rs" \
  | sed -E 's/^\s+(pub )?fn ([A-Za-z0-9_]+)\(/\2/' | sort -u \
  | awk '{print "int " $1 "(void){return 999;}"}' > "$root/lib64/stubs/libcuda_stub.c"
gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$root/lib64/stubs/libcuda.so" "$root/lib64/stubs/libcuda_stub.c"
# A loadable copy under the driver's soname, for starting CUDA builds on this machine (they then
# report that no CUDA device is present).
mkdir -p "$root/fake-driver"
ln -sf ../lib64/stubs/libcuda.so "$root/fake-driver/libcuda.so.1"
echo "CUDA toolchain ready in $root ($("$root/bin/nvcc" --version | grep -o 'release [0-9.]*'), $(wc -l < "$root/lib64/stubs/libcuda_stub.c") driver symbols stubbed)"
