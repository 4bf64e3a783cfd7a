// CUDA emulation for the tests (tests/cuda_emu): the REAL kernels of kernels/cuda/elementwise.cuh, conv_blocks.cuh,
// pooling.cuh, depthwise.cuh, random.cuh, optim.cuh, schedule.cuh, gem.cuh, cross_entropy.cuh, amp.cuh and search.cuh
// (its cuBLAS SGEMM served by the host BLAS through shim/cublas_v2.h) (their launches mechanically rewritten by transform.py into the build's
// gen/ folder), run by the fiber shim shim/cuda_runtime.h.
#include <cuda_runtime.h>

#include "kernels/cuda/launchers.hpp"
#include "kernels/cuda/launchers_ops.hpp"
#include "kernels/cuda/common.cuh"
#include "elementwise.cuh"
#include "conv_blocks.cuh"
#include "pooling.cuh"
#include "depthwise.cuh"
#include "random.cuh"
#include "optim.cuh"
#include "schedule.cuh"
#include "gem.cuh"
#include "cross_entropy.cuh"
#include "amp.cuh"
#include "search.cuh"

// x86-64 SysV context switch: saves the callee-saved registers on the current stack, stores rsp in *save_sp,
// switches to load_sp and pops the registers saved there (or the initial frame of a new fiber).
asm(R"(
.text
.globl emu_ctx_switch
.type emu_ctx_switch,@function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_ctx_switch, .-emu_ctx_switch
.section .note.GNU-stack,"",@progbits
.text
)");
