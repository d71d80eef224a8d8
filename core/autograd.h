// Reverse-mode automatic differentiation, define-by-run.
//
// Each differentiable op that sees an input requiring grad (in grad mode)
// records a Node on its output: the backward function, a closure over what it
// saved, and one edge per input to the Node that produced that input (or to
// the leaf's accumulator). backward() walks the graph in reverse topological
// order, sums the gradients that reach each Node, and frees each Node's saved
// tensors and edges once it has run. Backward functions run in no-grad mode
// and are written with the forward ops, so they run on any backend.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace emonext {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;                         // the op, for errors and debugging
  BackwardFn backward;                      // null once run (the graph is freed)
  std::vector<std::shared_ptr<Node>> next;  // one per input; null where the input needs no grad
  bool accumulator = false;                 // a leaf's accumulator: adds into the leaf's .grad
  std::weak_ptr<TensorImpl> leaf;           // the leaf, for an accumulator
};

bool grad_enabled();

// Turns gradient recording off for its lifetime (for evaluation, optimizer steps, backward itself).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when an op on these inputs must record a Node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches a Node named `name` to `out` whose backward maps out's gradient to
// one gradient per input (an undefined Tensor where there is none). Does
// nothing when no input needs grad or grad mode is off. Returns out.
Tensor record(Tensor out, const char* name, const std::vector<Tensor>& inputs, BackwardFn backward);

// Runs backward from root with the given gradient (same shape as root).
void run_backward(const Tensor& root, const Tensor& grad);

// While it lives, every backward on this thread calls `ready(leaf)` as soon as a leaf's
// gradient for that backward is in its .grad (its accumulator has run: nothing more will
// be added to it in this backward), in the backward's order. A data-parallel step starts
// summing a bucket of gradients over the ranks with it while the backward goes on.
class LeafGradReady {
 public:
  explicit LeafGradReady(std::function<void(const Tensor& leaf)> ready);
  ~LeafGradReady();
  LeafGradReady(const LeafGradReady&) = delete;
  LeafGradReady& operator=(const LeafGradReady&) = delete;

 private:
  std::function<void(const Tensor&)> previous_;
};

}  // namespace emonext
