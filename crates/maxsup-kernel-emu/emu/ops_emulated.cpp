// The kernels of maxsup-ops, compiled for the host emulation: <cuda_bf16.h> resolves to the
// stand-in next to this file.
#include "../../maxsup-ops/kernels/ops.cu"
