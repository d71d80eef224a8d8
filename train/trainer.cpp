#include "train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>
#include <unordered_set>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/base/limits.h"
#include "core/device.h"
#include "core/dist.h"
#include "core/safetensors.h"
#include "core/staging.h"
#include "core/storage.h"
#include "models/checkpoint.h"
#include "train/amp.h"
#include "train/data_parallel.h"
#include "train/evaluate.h"
#include "train/interrupt.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/run_data.h"
#include "train/run_files.h"
#include "train/run_report.h"
#include "train/step_graph.h"

namespace emonext {

namespace fs = std::filesystem;

namespace {

int64_t peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss / 1024);
}

// The model ready to train: weights initialised as the reference does, or read from
// --init; on the device; in training mode.
std::unique_ptr<EmoNeXt> make_model(const TrainConfig& c, Device dev) {
  auto model = std::make_unique<EmoNeXt>(convnext_size(c.model), c.classes, c.image_size, c.drop_path, c.backbone);
  model->set_gelu(c.gelu, c.gemm_epilogue == Switch::On);
  Generator init_gen(c.seed);
  init_weights(*model, init_gen);
  if (!c.init.empty()) {
    load_weights(*model, c.init, c);
    std::printf("initialised from %s\n", c.init.c_str());
  }
  model->to(dev);
  model->train();
  return model;
}

// How many steps the host queues before it reads their figures (StepChecks): a logging
// interval on a GPU; every step on the CPU, where they are in host memory already (no
// wait to save), and under mpirun, where the ranks agree on the loss and Ctrl-C each step.
int64_t steps_between_reads(const TrainConfig& c, Device dev) {
  return dev.is_cpu() || dist::size() > 1 ? 1 : std::min<int64_t>(c.log_every, 1000);
}

AdamW::Options adamw_options(const TrainConfig& c) {
  AdamW::Options o;
  o.weight_decay = c.weight_decay;
  o.decay_norms_and_biases = !c.exempt_norms;
  return o;
}

// What one optimiser step did, as the host learns it when it reads the device's
// records (StepChecks): the figures summed over the ranks under mpirun.
struct StepResult {
  double loss = 0, grad_norm = 0;
  int64_t correct = 0;  // the batch's images the model classified right, before the step
};

// A step queued on the device whose figures the host has not read yet: what its log
// lines need besides them.
struct QueuedStep {
  int64_t step = 0, epoch = 0, batch = 0, batches = 0, images = 0;
  double lr = 0;
};

// An epoch's running figures: mean loss, accuracy and images/s of the training batches.
struct EpochTally {
  Clock::time_point start = Clock::now();
  double loss_sum = 0;
  int64_t seen = 0, correct = 0;
  void add(const StepResult& r, int64_t images) {
    loss_sum += r.loss * double(images);
    correct += r.correct;
    seen += images;
  }
  double loss() const { return seen ? loss_sum / double(seen) : 0.0; }
  double accuracy() const { return seen ? double(correct) / double(seen) : 0.0; }
  double images_per_second() const { return double(seen) / std::max(1e-9, seconds_since(start)); }
};

// --benchmark's figures: the steady state starts after the first kSkip steps (allocation,
// cuBLAS and cuDNN plans), once the device has finished them, and ends when it has
// finished the last step.
struct BenchmarkTally {
  static constexpr int64_t kSkip = 3;
  Clock::time_point start;
  double wait_seconds = 0;
  // When the steady state begins: GPU launches, host waits, reads of the step figures and
  // seconds in the gradients' all-reduce so far.
  uint64_t launches_at_start = 0, waits_at_start = 0;
  int64_t reads_at_start = 0;
  double reduce_at_start = 0;
};

// One training run: the model and what trains it (AdamW, the EMA, the fp16 loss scaler,
// the 16-bit copy under --amp), the run's counters and its output files. train() is the
// epoch loop; step() is one batch's forward, backward and update; end_epoch() the
// validation and checkpoints that close an epoch.
class Run {
 public:
  Run(const TrainConfig& c, Device dev)
      : c_(c),
        dev_(dev),
        model_(make_model(c, dev)),
        amp_(c, *model_, dev),
        opt_(*model_, adamw_options(c)),
        checks_(dev, steps_between_reads(c, dev), c.clip, amp_.scaler, opt_),
        input_(dev),
        ema_(c.ema ? std::make_unique<Ema>(*model_, c.ema_every) : nullptr),
        schedule_{c.schedule, c.lr, c.warmup, c.cycle, 1},
        dp_gen_(amp_.runner().generator()),  // drop path draws from the model that runs the blocks
        graph_(c.cuda_graph == Switch::On && dev.is_cuda() && dist::size() == 1
                   ? std::make_unique<StepGraph>(
                         dev, dp_gen_, [this](const std::vector<Tensor>& in) { queue_step(in); },
                         [this] {
                           model_->zero_grad();
                           amp_.runner().zero_grad();
                         })
                   : nullptr),
        progress_(c.log_every),
        last_(c.out + "/last.safetensors"),
        last_state_(c.out + "/last.state.safetensors"),
        best_(c.out + "/best.safetensors") {
    dp_gen_.set_state(c.seed + 1, 0);
  }

