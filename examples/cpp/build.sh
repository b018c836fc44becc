#!/bin/sh
# Builds mobilevt_run against the libtorch inside the installed torch wheel (no CMake: the
# wheel's CMake config expects CUDA on a CUDA build). Usage: build.sh [OUTPUT] (default
# ./mobilevt_run); PYTHON selects the interpreter whose torch is used (default python3).
set -eu
here=$(dirname "$0")
output=${1:-mobilevt_run}
torch_dir=$(${PYTHON:-python3} -c "import os, torch; print(os.path.dirname(torch.__file__))")
abi=$(${PYTHON:-python3} -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
${CXX:-g++} -std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI="$abi" "$here/mobilevt_run.cpp" -o "$output" \
  -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include" \
  -L"$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" -Wl,--no-as-needed -ltorch_cpu -lc10 -ltorch
