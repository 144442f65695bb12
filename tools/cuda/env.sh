# Source this before `cargo build --features cuda` on a machine without a system CUDA toolkit:
#   source tools/cuda/env.sh [DIR]     (DIR as given to tools/cuda/toolchain.sh)
_maxsup_cuda_root=${1:-${MAXSUP_CUDA_DIR:-$HOME/.cache/maxsup-cuda}}/root
export CUDA_HOME=$_maxsup_cuda_root CUDA_PATH=$_maxsup_cuda_root CUDA_ROOT=$_maxsup_cuda_root
export CUDA_TOOLKIT_ROOT_DIR=$_maxsup_cuda_root
export PATH=$_maxsup_cuda_root/bin:$PATH
export NVCC=$_maxsup_cuda_root/bin/nvcc
# No GPU to ask: the target is compute capability 9.0 (H100/H200) unless set.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=$_maxsup_cuda_root/lib64:$_maxsup_cuda_root/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
unset _maxsup_cuda_root