  // Rank 0 alone writes the run's files (logs, checkpoints, report); every rank trains.
  static bool writes_files() { return dist::rank() == 0; }

  // --overfit-batch FILE --steps K --dump-state OUT: K training steps (step(), as a run
  // takes them) on one fixed batch, then the losses, the first step's logits and its
  // gradients into OUT.
  int overfit_batch() {
    EMONEXT_CHECK(c_.steps > 0 && !c_.dump_state.empty(), "--overfit-batch needs --steps K and --dump-state OUT");
    const SafeTensors f = load_safetensors(c_.overfit_batch);
    Batch b;
    b.images = f.at("images").to(DType::F32).permute({0, 2, 3, 1}).contiguous();
    b.labels = f.at("labels");
    if (dist::size() > 1) {  // the file holds the global batch: this rank's share of it
      EMONEXT_CHECK(b.labels.numel() % dist::size() == 0, "--overfit-batch: ", b.labels.numel(), " images cannot be shared by ",
                    dist::size(), " ranks");
      const int64_t share = b.labels.numel() / dist::size(), first = dist::rank() * share;
      b.images = b.images.slice(0, first, first + share).contiguous();
      b.labels = b.labels.slice(0, first, first + share).contiguous();
    }
    std::vector<double> losses;
    std::vector<std::pair<std::string, Tensor>> dump;
    schedule_.total = c_.steps;
    for (int64_t s = 0; s < c_.steps; ++s) {
      step(b, {.images = b.labels.numel() * dist::size(), .lr = lr_at(s)}, [&](const EmoNeXtOutput& out) {
        if (s > 0) return;
        dump.emplace_back("logits", out.logits.detach().to(Device::cpu()));
        for (const Module::Named& p : model_->named_parameters())
          if (p.tensor->grad().defined()) dump.emplace_back("grad." + p.name, p.tensor->grad().to(Device::cpu()));
      });
      if (checks_.pending() < checks_.capacity() && s + 1 < c_.steps) continue;
      const ReadResult read = read_steps([&](const QueuedStep& q, const StepResult& r) {
        losses.push_back(r.loss);
        std::printf("step %lld loss %.6f\n", (long long)q.step, r.loss);
      });
      if (!read.failure.empty()) return stop_non_finite(read.failure, read.failed_step);
    }
    dump.emplace_back("loss", Tensor::from_vector(losses, {int64_t(losses.size())}));
    if (writes_files()) save_safetensors(c_.dump_state, dump);  // rank 0's logits; the gradients are every rank's summed
    std::printf("wrote %s\n", c_.dump_state.c_str());
    return 0;
  }

