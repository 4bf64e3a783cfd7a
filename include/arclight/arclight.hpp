// The umbrella header: the whole CPU framework (tensor, autograd, ops). Later layers (nn, models, optim,
// data, io, retrieval) have their own umbrella headers next to this one.
#pragma once

#include "arclight/autograd/gradcheck.hpp"
#include "arclight/core/tensor.hpp"
#include "arclight/ops/elementwise.hpp"
#include "arclight/ops/index.hpp"
#include "arclight/ops/join.hpp"
#include "arclight/ops/linalg.hpp"
#include "arclight/ops/normalize.hpp"
#include "arclight/ops/reduce.hpp"
#include "arclight/ops/softmax.hpp"
#include "arclight/ops/view.hpp"
#include "arclight/version.hpp"
