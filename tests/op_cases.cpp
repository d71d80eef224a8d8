#include "tests/op_cases.h"

#include "core/ops.h"

namespace emonext::test {

const std::vector<OpCase>& op_cases() {
  using V = const std::vector<Tensor>&;
  static const std::vector<OpCase> cases = {
      {"add", [](V x) { return add(x[0], x[1]); }},
      {"add_broadcast_both", [](V x) { return x[0] + x[1]; }},
      {"sub", [](V x) { return sub(x[0], x[1]); }},
      {"mul", [](V x) { return mul(x[0], x[1]); }},
      {"div", [](V x) { return div(x[0], x[1]); }},
      {"pow", [](V x) { return pow(x[0], x[1]); }},
      {"maximum", [](V x) { return maximum(x[0], x[1]); }},
      {"add_scalar", [](V x) { return add(x[0], 1.5); }},
      {"mul_scalar", [](V x) { return mul(x[0], -2.5); }},
      {"pow_scalar", [](V x) { return pow(x[0], 2.5); }},
      {"neg", [](V x) { return neg(x[0]); }},
      {"exp", [](V x) { return exp(x[0]); }},
      {"log", [](V x) { return log(x[0]); }},
      {"sqrt", [](V x) { return sqrt(x[0]); }},
      {"relu", [](V x) { return relu(x[0]); }},
      {"sigmoid", [](V x) { return sigmoid(x[0]); }},
      {"where", [](V x) { return where(x[0], x[1], x[2]); }},
      {"sum_all", [](V x) { return sum(x[0]); }},
      {"sum_dim", [](V x) { return sum(x[0], {1}); }},
      {"sum_dims_keepdim", [](V x) { return sum(x[0], {0, 2}, true); }},
      {"mean_dim", [](V x) { return mean(x[0], {-1}); }},
      {"max_dim", [](V x) { return max(x[0], {-1}); }},
      {"max_all", [](V x) { return max(x[0]); }},
      {"matmul", [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_batched", [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_broadcast", [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_transposed", [](V x) { return matmul(x[0].transpose(0, 1), x[1].transpose(0, 1)); }},
      {"linear", [](V x) { return linear(x[0], x[1], x[2]); }},
      {"softmax", [](V x) { return softmax(x[0]); }},
      {"log_softmax", [](V x) { return log_softmax(x[0]); }},
      {"cross_entropy", [](V x) { return cross_entropy(x[0], x[1], 0.2); }},
      {"cross_entropy_plain", [](V x) { return cross_entropy(x[0], x[1]); }},
      {"concat", [](V x) { return concat({x[0], x[1], x[2]}, 1); }},
      {"index_select", [](V x) { return index_select(x[0], 0, x[1]); }},
      {"index_select_inner", [](V x) { return index_select(x[0], 1, x[1]); }},
      {"permute_reshape", [](V x) { return mul(x[0].permute({2, 0, 1}).reshape({4, 6}), 1.0); }},
      {"slice", [](V x) { return mul(x[0].slice(0, 1, 4).slice(1, 0, 6, 2), 1.0); }},
      {"expand", [](V x) { return mul(x[0].expand({2, 3, 4}), 1.0); }},
      {"layer_norm", [](V x) { return layer_norm(x[0], x[1], x[2], 1e-6); }},
      {"layer_norm_odd", [](V x) { return layer_norm(x[0], x[1], x[2], 1e-5); }},
      {"gelu", [](V x) { return gelu(x[0]); }},
      {"gelu_tanh", [](V x) { return gelu(x[0], GeluApprox::Tanh); }},
      {"bias_gelu", [](V x) { return bias_gelu(x[0], x[1]); }},
      {"bias_gelu_tanh", [](V x) { return bias_gelu(x[0], x[1], GeluApprox::Tanh); }},
      {"dwconv7", [](V x) { return depthwise_conv2d(x[0], x[1], x[2]); }},
      {"dwconv7_small_map", [](V x) { return depthwise_conv2d(x[0], x[1], x[2]); }},
      {"dwconv3_no_bias", [](V x) { return depthwise_conv2d(x[0], x[1]); }},
      {"global_avg_pool", [](V x) { return global_avg_pool(x[0]); }},
      {"se_gate", [](V x) { return se_gate(x[0], x[1]); }},
      {"layer_scale_residual", [](V x) { return layer_scale_residual(x[0], x[1], x[2], x[3]); }},
      {"layer_scale_residual_drop", [](V x) {  // make_op_fixtures.py's DROP_U: images 0 and 2 kept, 1 dropped
         const Tensor u = Tensor::from_vector({0.1, 0.95, 0.5}, {3}, DType::F32, x[0].device());
         return layer_scale_residual(x[0], x[1], x[2], x[3], u, 0.8);
       }},
      {"conv2d_stn", [](V x) { return conv2d(x[0], x[1], x[2], 1, 0); }},
      {"conv2d_stride_pad", [](V x) { return conv2d(x[0], x[1], x[2], 2, 1); }},
      {"conv2d_patchify", [](V x) { return conv2d(x[0], x[1], Tensor(), 4, 0); }},
      {"max_pool2", [](V x) { return max_pool2d(x[0], 2); }},
      {"max_pool3_stride2", [](V x) { return max_pool2d(x[0], 3, 2); }},
      {"batch_norm_train", [](V x) {
         Tensor rm = Tensor::zeros({6}, x[0].dtype(), x[0].device()), rv = Tensor::ones({6}, x[0].dtype(), x[0].device());
         return batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5);
       }},
      {"batch_norm_eval", [](V x) {  // the running statistics of make_op_fixtures.py's BN_MEAN, BN_VAR
         std::vector<double> m, v;
         for (int c = 0; c < 6; ++c) {
           m.push_back(c * 0.1 - 0.2);
           v.push_back(c * 0.25 + 0.5);
         }
         Tensor rm = Tensor::from_vector(m, {6}, x[0].dtype(), x[0].device()), rv = Tensor::from_vector(v, {6}, x[0].dtype(), x[0].device());
         return batch_norm(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5);
       }},
      {"affine_grid", [](V x) { return affine_grid(x[0], 5, 7, true); }},
      {"affine_grid_no_align", [](V x) { return affine_grid(x[0], 4, 3, false); }},
      {"grid_sample", [](V x) { return grid_sample(x[0], x[1], true); }},
      {"grid_sample_no_align", [](V x) { return grid_sample(x[0], x[1], false); }},
      {"stn_sample", [](V x) { return grid_sample(x[0], affine_grid(x[1], 6, 6, true), true); }},
      {"conv2d_patchify_ragged", [](V x) { return conv2d(x[0], x[1], x[2], 4, 0); }},
      {"gelu_mlp_tanh", [](V x) { return gelu_mlp(x[0], x[1], x[2], x[3], GeluApprox::Tanh, true); }},
  };
  return cases;
}

std::string fixture_path(const std::string& file) { return std::string(EMONEXT_TEST_FIXTURES) + "/" + file; }

const SafeTensors& op_fixtures() {
  static const SafeTensors f = load_safetensors(fixture_path("ops.safetensors"));
  return f;
}

}  // namespace emonext::test