  // The epochs (or --benchmark's steps), then the test pass when there is a test split;
  // returns the exit code (0, 1 on a non-finite loss, 130 when Ctrl-C saved and stopped).
  int train(const Splits& data, int workers) {
    open_outputs();
    if (c_.benchmark == 0 && writes_files()) report_ = std::make_unique<RunReport>(c_, dev_.str(), data.val);
    const int64_t steps_per_epoch = int64_t(data.train.samples.size()) / c_.batch;
    EMONEXT_CHECK(steps_per_epoch > 0, "the training set (", data.train.samples.size(), " images) is smaller than one batch (",
                  c_.batch, ")");
    // --benchmark STEPS runs that many steps over as many passes of its synthetic set as
    // they take, whatever --epochs and --max-steps say.
    const int64_t total_steps = c_.benchmark > 0   ? c_.benchmark
                                : c_.max_steps > 0 ? std::min(c_.max_steps, c_.epochs * steps_per_epoch)
                                                   : c_.epochs * steps_per_epoch;
    schedule_.total = total_steps;
    if (!c_.resume.empty() && c_.benchmark == 0 && resumed_run_is_over(total_steps)) return 0;
    std::optional<SigintToFlag> sigint(std::in_place);
    const auto t_start = Clock::now();
    BenchmarkTally bench;
    bool stop = false;

    for (; (st_.epoch < c_.epochs || c_.benchmark > 0) && !stop; ++st_.epoch) {
      Loader loader(data.train, c_.batch, c_.image_size, true, c_.augment, c_.seed, st_.epoch, workers, st_.batch_in_epoch, true,
                    dist::rank(), dist::size());
      EpochTally tally;
      // A step's figures once read: the epoch's tally, steps.csv, the progress line.
      const auto log_step = [&](const QueuedStep& q, const StepResult& r) {
        tally.add(r, q.images);
        if (logs_) logs_->step(q.step, r.loss, q.lr, r.grad_norm);
        const double eta = seconds_since(t_start) / double(std::max<int64_t>(1, q.step)) *
                           double(std::max<int64_t>(0, total_steps - q.step));
        progress_.step(q.epoch, q.batch, q.batches, r.loss, q.lr, tally.images_per_second(), eta, q.step);
      };
      for (Batch b = loader.next(); b.index >= 0; b = loader.next()) {
        report_unreadable(b.unreadable);
        if (b.labels.numel() == 0) continue;
        step(b, {.epoch = st_.epoch, .batch = b.index + 1, .batches = loader.batches(), .images = b.labels.numel() * dist::size(),
                 .lr = lr_at(st_.step)});
        st_.batch_in_epoch = b.index + 1;
        const bool last = c_.benchmark > 0 ? st_.step >= c_.benchmark : c_.max_steps > 0 && st_.step >= c_.max_steps;
        const bool bench_start = c_.benchmark > 0 && st_.step == BenchmarkTally::kSkip;
        // The host reads the queued steps' figures (and waits for the device) only when
        // the ring is full, a Ctrl-C or the last step asks, or the benchmark's clock starts.
        if (checks_.pending() < checks_.capacity() && !last && !bench_start && !(dist::size() == 1 && g_interrupted)) continue;
        const ReadResult read = read_steps(log_step);
        if (!read.failure.empty()) return stop_non_finite(read.failure, read.failed_step);
        if (bench_start) {
          bench.start = Clock::now();
          bench.launches_at_start = gpu_launches();
          bench.waits_at_start = gpu_host_waits();
          bench.reads_at_start = checks_.reads();
          bench.reduce_at_start = buckets_.seconds();
        }
        if (read.interrupted) {
          progress_.end_line();
          save_last();
          std::printf("interrupted at step %lld: saved %s (resume with --resume %s)\n", (long long)st_.step, last_.c_str(),
                      c_.out.c_str());
          return 130;
        }
        if (last) {
          stop = true;
          break;
        }
      }
      // The epoch's last queued steps (a Ctrl-C since is taken at the next step, as one
      // during validation is).
      const ReadResult read = read_steps(log_step);
      if (!read.failure.empty()) return stop_non_finite(read.failure, read.failed_step);
      progress_.end_line();
      bench.wait_seconds += loader.wait_seconds();
      if (c_.benchmark > 0) {  // no evaluation: the next pass, until the steps are done
        st_.batch_in_epoch = 0;
        continue;
      }
      // A run that stops on the epoch's last batch has finished the epoch: "last" then
      // resumes at the next one, not at an empty remainder of this one.
      if (!stop || st_.batch_in_epoch >= loader.batches()) st_.batch_in_epoch = 0;
      if (end_epoch(data.val, tally, loader.wait_seconds())) stop = true;
      if (stop && st_.batch_in_epoch > 0) {
        save_last();  // mid-epoch: resume continues this epoch
        break;
      }
      const int64_t keep = st_.epoch;
      ++st_.epoch;  // "last" resumes at the next epoch
      save_last();
      st_.epoch = keep;
    }
    sigint.reset();  // Ctrl-C stops the final test evaluation the usual way

    if (c_.benchmark > 0) {
      report_benchmark(bench);
      return 0;
    }
    if (data.have_test) test(data.test);
    if (!unreadable_.empty()) std::printf("%zu unreadable image(s) were skipped\n", unreadable_.size());
    std::printf("done: %lld steps in %s; best val accuracy %.4f; checkpoints and report.html (%.2f s to write in all) in %s\n",
                (long long)st_.step, duration(seconds_since(t_start)).c_str(), st_.best_accuracy, report_seconds_, c_.out.c_str());
    return 0;
  }

