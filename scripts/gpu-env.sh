# Sourced by the scripts that run prebuilt CUDA binaries on a GPU machine (gpu-check.sh,
# gpu-tables.sh): sets `py` to the interpreter with PyTorch (PYTHON, else /opt/torch/.venv's,
# else python3) and puts the CUDA libraries of PyTorch's wheels (site-packages/nvidia/*/lib:
# cudart, cuBLAS, cuRAND, cuDNN, NCCL) on LD_LIBRARY_PATH, since the toolchain does not travel.
py=${PYTHON:-}
[ -n "$py" ] || { [ -x /opt/torch/.venv/bin/python3 ] && py=/opt/torch/.venv/bin/python3 || py=python3; }
cuda_libs=$("$py" - <<'PY'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "nvidia", "*", "lib", "*.so*"))})
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
