#pragma once
// Shared by the dist suites: the process's MPI world (made in main.cpp).
#include <unroll/dist/context.hpp>

namespace dist_support {
extern unroll::dist::Context* g_context;
inline const unroll::dist::Context& ctx() { return *g_context; }
}  // namespace dist_support