 private:
  // The output folder (made by check_out_folder): --resume's weights and state (one pair), then
  // config.json and the logs (RunLogs; --overwrite's removal of the old run's files).
  void open_outputs() {
    if (!c_.resume.empty()) {
      st_ = load_pair(*model_, c_.resume + "/last.safetensors", c_.resume + "/last.state.safetensors", c_, opt_, ema_.get(),
                      amp_.scaler);
      checks_.upload(st_.step);
      dp_gen_.set_state(c_.seed + 1, st_.drop_path_counter);
      std::printf("resumed from %s at step %lld (epoch %lld, batch %lld)\n", c_.resume.c_str(), (long long)st_.step,
                  (long long)st_.epoch, (long long)st_.batch_in_epoch);
    }
    if (writes_files()) logs_ = std::make_unique<RunLogs>(c_, dev_.str(), st_.step);
  }

  // A resumed run that has done what its limits allow is said so, and nothing is trained
  // (the step limit is checked after each step, so the loop would run one more).
  bool resumed_run_is_over(int64_t total_steps) const {
    if (st_.step >= total_steps) {
      std::printf("the run in %s is complete (%lld steps; --epochs %lld%s): give a larger --epochs or --max-steps to train on\n",
                  c_.resume.c_str(), (long long)st_.step, (long long)c_.epochs,
                  c_.max_steps > 0 ? (", --max-steps " + std::to_string(c_.max_steps)).c_str() : "");
      return true;
    }
    if (st_.bad_epochs >= c_.patience) {
      std::printf("the run in %s stopped early (no better validation accuracy for %lld epochs): give a larger --patience to "
                  "train on\n",
                  c_.resume.c_str(), (long long)st_.bad_epochs);
      return true;
    }
    return false;
  }

  // One training step, the one that training, --overfit-batch and --benchmark all take:
  // forward, loss, backward, the step's checks, AdamW, the EMA, all queued on the device
  // without a wait for it. The checks (StepChecks) compute the gradient norm, clipping's
  // factor, fp16's overflow check and the step's learning rate on the device, and AdamW
  // reads them there: a step whose gradients overflow under fp16 is skipped and the loss
  // scale halved (it still counts as a step), and a non-finite loss, or non-finite
  // gradients without fp16, halts every later update until the host reads the figures
  // (read_steps) and stops. `inspect`, when given, sees the outputs after the backward
  // pass, while the master's parameters hold the step's gradients. q: the step's batch
  // and learning rate (for the logs); the step's number is filled in.
  //
  // On a GPU the batch goes up through pinned buffers on a copy stream (InputStaging),
  // so the host does not wait for the device within a step; on one GPU the step's device
  // work (queue_step) is replayed as a CUDA graph from the second step on (StepGraph), and
  // this function's own host work (the labels' check, the count) runs either way.
  //
  // On several ranks (mpirun) b is this rank's share of the global batch of q.images, and
  // the loss it backs through is its part of the global batch's loss: with --sync-batch
  // emonext_loss_part (the parts add up to one process's loss), else its own samples'
  // loss over the number of ranks (their mean, as PyTorch's DDP). The master's gradients
  // are then summed over the ranks (so every rank's check sees the same norm), and so
  // are the loss, the correct count and a Ctrl-C when the step's figures are read.
  void step(const Batch& b, QueuedStep q, const std::function<void(const EmoNeXtOutput&)>& inspect = {}) {
    const int ranks = dist::size();
    for (ConvNeXt* m : {static_cast<ConvNeXt*>(model_.get()), static_cast<ConvNeXt*>(&amp_.runner())})
      m->shard = ranks == 1 ? BatchShard{} : BatchShard{dist::rank() * (q.images / ranks), q.images, c_.sync_batch};
    check_labels("training batch", b.labels, c_.classes);  // on the host: the loss does not read a GPU's labels back
    const std::vector<Tensor> in =
        c_.pinned_input ? input_.put({b.images, b.labels}) : std::vector<Tensor>{b.images.to(dev_), b.labels.to(dev_)};
    if (graph_ && !inspect) graph_->step(in);
    else queue_step(in, inspect);
    checks_.count();
    q.step = ++st_.step;
    queued_.push_back(q);
  }

