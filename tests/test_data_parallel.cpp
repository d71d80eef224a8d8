// Data-parallel training under mpirun, on this machine's CPU: 2 ranks of one OpenMP
// thread each against one process. Each test skips, saying why, in a build without MPI
// (-DEMONEXT_MPI=OFF) or where mpirun is missing.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/device.h"
#include "core/dist.h"
#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"
#include "train/data.h"

namespace emonext::test {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_MPI()                                                                                                  \
  if (!dist::built_with_mpi()) GTEST_SKIP() << "this build has no MPI (-DEMONEXT_MPI=OFF)";                            \
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0)                                                           \
  GTEST_SKIP() << "no mpirun (tools/setup.sh installs Debian's openmpi-bin)"

// mpirun starting `ranks` processes of one OpenMP thread each on this machine's 2 cores
// (--oversubscribe: more ranks than Open MPI counts slots), as root too (CI is root);
// LeakSanitizer off in the sanitizer build, where Open MPI's own allocations at exit
// would read as leaks.
std::string mpirun(int ranks) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np " + std::to_string(ranks) +
         " -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS=detect_leaks=0 ";
}

// emonext_train (or, with `ranks` > 0, mpirun of it): its exit code, and its output in *out.
int train(int ranks, const std::string& args, std::string* out) {
  int code = 0;
  const std::string prefix = ranks > 0 ? mpirun(ranks) : "OMP_NUM_THREADS=1 ";
  *out = run_command(prefix + EMONEXT_TRAIN + " " + args + " 2>&1", &code);
  return code;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

// An EmoNeXt-atto at 48 to start from (layer scale and the STN's head away from their
// special values, so every gradient is non-zero) and a batch of 8 images, written into d.
void write_model_and_batch(const ScratchDir& d) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  Generator gen(17);
  init_weights(model, gen);
  for (const Module::Named& t : model.named_parameters())
    if (t.name.ends_with("gamma") || t.name == "fc_loc.2.weight") t.tensor->detach().copy_(rand(t.tensor->shape(), gen, 0.1, 0.3));
  save_checkpoint(d + "/init.safetensors", model, fer2013_labels());
  const Tensor images = rand({8, 3, 48, 48}, gen), labels = Tensor::from_ints({0, 3, 5, 3, 6, 1, 2, 4}, {8});
  save_safetensors(d + "/batch.safetensors", {{"images", images}, {"labels", labels}});
  save_safetensors(d + "/first_half.safetensors", {{"images", images.slice(0, 0, 4).contiguous()}, {"labels", labels.slice(0, 0, 4).contiguous()}});
  save_safetensors(d + "/second_half.safetensors", {{"images", images.slice(0, 4, 8).contiguous()}, {"labels", labels.slice(0, 4, 8).contiguous()}});
}

// --overfit-batch on `batch` for `steps` steps, dumped to `dump`.
std::string overfit(const ScratchDir& d, const std::string& batch, int steps, const std::string& dump, double drop_path) {
  return "--overfit-batch " + d + "/" + batch + " --steps " + std::to_string(steps) + " --dump-state " + d + "/" + dump +
         " --init " + d + "/init.safetensors --drop-path " + std::to_string(drop_path) +
         " --schedule constant --lr 1e-3 --device cpu";
}

// The gradients of the spatial transformer (localization.*, fc_loc.*), and the rest.
std::pair<SafeTensors, SafeTensors> transformer_and_rest(const SafeTensors& f) {
  SafeTensors transformer, rest;
  for (const auto& [name, g] : f.tensors)
    (name.starts_with("grad.localization") || name.starts_with("grad.fc_loc") ? transformer : rest).tensors.emplace_back(name, g);
  return {transformer, rest};
}

