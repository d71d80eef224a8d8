#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"

namespace emonext {

namespace {
thread_local bool g_grad_enabled = true;
thread_local std::function<void(const Tensor&)> g_leaf_ready;

// The Node that receives the gradient of t, creating a leaf's accumulator on first use.
std::shared_ptr<Node> edge_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  if (t.grad_fn()) return t.grad_fn();
  TensorImpl& impl = t.impl();
  if (!impl.accumulate) {
    impl.accumulate = std::make_shared<Node>();
    impl.accumulate->name = "AccumulateGrad";
    impl.accumulate->accumulator = true;
    impl.accumulate->leaf = t.impl_ptr();
  }
  return impl.accumulate;
}

// Whether g can become a leaf's .grad as it is: nothing else holds it or its storage
// (run_backward has let go of its own copy), and it is a plain contiguous tensor
// filling its storage. Then no one can see it change, or change it.
bool can_take(const Tensor& g) {
  return g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1 && !g.requires_grad() && g.is_contiguous() &&
         g.impl().offset == 0 && size_t(g.numel()) * dtype_size(g.dtype()) == g.storage()->bytes();
}

void accumulate_into_leaf(Node& acc, const Tensor& g) {
  const std::shared_ptr<TensorImpl> leaf = acc.leaf.lock();
  if (!leaf) return;  // the leaf is gone: nobody can read its gradient
  const Tensor t(leaf);
  EMONEXT_CHECK(g.shape() == t.shape(), "backward: gradient ", shape_str(g.shape()), " does not match leaf ", t.str());
  if (t.grad().defined()) t.set_grad(add(t.grad(), g));
  // The first gradient: taken as it is when it is the backward's own fresh tensor, as
  // PyTorch's AccumulateGrad does (most are: a parameter's gradient comes out of one
  // GEMM or reduction); a copy when it may be shared with other gradients or be a view.
  else t.set_grad(can_take(g) ? g : g.detach().clone());
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
LeafGradReady::LeafGradReady(std::function<void(const Tensor&)> ready) : previous_(std::move(g_leaf_ready)) {
  g_leaf_ready = std::move(ready);
}
LeafGradReady::~LeafGradReady() { g_leaf_ready = std::move(previous_); }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(Tensor out, const char* name, const std::vector<Tensor>& inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return out;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->backward = std::move(backward);
  node->next.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next.push_back(edge_of(t));
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
  return out;
}

void run_backward(const Tensor& root, const Tensor& grad) {
  const std::shared_ptr<Node> start = edge_of(root);
  EMONEXT_CHECK(start, "backward: the tensor does not require grad");
  NoGradGuard no_grad;

  // Reverse topological order: a Node runs only after every Node that feeds it a gradient.
  // `order` owns the Nodes: freeing a Node's edges below must not destroy one still to run.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen{start.get()};
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{start, 0}};
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    if (i < node->next.size()) {
      const std::shared_ptr<Node>& child = node->next[i++];
      if (child && seen.insert(child.get()).second) stack.emplace_back(child, 0);
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  std::unordered_map<Node*, Tensor> grads{{start.get(), grad}};
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    auto found = grads.find(node);
    if (found == grads.end()) continue;
    const Tensor g = std::move(found->second);
    grads.erase(found);
    if (node->accumulator) {
      accumulate_into_leaf(*node, g);  // g is the one reference left unless something else kept it
      if (g_leaf_ready)
        if (const std::shared_ptr<TensorImpl> leaf = node->leaf.lock()) g_leaf_ready(Tensor(leaf));
      continue;
    }
    EMONEXT_CHECK(node->backward, "backward through ", node->name,
                  " a second time: its graph was freed by the first backward. Recompute the forward pass.");
    std::vector<Tensor> input_grads = node->backward(g);
    EMONEXT_CHECK(input_grads.size() == node->next.size(), "internal: ", node->name, " returned ", input_grads.size(),
                  " gradients for ", node->next.size(), " inputs");
    for (size_t k = 0; k < input_grads.size(); ++k) {
      Node* target = node->next[k].get();
      if (!target || !input_grads[k].defined()) continue;
      auto slot = grads.find(target);
      if (slot == grads.end()) grads.emplace(target, input_grads[k]);
      else slot->second = add(slot->second, input_grads[k]);  // a tensor used more than once
    }
    // Free what this Node saved, and its edges: the graph below it is no longer needed.
    node->backward = nullptr;
    node->next.clear();
  }
}

}  // namespace emonext