  // The step's device work on the batch in = {images, labels}: queued, no wait, and no
  // host state that a later step reads is changed, so that StepGraph can capture it.
  void queue_step(const std::vector<Tensor>& in, const std::function<void(const EmoNeXtOutput&)>& inspect = {}) {
    const int ranks = dist::size();
    const Tensor &x = in[0], &y = in[1];
    const EmoNeXtOutput out = amp_.forward(x);
    const Tensor loss = ranks == 1        ? emonext_loss(out, y, c_.label_smoothing)
                        : c_.sync_batch ? emonext_loss_part(out, y, c_.label_smoothing)
                                        : emonext_loss(out, y, c_.label_smoothing) * (1.0 / ranks);
    {
      // Each bucket's sum over the ranks starts as soon as the backward pass has written
      // its gradients (under --amp the master's gradients are written after it).
      const auto overlap = ranks > 1 && !amp_.on() && c_.overlap ? buckets_.overlap() : nullptr;
      (amp_.scaler.on ? loss * checks_.loss_scale() : loss).backward();
    }
    amp_.gradients_to_master();
    if (ranks > 1) buckets_.all_reduce(*model_);
    if (inspect) inspect(out);
    checks_.check(*model_, loss, out.logits, y, schedule_);
    opt_.step(checks_.control());  // AdamW unscales and clips the gradients as it reads them, or skips
    model_->zero_grad();
    if (ema_) ema_->update(*model_, checks_.control());  // on the steps it is due, read on the device
  }

  // What read_steps found: why the run must stop ("" when it goes on) and at which step,
  // and whether Ctrl-C was pressed (on any rank).
  struct ReadResult {
    std::string failure;
    int64_t failed_step = 0;
    bool interrupted = false;
  };

  // Reads the figures of the steps queued since the last read (the host's one wait for
  // the device) and hands each step's, with its QueuedStep, to `each`, in order, until a
  // step that must stop the run (the device skipped every update after it). Under mpirun
  // the figures and a Ctrl-C are summed over the ranks first (the ring holds one step
  // there), so every rank sees the same.
  ReadResult read_steps(const std::function<void(const QueuedStep&, const StepResult&)>& each) {
    ReadResult out;
    out.interrupted = g_interrupted;
    if (checks_.pending() == 0) return out;
    const std::vector<StepRecord> records = checks_.read();
    std::vector<QueuedStep> queued;
    queued.swap(queued_);
    for (size_t i = 0; i < records.size(); ++i) {
      const StepRecord& rec = records[i];
      StepResult r{rec.loss, rec.grad_norm, rec.correct};
      if (dist::size() > 1) {
        double figures[3] = {r.loss, double(r.correct), out.interrupted ? 1.0 : 0.0};
        dist::all_reduce_sum(figures, 3, "the step's loss, accuracy and Ctrl-C");
        r.loss = figures[0];
        r.correct = int64_t(figures[1]);
        out.interrupted = figures[2] > 0;
      }
      out.failure = step_failure(rec, r.loss, queued[i].step);
      if (!out.failure.empty()) {
        out.failed_step = queued[i].step;
        return out;
      }
      each(queued[i], r);
    }
    return out;
  }

  // Why the run must stop after this step ("" when it goes on): a non-finite loss (summed
  // over the ranks), non-finite gradients without fp16, or fp16's scale past its floor.
  // An fp16 step skipped for inf/NaN gradients is said here.
  std::string step_failure(const StepRecord& rec, double loss, int64_t step) {
    if (!std::isfinite(loss) || rec.halted == kernels::kNonFiniteLoss)
      return fmt("the loss is %f", std::isfinite(loss) ? rec.loss : loss);
    if (rec.halted == kernels::kNonFiniteGradients) return "non-finite gradients";
    if (!rec.skipped) return "";
    progress_.end_line();
    std::printf("step %lld skipped: inf/NaN gradients at loss scale %g; the scale is now %g\n", (long long)step, rec.loss_scale,
                rec.loss_scale / 2);
    if (rec.loss_scale / 2 < 1 && !warned_small_scale_) {
      warned_small_scale_ = true;
      std::printf("warning: the fp16 loss scale is below 1: some gradients are past f16's range even unscaled, and "
                  "small ones now round to zero. --amp bf16 has f32's range\n");
    }
    if (rec.halted == kernels::kScaleUnderflow)
      return "fp16 gradients overflow at every loss scale down to " + fmt("%g", rec.loss_scale) +
             "; train with --amp bf16 (f32's range) or --amp off";
    return "";
  }

  // The schedule's learning rate at step `step` (as the device's step check computes it).
  double lr_at(int64_t step) const { return scheduled_lr(schedule_, step); }

  // Runs f with the EMA's weights in the model when the EMA is on, the model's own put
  // back afterwards (also when f throws). A swap is three passes over every weight: an
  // epoch's end and the test pass swap once for all they do with the model.
  template <class F>
  decltype(auto) with_ema_weights(F f) {
    if (!ema_) return f();
    struct SwapBack {
      Ema& ema;
      EmoNeXt& model;
      ~SwapBack() { ema.swap(model); }
    };
    ema_->swap(*model_);
    const SwapBack back{*ema_, *model_};
    return f();
  }