// With --sync-batch, 2 ranks of 4 images are one process with the batch of 8: the same
// BatchNorm statistics, the same N x N attention (the keys gathered, their gradients
// returned to the rank that owns each sample), the same drop-path draws. Only the order
// of some sums differs (the gradients' sum over the ranks, the loss's parts, BatchNorm's
// statistics as two passes of per-rank sums where one process takes one pass of shifted
// sums), and the tolerances are what such rounding-level changes do to this model,
// measured: one process with nothing changed but its BatchNorm computed the synced way
// moves the backbone's gradients by up to 2e-5 of their scale and the spatial
// transformer's by up to 1.3e-4 (the gradient of the sampling grid's theta is a sum over
// every pixel that cancels to about a thousandth of its terms); 2 ranks move them by
// 5e-5 and 2.4e-4. Not synced, the transformer's are 1e-1 away (the next test). The losses
// are compared for 2 steps: AdamW's first step moves every parameter by the learning
// rate in the direction of its gradient's sign, also where the gradient is zero in exact
// arithmetic (a convolution's bias before BatchNorm, the attention key's bias) and its
// sign is rounding, and from the third step on the two runs drift apart by 1e-3 (so do
// the two BatchNorm formulas in one process).
TEST(DataParallel, TwoRanksWithSyncBatchAreOneProcessWithTheGlobalBatch) {
  REQUIRE_MPI();
  const ScratchDir d("dp_sync");
  write_model_and_batch(d);
  std::string out;
  ASSERT_EQ(train(0, overfit(d, "batch.safetensors", 2, "one.safetensors", 0.1), &out), 0) << out;
  ASSERT_EQ(train(2, overfit(d, "batch.safetensors", 2, "two.safetensors", 0.1) + " --sync-batch", &out), 0) << out;
  const SafeTensors one = load_safetensors(d + "/one.safetensors"), two = load_safetensors(d + "/two.safetensors");
  expect_rel(two.at("loss").slice(0, 0, 1), one.at("loss").slice(0, 0, 1), 1e-6, "the first step's loss");
  expect_rel(two.at("loss"), one.at("loss"), 1e-4, "the losses");
  expect_rel(two.at("logits"), one.at("logits").slice(0, 0, 4), 1e-5, "rank 0's logits");
  const auto [transformer, rest] = transformer_and_rest(one);
  const int64_t grads = expect_gradients_near(two, rest, 1e-4) + expect_gradients_near(two, transformer, 1e-3);
  EXPECT_EQ(grads, int64_t(EmoNeXt(convnext_size("atto"), 7, 48).named_parameters().size()) - 2) << "all but attention.value";
  for (const char* name : {"grad.attention.key.weight", "grad.attention.query.weight", "grad.localization.1.weight"})
    EXPECT_GT(max_abs(one.at(name)), 0) << name << " is not trivially zero";
}

// Without --sync-batch each rank's BatchNorm and attention see its own 4 images (as
// PyTorch's DDP would run the reference code), and the step's gradient is the mean of the
// two ranks' gradients: exactly the mean of two one-process runs on the two halves, and
// nothing else differs (drop path off: its draws are the global batch's, which a
// one-process run on half the batch does not draw).
TEST(DataParallel, WithoutSyncBatchTheGradientIsTheMeanOfTheRanksOwn) {
  REQUIRE_MPI();
  const ScratchDir d("dp_nosync");
  write_model_and_batch(d);
  std::string out;
  ASSERT_EQ(train(0, overfit(d, "first_half.safetensors", 1, "a.safetensors", 0), &out), 0) << out;
  ASSERT_EQ(train(0, overfit(d, "second_half.safetensors", 1, "b.safetensors", 0), &out), 0) << out;
  ASSERT_EQ(train(2, overfit(d, "batch.safetensors", 1, "two.safetensors", 0), &out), 0) << out;
  const SafeTensors a = load_safetensors(d + "/a.safetensors"), b = load_safetensors(d + "/b.safetensors"),
                    two = load_safetensors(d + "/two.safetensors");
  SafeTensors mean;
  for (const auto& [name, t] : a.tensors)
    if (name.starts_with("grad.") || name == "loss") mean.tensors.emplace_back(name, (t + b.at(name)) * 0.5);
  expect_rel(two.at("loss"), mean.at("loss"), 1e-6, "loss");
  expect_rel(two.at("logits"), a.at("logits"), 1e-6, "rank 0's logits are its half's alone");
  EXPECT_GT(expect_gradients_near(two, mean, 1e-6), 100);
  // And that is a real difference from the synced run: the BatchNorm statistics differ.
  ASSERT_EQ(train(2, overfit(d, "batch.safetensors", 1, "synced.safetensors", 0) + " --sync-batch", &out), 0) << out;
  const Tensor synced = load_safetensors(d + "/synced.safetensors").at("grad.localization.1.weight"),
               own = two.at("grad.localization.1.weight");
  EXPECT_GT(max_abs(synced - own) / max_abs(synced), 1e-3);
}

