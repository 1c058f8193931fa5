#pragma once
// Everything in optim/: optimizers, gradient clipping and learning-rate schedules.
#include "adagrad.hpp"
#include "adam.hpp"
#include "clip.hpp"
#include "optimizer.hpp"
#include "rmsprop.hpp"
#include "schedule.hpp"
#include "sgd.hpp"