  // The close of an epoch: validation (with the EMA's weights when on), its line in the
  // log and row in metrics.csv, the best checkpoints when it is the best epoch so far,
  // early stopping's count. Returns true when the patience has run out.
  bool end_epoch(const Dataset& val, const EpochTally& t, double data_wait) {
    // The EMA's weights go in once for the validation, the best weights and the report;
    // the best pair is written after they are out (its training state holds the EMA).
    std::optional<SafeTensors> best_weights;
    const bool best = with_ema_weights([&] { return close_epoch(val, t, data_wait, best_weights); });
    if (best_weights) save_pair(best_, *best_weights, c_.out + "/best.state.safetensors", state_of());
    if (best || ++st_.bad_epochs < c_.patience) return false;
    std::printf("early stop: no better validation accuracy for %lld epochs\n", (long long)c_.patience);
    return true;
  }

  // end_epoch's part with the EMA's weights in: returns whether the epoch is the best so
  // far, and then takes its weights into best_weights when the run writes files.
  bool close_epoch(const Dataset& val, const EpochTally& t, double data_wait, std::optional<SafeTensors>& best_weights) {
    const Evaluation ev = evaluate_model(val, {false, c_.val_random_crop, c_.seed, st_.epoch});
    const double ips = t.images_per_second();
    std::printf("epoch %lld step %lld: train loss %.4f acc %.4f | val loss %.4f acc %.4f%s | %.1f img/s, data wait %.1f s\n",
                (long long)st_.epoch, (long long)st_.step, t.loss(), t.accuracy(), ev.loss, ev.accuracy, ema_ ? " (EMA)" : "",
                ips, data_wait);
    std::fflush(stdout);
    if (logs_) logs_->epoch(st_.epoch, st_.step, t.loss(), t.accuracy(), ev.loss, ev.accuracy, lr_at(st_.step), ips, data_wait);
    const bool best = ev.accuracy > st_.best_accuracy;
    if (best) {
      st_.best_accuracy = ev.accuracy;
      st_.bad_epochs = 0;
      best_eval_ = ev;
      best_eval_title_ = "validation at epoch " + std::to_string(st_.epoch) + ", the best so far" + (ema_ ? " (EMA)" : "");
      if (writes_files())  // the weights (the EMA's when on), saved with the training state at that epoch
        best_weights = checkpoint_of(*model_, fer2013_labels(),
                                     {{"epoch", std::to_string(st_.epoch)}, {"step", std::to_string(st_.step)},
                                      {"val_accuracy", fmt("%.6f", ev.accuracy)}, {"ema", ema_ ? "1" : "0"}});
    } else if (!best_eval_) {  // resumed: no best epoch of this process yet
      best_eval_ = ev;
      best_eval_title_ = "validation at epoch " + std::to_string(st_.epoch) + (ema_ ? " (EMA)" : "");
    }
    write_report(&*best_eval_, best_eval_title_);
    return best;
  }

  // report.html from the model as it is: callers put the EMA's weights in when the EMA is
  // on (as validation sees the model).
  void write_report(const Evaluation* confusion, const std::string& title) {
    if (!report_) return;
    const auto t0 = Clock::now();
    report_->write(*model_, dev_, confusion, title);
    report_seconds_ += seconds_since(t0);
  }

  // evaluate() on the model as it is (callers put the EMA's weights in); unreadable
  // images reported.
  Evaluation evaluate_model(const Dataset& data, const EvalView& view) {
    const Evaluation ev = evaluate(*model_, data, c_.batch, dev_, view, /*sharded=*/true);
    report_unreadable(ev.unreadable);
    return ev;
  }

  // The ten-crop test pass after training: accuracy, loss and the confusion matrix,
  // printed and written to confusion.csv.
  void test(const Dataset& data) {
    with_ema_weights([&] { test_with_the_weights_in(data); });  // one swap for the pass and the report
  }
  void test_with_the_weights_in(const Dataset& data) {
    const Evaluation ev = evaluate_model(data, {.tencrop = true});
    std::printf("test (ten-crop%s): accuracy %.4f, loss %.4f\n", ema_ ? ", EMA" : "", ev.accuracy, ev.loss);
    print_confusion(ev, fer2013_labels());
    if (writes_files()) write_confusion_csv(c_.out + "/confusion.csv", ev, fer2013_labels());
    std::printf("wrote %s/confusion.csv\n", c_.out.c_str());
    write_report(&ev, std::string("the ten-crop test") + (ema_ ? " (EMA)" : ""));
  }