// The CUDA path of the gradients' sum: the buckets are device tensors, summed by MPI
// in place in the emulation build (its device memory is host memory) and through host
// memory on a GPU without NCCL. 2 ranks on the (emulated) GPU against 2 ranks on the CPU:
// the CUDA kernels' rounding differs from the CPU's, by the amounts the previous test
// allows for a rounding-level change.
TEST(DataParallel, TheCudaPathSumsTheGradientsAsTheCpuPath) {
  REQUIRE_MPI();
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << "); the emulation build runs this";
  const ScratchDir d("dp_cuda");
  write_model_and_batch(d);
  std::string out;
  const std::string cpu = overfit(d, "batch.safetensors", 1, "cpu.safetensors", 0.1) + " --sync-batch";
  std::string cuda = overfit(d, "batch.safetensors", 1, "cuda.safetensors", 0.1) + " --sync-batch";
  cuda.replace(cuda.find("--device cpu"), 12, "--device cuda");
  ASSERT_EQ(train(2, cpu, &out), 0) << out;
  ASSERT_EQ(train(2, cuda, &out), 0) << out;
  const SafeTensors a = load_safetensors(d + "/cpu.safetensors"), b = load_safetensors(d + "/cuda.safetensors");
  expect_rel(b.at("loss"), a.at("loss"), 1e-5, "loss");
  const auto [transformer, rest] = transformer_and_rest(a);
  EXPECT_GT(expect_gradients_near(b, rest, 1e-4) + expect_gradients_near(b, transformer, 1e-3), 100);
}

const std::string kRun = " --synthetic 96 --model atto --img-size 32 --batch 16 --device cpu --workers 1 --drop-path 0.1 --log-every 100";

// The same command twice gives the same bits (the reductions have a fixed order), and
// so does summing each gradient bucket after the backward pass instead of during it
// (--no-overlap); a run stopped and resumed on the same 2 ranks is the straight run,
// weights included. On another number of processes --resume refuses, saying why.
TEST(DataParallel, RerunsAndResumesGiveTheSameBits) {
  REQUIRE_MPI();
  const ScratchDir a("dp_run_a"), b("dp_run_b"), c("dp_run_c");
  std::string out;
  ASSERT_EQ(train(2, kRun + " --max-steps 8 --out " + a, &out), 0) << out;
  EXPECT_NE(out.find("2 ranks of 8 images each"), std::string::npos) << out;
  ASSERT_EQ(train(2, kRun + " --max-steps 8 --no-overlap --out " + b, &out), 0) << out;
  ASSERT_EQ(train(2, kRun + " --max-steps 5 --out " + c, &out), 0) << out;
  ASSERT_EQ(train(2, "--resume " + c + " --max-steps 8 --device cpu --workers 1", &out), 0) << out;
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
  const std::vector<char> steps = read_all(a + "/steps.csv");
  EXPECT_GT(steps.size(), 100u);
  EXPECT_EQ(steps, read_all(b + "/steps.csv")) << "a rerun, the buckets summed after the backward pass";
  EXPECT_EQ(steps, read_all(c + "/steps.csv")) << "stopped at 5 and resumed";
  EXPECT_EQ(read_all(a + "/last.safetensors"), read_all(b + "/last.safetensors"));
  EXPECT_EQ(read_all(a + "/last.safetensors"), read_all(c + "/last.safetensors"));
  EXPECT_EQ(train(0, "--resume " + c + " --max-steps 9 --device cpu --workers 1", &out), 1) << out;
  EXPECT_NE(out.find("the run was trained on 2 process(es) and this is 1: resume it on 2 (mpirun -np 2"), std::string::npos)
      << out;
}

// From the second step on, every bucket is summed during the backward pass, as soon as
// its last gradient is written (the first step makes the buckets, after it); --benchmark
// counts the sums. With --no-overlap, none is.
TEST(DataParallel, TheBucketsAreSummedDuringTheBackwardPass) {
  REQUIRE_MPI();
  const ScratchDir d("dp_overlap");
  for (const bool overlap : {true, false}) {
    std::string out;
    ASSERT_EQ(train(2, kRun + " --benchmark 5 --out " + d + (overlap ? "" : " --no-overlap"), &out), 0) << out;
    long buckets = 0, during = 0, sums = 0;
    const size_t at = out.find(" buckets, ");
    ASSERT_NE(at, std::string::npos) << out;
    ASSERT_EQ(std::sscanf(out.c_str() + out.rfind(" in ", at) + 4, "%ld buckets, %ld of %ld sums", &buckets, &during, &sums), 3) << out;
    EXPECT_GE(buckets, 2) << out;
    EXPECT_EQ(sums, 5 * buckets) << out;
    EXPECT_EQ(during, overlap ? 4 * buckets : 0) << out;
  }
}

