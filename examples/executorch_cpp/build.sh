#!/bin/sh
# Builds mobilevt_pte_run against the ExecuTorch runtime inside the installed executorch
# wheel: the runtime, its optimized and quantized CPU kernels and the XNNPACK backend (the
# kernel and backend libraries register themselves when loaded, hence --no-as-needed).
# Usage: build.sh [OUTPUT] (default ./mobilevt_pte_run); PYTHON selects the interpreter.
set -eu
here=$(dirname "$0")
output=${1:-mobilevt_pte_run}
et=$(${PYTHON:-python3} -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('executorch').submodule_search_locations[0] + '/'))")
${CXX:-g++} -std=c++20 -O2 -DC10_USING_CUSTOM_GENERATED_MACROS "$here/mobilevt_pte_run.cpp" -o "$output" \
  -isystem "$et/include" -isystem "$et/include/executorch/runtime/core/portable_type/c10" \
  -L"$et/lib" -Wl,-rpath,"$et/lib" -Wl,--no-as-needed \
  -lexecutorch -lexecutorch_kernels_optimized -lexecutorch_kernels_quantized -lexecutorch_backend_xnnpack \
  -lexecutorch_threadpool