  void report_benchmark(const BenchmarkTally& b) const {
    // Called after the last step's figures were read: the device has finished it.
    const int64_t steady_steps = std::max<int64_t>(1, st_.step - BenchmarkTally::kSkip);
    const double seconds = st_.step > BenchmarkTally::kSkip ? seconds_since(b.start) : 0.0;
    const double ips = st_.step > BenchmarkTally::kSkip ? double(steady_steps * c_.batch) / std::max(1e-9, seconds) : 0.0;
    const std::string launches =
        dev_.is_cuda() ? fmt(", %.0f GPU launches per step (kernels and cuBLAS/cuDNN calls)",
                             double(gpu_launches() - b.launches_at_start) / double(steady_steps)) +
                             ", " + std::to_string(gpu_host_waits() - b.waits_at_start) + " host waits for the GPU in " +
                             std::to_string(steady_steps) + " steps (" + std::to_string(checks_.reads() - b.reads_at_start) +
                             " reads of the steps' figures), " +
                             (graph_ ? std::to_string(graph_->replays()) + " of the " + std::to_string(st_.step) +
                                           " steps replayed from a CUDA graph" +
                                           (graph_->failure().empty() ? "" : " (its capture failed: the steps ran eagerly)")
                                     : std::string("the step not a CUDA graph"))
                       : "";
    const std::string ranks =
        dist::size() > 1 ? " on each of " + std::to_string(dist::size()) + " ranks" +
                               fmt(" (the gradients' all-reduce %.1f ms/step,", 1000.0 * (buckets_.seconds() - b.reduce_at_start) /
                                                                                  double(steady_steps)) +
                               fmt(" %.1f MB in ", double(buckets_.elements()) * 4e-6) + std::to_string(buckets_.buckets()) +
                               " buckets, " + std::to_string(buckets_.sums_in_backward()) + " of " + std::to_string(buckets_.sums()) +
                               " sums during the backward pass)"
                         : "";
    // On a GPU, beside the tensors' peak: what the device reserved for them at most (the
    // pool's peak and the graph's, PyTorch's max_memory_reserved's counterpart) and now.
    const MemoryStats m = memory_stats(dev_);
    const auto mb = [](size_t bytes) { return fmt("%.1f MB", double(bytes) / 1e6); };
    const std::string reserved =
        dev_.is_cuda() ? ", device memory reserved at most " + mb(m.pool_reserved_peak + m.graph_reserved_peak) + " (the pool " +
                             mb(m.pool_reserved_peak) + " + CUDA graphs " + mb(m.graph_reserved_peak) + "; now " +
                             mb(m.pool_reserved + m.graph_reserved) + ")"
                       : "";
    std::printf("benchmark: %lld steps of batch %lld at %lld x %lld on %s: %.1f images/s, %.1f ms/step (steady state, after %lld "
                "steps), data wait %.3f s in all, peak tensor memory on %s %.1f MB%s, peak process memory %lld MB%s%s\n",
                (long long)st_.step, (long long)c_.batch, (long long)c_.image_size, (long long)c_.image_size, dev_.str().c_str(), ips,
                1000.0 * seconds / double(steady_steps), (long long)BenchmarkTally::kSkip, b.wait_seconds,
                dev_.str().c_str(), double(m.peak) / 1e6, reserved.c_str(), (long long)peak_rss_mb(), ranks.c_str(), launches.c_str());
  }

  // A non-finite loss or gradient: said, naming the step and the last good checkpoint.
  int stop_non_finite(const std::string& what, int64_t step) {
    progress_.end_line();
    std::fprintf(stderr, "emonext_train: %s at step %lld; stopping. The last good checkpoint is %s\n", what.c_str(),
                 (long long)step, fs::exists(last_) ? last_.c_str() : "(none yet)");
    return 1;
  }

  // Images that cannot be decoded: named once each (training meets them every epoch,
  // evaluation too) and counted at the end.
  void report_unreadable(const std::vector<std::string>& whys) {
    for (const std::string& why : whys)
      if (unreadable_.insert(why).second) std::fprintf(stderr, "skipped unreadable image %s\n", why.c_str());
  }