// The validation and ten-crop passes are shared by the ranks, a batch each in turn, and
// their figures are one process's exactly: emonext_predict --evaluate (the same
// evaluate() as training's passes) prints the same accuracy, loss and confusion matrix
// on 1, 2 and 3 ranks.
TEST(DataParallel, ShardedEvaluationPrintsOneProcesssFigures) {
  REQUIRE_MPI();
  REQUIRE_FER2013();
  const ScratchDir d("dp_eval");
  write_model_and_batch(d);
  // The figures' lines without the speed.
  auto figures = [&](int ranks) {
    int code = 0;
    const std::string cmd = (ranks > 0 ? mpirun(ranks) : "") + EMONEXT_PREDICT + " --weights " + d +
                            "/init.safetensors --device cpu --evaluate " + fer2013_dir() + "/val 2>&1";
    const std::string out = run_command(cmd, &code);
    EXPECT_EQ(code, 0) << out;
    std::string said = out;  // without "; 1234.5 images/s"
    const size_t speed = said.find(" images/s"), start = said.rfind("; ", speed);
    if (speed != std::string::npos && start != std::string::npos) said.erase(start, speed + 9 - start);
    return said;
  };
  const std::string one = figures(0);
  EXPECT_NE(one.find("3589 images, accuracy"), std::string::npos) << one;
  EXPECT_EQ(figures(2), one);
  EXPECT_EQ(figures(3), one);
}

// --help under mpirun: rank 0 alone prints the options, and every rank finalises MPI
// before its exit, so the job ends with 0 (mpirun fails a job whose rank exits without).
TEST(DataParallel, HelpUnderMpirunPrintsOnceAndEndsTheJob) {
  REQUIRE_MPI();
  std::string out;
  EXPECT_EQ(train(2, "--help", &out), 0) << out;
  EXPECT_EQ(occurrences(out, "usage: emonext_train"), 1u) << out;
  EXPECT_NE(out.find("--sync-batch"), std::string::npos) << out;
}

// A rank that dies, or stops answering, stops the run: mpirun ends every rank when one
// is killed; a rank that hangs leaves the others waiting at their next collective for
// --timeout seconds, after which they stop every rank, naming the collective.
TEST(DataParallel, ARankThatDiesOrHangsStopsEveryRank) {
  REQUIRE_MPI();
  const ScratchDir d("dp_fail");
  for (const int sig : {SIGKILL, SIGSTOP}) {
    const std::string log = d + "/log" + std::to_string(sig);
    const std::string cmd = mpirun(2) + EMONEXT_TRAIN + " --synthetic 2000 --model atto --img-size 32 --batch 16 --device cpu " +
                            "--workers 1 --log-every 10 --max-steps 100000 --timeout 3 --overwrite --out " + d + "/run > " +
                            log + " 2>&1";
    const pid_t launcher = fork();
    ASSERT_GE(launcher, 0);
    if (launcher == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    // Rank 1, once it has trained a few steps.
    pid_t rank1 = -1;
    for (int i = 0; i < 600 && rank1 < 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::vector<char> text = read_all(log);
      if (std::string(text.begin(), text.end()).find("step 20 ") == std::string::npos) continue;
      for (const fs::directory_entry& e : fs::directory_iterator("/proc")) {
        const std::vector<char> env = read_all(e.path().string() + "/environ");
        const std::vector<char> argv = read_all(e.path().string() + "/cmdline");
        const std::string a(argv.begin(), argv.end()), v(env.begin(), env.end());
        if (a.find("emonext_train") != std::string::npos && a.find(d.path()) != std::string::npos &&
            v.find(std::string("OMPI_COMM_WORLD_RANK=1") + '\0') != std::string::npos)
          rank1 = pid_t(std::stol(e.path().filename().string()));
      }
    }
    ASSERT_GT(rank1, 0) << std::string(read_all(log).begin(), read_all(log).end());
    const auto t0 = std::chrono::steady_clock::now();
    kill(rank1, sig);
    int status = 0;
    bool ended = false;
    while (!ended && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
      ended = waitpid(launcher, &status, WNOHANG) == launcher;
      if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!ended) {  // a hang: clean up, then fail
      kill(-launcher, SIGKILL);
      kill(rank1, SIGKILL);
      waitpid(launcher, &status, 0);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::vector<char> text = read_all(log);
    const std::string said(text.begin(), text.end());
    ASSERT_TRUE(ended) << "signal " << sig << ": the run did not stop within 30 s\n" << said;
    EXPECT_NE(WEXITSTATUS(status), 0) << said;
    if (sig == SIGKILL) {
      EXPECT_LT(seconds, 10) << said;
      EXPECT_NE(said.find("process rank 1"), std::string::npos) << said;
    } else {
      EXPECT_GE(seconds, 2.5) << said;
      EXPECT_LT(seconds, 15) << said;
      EXPECT_NE(said.find("waited 3 s for the other ranks (--timeout); a rank has stopped or hangs. Stopping every rank"),
                std::string::npos)
          << said;
    }
  }
}

}  // namespace
}  // namespace emonext::test
