// The pybind11 module mamext._C: build information and the CPU capability
// query. Importing it also registers the torch operators (TORCH_LIBRARY).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "cpu/kernels.h"

#ifndef MAMEXT_VERSION
#define MAMEXT_VERSION "unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "mamext native extension: MAM operators (registered in torch.ops.mamext) and build info";
  m.def("cpu_capability", [] { return std::string(mamext::cpu::capability_name(mamext::cpu::active_capability())); },
        "The CPU kernel level in use: 'avx512', 'avx2' or 'default' on x86-64, 'neon' or 'default' on aarch64.");
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
#if defined(__x86_64__) || defined(_M_X64)
  info["cpu_kernels"] = py::make_tuple("default", "avx2", "avx512");
#elif defined(__aarch64__)
  info["cpu_kernels"] = py::make_tuple("default", "neon");
#else
  info["cpu_kernels"] = py::make_tuple("default");
#endif
  m.attr("build_info") = info;
}
