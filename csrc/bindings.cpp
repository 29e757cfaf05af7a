// The pybind11 module mamext._C: build information and the CPU capability
// query and override. Importing it also registers the torch operators
// (csrc/mamext.cpp and csrc/ops/).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "common/cpu_dispatch.h"
#include "common/mam_semantics.h"

#ifndef MAMEXT_VERSION
#define MAMEXT_VERSION "unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "mamext native extension: MAM operators (registered in torch.ops.mamext) and build info";
  m.def("cpu_capability", [] { return std::string(mamext::cpu::capability_name(mamext::cpu::active_capability())); },
        "The CPU kernel level in use (one of build_info['isa_levels']: default, avx2, avx512 on x86-64; "
        "default, neon on aarch64).");
  m.def("detected_cpu_capability",
        [] { return std::string(mamext::cpu::capability_name(mamext::cpu::detected_capability())); },
        "The best kernel level this CPU supports.");
  m.def(
      "_set_cpu_capability",
      [](const std::string& name) {
        try {
          mamext::cpu::set_capability(mamext::cpu::parse_capability(name.c_str()));
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "Force a CPU kernel level no higher than the detected one (tests, benchmarks).");
  py::dict info;
  info["version"] = MAMEXT_VERSION;
#ifdef MAMEXT_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["compiler"] = __VERSION__;
#ifdef _OPENMP
  info["openmp"] = true;  // at::parallel_for really runs in parallel
#else
  info["openmp"] = false;
#endif
  // The CPU kernel levels compiled in, lowest first (CMakeLists.txt).
  py::tuple levels(py::str(mamext::cpu::isa_levels()).attr("split")(","));
  info["isa_levels"] = levels;
  info["cpu_kernels"] = levels;
  // int32 sums of int8 products stay exact up to this many terms.
  info["int8_sum_max_terms"] = static_cast<long long>(MAMEXT_INT8_SUM_MAX_TERMS);
  m.attr("build_info") = info;
}