  SafeTensors state_of() {
    st_.drop_path_counter = dp_gen_.counter();
    return run_state_of(c_, opt_, ema_.get(), st_, amp_.scaler);
  }
  void save_last() {
    if (!writes_files()) return;
    save_pair(last_, checkpoint_of(*model_, fer2013_labels(), {{"step", std::to_string(st_.step)}}), last_state_, state_of());
  }

  const TrainConfig& c_;
  const Device dev_;
  std::unique_ptr<EmoNeXt> model_;      // f32: the master weights
  MixedPrecision amp_;                  // --amp: the 16-bit copy that runs the backbone, and fp16's loss scale
  AdamW opt_;
  StepChecks checks_;                   // the step's checks on the device, and the figures not read yet
  InputStaging input_;                  // the batches' way up to a GPU
  std::vector<QueuedStep> queued_;      // the steps those figures belong to
  GradientBuckets buckets_;             // the gradients' sum over the ranks (mpirun)
  std::unique_ptr<Ema> ema_;            // nullptr with --no-ema
  LrSchedule schedule_;        // its total steps set when the run knows them
  Generator& dp_gen_;
  std::unique_ptr<StepGraph> graph_;    // --cuda-graph on, on one GPU
  bool warned_small_scale_ = false;
  RunState st_;
  Progress progress_;
  const std::string last_, last_state_, best_;
  std::unique_ptr<RunLogs> logs_;       // made by open_outputs (not in --overfit-batch)
  std::unique_ptr<RunReport> report_;   // made by train() (not in --overfit-batch or --benchmark)
  std::optional<Evaluation> best_eval_;  // the best epoch's validation, for the report's confusion matrix
  std::string best_eval_title_;
  double report_seconds_ = 0;           // spent writing report.html
  std::unordered_set<std::string> unreadable_;
};

}  // namespace

std::optional<TrainConfig> saved_config(const std::string& run_dir) {
  const std::string path = run_dir + "/last.state.safetensors";
  return config_from_metadata(load_safetensors_metadata(path), path);
}

int run_training(const TrainConfig& c) {
  try {
    const bool overfit = !c.overfit_batch.empty();
    EMONEXT_CHECK(invalid_setting(c).empty(), invalid_setting(c));  // emonext_train refuses these first, as usage errors
    EMONEXT_CHECK(c.ranks == dist::size(), "the run's ranks (", c.ranks, ") are not MPI's (", dist::size(), ")");
    if (!overfit && dist::rank() == 0) check_out_folder(c);
    // The model a checkpoint holds, from its metadata, before a model is built for it.
    if (!c.init.empty()) check_checkpoint_fits(c.init, c);
    if (!c.resume.empty()) check_checkpoint_fits(c.resume + "/last.safetensors", c);
    const Device dev = pick_device(c.device);
    // A rank's loader threads share its machine with the other ranks there.
    const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
    const int workers = c.workers > 0 ? int(c.workers) : std::max(1, cores / std::max(1, dist::local_size()));
    std::printf("emonext_train: %s-%s, %lld x %lld images, batch %lld, device %s, %d loader thread(s)%s\n",
                c.backbone ? "ConvNeXt (EmoNeXt's backbone alone)" : "EmoNeXt", c.model.c_str(), (long long)c.image_size,
                (long long)c.image_size, (long long)c.batch, dev.str().c_str(), workers,
                c.ranks > 1 ? (" per rank; " + std::to_string(c.ranks) + " ranks of " + std::to_string(c.batch / c.ranks) +
                               " images each" +
                               (c.sync_batch ? ", BatchNorm and attention over the global batch (--sync-batch)" : ""))
                                  .c_str()
                            : "");
    if (c.device == DeviceChoice::Auto && dev.is_cpu())  // say why: a GPU whose driver fails would otherwise look like none
      std::printf("note: on the CPU because no CUDA device answers (%s)%s\n", cuda_unavailable_reason().c_str(),
                  c.image_size > 64 ? "; at this image size a step takes seconds here: README has a CPU-sized run (--model atto "
                                      "--img-size 48)"
                                    : "");
    if (overfit) return Run(c, dev).overfit_batch();  // one fixed batch: no datasets
    const Splits data = read_splits(c);
    return Run(c, dev).train(data, workers);
  } catch (const std::exception& e) {  // emonext::Error, and the standard library's (a filesystem error): said, not an abort
    // Under mpirun the other ranks would wait at their next collective: every rank stops now.
    if (dist::size() > 1) dist::abort_all(std::string("emonext_train: ") + e.what());
    std::fprintf(stderr, "emonext_train: %s\n", e.what());
    return 1;
  }
}

}  // namespace emonext
